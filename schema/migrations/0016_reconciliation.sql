-- T+0 reconciliation: the bank's core-ledger statements (CSV or camt.053) matched against the
-- drawdowns and repayments, the breaks found (each raises an alert on its facility), and the
-- warehouse operator's stock ledger for goods three ways (sensors, operator, pledge).
-- depends: 0014_ledger

CREATE TABLE statement_imports (
    id          bigserial PRIMARY KEY,
    sha256      text NOT NULL UNIQUE,  -- the same file twice is refused
    format      text NOT NULL CHECK (format IN ('csv', 'camt053')),
    source      text NOT NULL,
    lines       integer NOT NULL CHECK (lines > 0),
    period_from date NOT NULL,
    period_to   date NOT NULL,
    imported_by text NOT NULL,
    imported_at timestamptz NOT NULL,
    matched     integer NOT NULL,
    breaks      integer NOT NULL,
    counts      jsonb NOT NULL
);

CREATE TABLE statement_lines (
    import_id   bigint NOT NULL REFERENCES statement_imports (id) ON DELETE CASCADE,
    line        integer NOT NULL,
    facility_id text NOT NULL,
    reference   text NOT NULL,
    amount      numeric(20, 2) NOT NULL,
    currency    text NOT NULL,
    direction   text NOT NULL CHECK (direction IN ('debit', 'credit')),
    value_date  date NOT NULL,
    matched_to  text,  -- the platform reference it matched
    PRIMARY KEY (import_id, line)
);

CREATE TABLE reconciliation_breaks (
    id                 bigserial PRIMARY KEY,
    import_id          bigint NOT NULL REFERENCES statement_imports (id) ON DELETE CASCADE,
    kind               text NOT NULL CHECK (kind IN ('duplicate', 'missing_in_platform',
                           'missing_in_bank', 'amount_mismatch', 'date_mismatch')),
    facility_id        text NOT NULL,
    reference          text NOT NULL,
    detail             text NOT NULL,
    bank_line          integer,
    platform_reference text,
    alert_id           bigint REFERENCES alerts (id)
);
CREATE INDEX reconciliation_breaks_import ON reconciliation_breaks (import_id);

CREATE TABLE stock_ledger (
    id          bigserial PRIMARY KEY,
    lot_id      text NOT NULL REFERENCES lots (lot_id),
    quantity    double precision NOT NULL CHECK (quantity >= 0),
    as_of       timestamptz NOT NULL,
    imported_by text NOT NULL,
    imported_at timestamptz NOT NULL
);
CREATE INDEX stock_ledger_lot ON stock_ledger (lot_id, as_of DESC, id DESC);

-- The match records go into the verifiable ledger (0014): each import with its counts, each break,
-- and the operator's stock lines.
DO $$
BEGIN
    PERFORM pw_ledger_attach('statement_imports', '{r}.id::text', 'ARRAY[]::text[]');
    PERFORM pw_ledger_attach('reconciliation_breaks', '{r}.id::text',
                         'ARRAY(SELECT f.borrower_id FROM facilities f WHERE f.facility_id = {r}.facility_id)');
    PERFORM pw_ledger_attach('stock_ledger', '{r}.id::text',
                         'ARRAY(SELECT f.borrower_id FROM lots l JOIN facilities f USING (facility_id)'
                         ' WHERE l.lot_id = {r}.lot_id)');
END $$;
