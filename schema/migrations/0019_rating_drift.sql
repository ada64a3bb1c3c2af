-- Monitoring of the rating card in use: after each rating run, the population-stability index (PSI)
-- of the score and of each feature of the card, today's rated population against the card's
-- baseline, kept with history; above 0.25 a subject has drifted.
-- depends: 0018_rating

-- The baseline of a card that has none in its registry artefact (the expert card): the population
-- of its first run with enough borrowers, kept once per card and version (bin shares per feature,
-- score decile edges and shares, as rating.metrics.Baseline).
CREATE TABLE rating_baselines (
    model      text NOT NULL,
    version    integer NOT NULL,
    as_of      date NOT NULL,
    population integer NOT NULL CHECK (population > 0),
    baseline   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

-- One row per run, card and subject ('score' or a feature name); a run again the same day replaces.
CREATE TABLE rating_drift (
    as_of       date NOT NULL,
    model       text NOT NULL,
    version     integer NOT NULL,
    subject     text NOT NULL,
    psi         double precision NOT NULL CHECK (psi >= 0 AND psi < 'Infinity'),
    drifted     boolean NOT NULL,
    population  integer NOT NULL CHECK (population > 0),
    baseline    text NOT NULL CHECK (baseline IN ('artefact', 'first_run')),
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (as_of, model, version, subject)
);
CREATE INDEX rating_drift_latest ON rating_drift (as_of DESC, computed_at DESC);
