-- Credit rating from the platform: the indicators computed daily per borrower (history kept), the
-- ratings made from them (history kept), and a log of every change of grade with who, what and why.
-- depends: 0016_reconciliation

CREATE TABLE borrower_features (
    borrower_id text NOT NULL REFERENCES borrowers (borrower_id),
    as_of       date NOT NULL,
    features    jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (borrower_id, as_of)
);
CREATE INDEX borrower_features_as_of ON borrower_features (as_of);

CREATE TABLE borrower_ratings (
    borrower_id text NOT NULL REFERENCES borrowers (borrower_id),
    as_of       date NOT NULL,
    model       text NOT NULL,
    version     integer NOT NULL,
    score       double precision NOT NULL CHECK (score > '-Infinity' AND score < 'Infinity'),
    pd          double precision NOT NULL CHECK (pd >= 0 AND pd <= 1),
    grade       text NOT NULL CHECK (grade IN ('A', 'B', 'C', 'D', 'E', 'F', 'G')),
    reasons     jsonb NOT NULL DEFAULT '[]',
    rated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (borrower_id, as_of)
);
CREATE INDEX borrower_ratings_latest ON borrower_ratings (borrower_id, as_of DESC);

-- One row per change of grade: the previous grade, the new one, the card that decided, the reason
-- codes, and the facility terms it moved (previous and new advance rate and line).
CREATE TABLE rating_changes (
    id             bigserial PRIMARY KEY,
    borrower_id    text NOT NULL REFERENCES borrowers (borrower_id),
    as_of          date NOT NULL,
    previous_grade text,
    grade          text NOT NULL,
    model          text NOT NULL,
    version        integer NOT NULL,
    reasons        jsonb NOT NULL DEFAULT '[]',
    facilities     jsonb NOT NULL DEFAULT '[]',
    changed_by     text NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rating_changes_borrower ON rating_changes (borrower_id, id DESC);
