-- Lending: borrowers, facilities, pledged lots and their sensors, prices, releases, receivables,
-- sales, repayments, limit snapshots and alerts.
-- depends: 0002_timescale

CREATE TABLE borrowers (
    borrower_id text PRIMARY KEY,
    tenant      text NOT NULL,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('core', 'supplier', 'distributor', 'independent')),
    core_id     text REFERENCES borrowers (borrower_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE commodities (
    name             text PRIMARY KEY,
    unit             text NOT NULL,
    unit_kg          double precision NOT NULL CHECK (unit_kg > 0),
    liquidation_days double precision NOT NULL CHECK (liquidation_days >= 0),
    temp_min         double precision,
    temp_max         double precision,
    humidity_min     double precision,
    humidity_max     double precision
);

-- Product terms live on the facility as JSON (every ratio a parameter, validated by the domain).
CREATE TABLE facilities (
    facility_id text PRIMARY KEY,
    borrower_id text NOT NULL REFERENCES borrowers (borrower_id),
    currency    text NOT NULL,
    line        numeric(20, 2) NOT NULL CHECK (line >= 0),
    outstanding numeric(20, 2) NOT NULL CHECK (outstanding >= 0),
    reserves    numeric(20, 2) NOT NULL DEFAULT 0 CHECK (reserves >= 0),
    value_floor numeric(20, 2) NOT NULL DEFAULT 0 CHECK (value_floor >= 0),
    terms       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX facilities_borrower ON facilities (borrower_id);

-- One lot, one facility: the registration number and every bound sensor are unique across all
-- facilities, so a duplicate pledge is refused by the database even if a check is bypassed.
CREATE TABLE lots (
    lot_id            text PRIMARY KEY,
    facility_id       text NOT NULL REFERENCES facilities (facility_id),
    commodity         text NOT NULL REFERENCES commodities (name),
    declared_quantity double precision NOT NULL CHECK (declared_quantity >= 0),
    unit_weight_kg    double precision NOT NULL CHECK (unit_weight_kg > 0),
    registration_no   text NOT NULL UNIQUE,
    site              text,
    vehicle           text,
    geofence          jsonb,
    business_hours    int4range NOT NULL DEFAULT int4range(7, 19)
);
CREATE INDEX lots_facility ON lots (facility_id);

CREATE TABLE lot_sensors (
    device_id text PRIMARY KEY,
    lot_id    text NOT NULL REFERENCES lots (lot_id) ON DELETE CASCADE
);
CREATE INDEX lot_sensors_lot ON lot_sensors (lot_id);

CREATE TABLE prices (
    commodity text NOT NULL REFERENCES commodities (name),
    time      timestamptz NOT NULL,
    price     double precision NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    currency  text NOT NULL,
    PRIMARY KEY (commodity, time)
);

CREATE TABLE release_orders (
    release_id   text PRIMARY KEY,
    lot_id       text NOT NULL REFERENCES lots (lot_id),
    quantity     double precision NOT NULL CHECK (quantity > 0),
    status       text NOT NULL CHECK (status IN ('requested', 'approved', 'executed', 'rejected')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    approved_at  timestamptz,
    executed_at  timestamptz
);
CREATE INDEX release_orders_lot ON release_orders (lot_id, executed_at);

CREATE TABLE receivables (
    receivable_id text PRIMARY KEY,
    facility_id   text NOT NULL REFERENCES facilities (facility_id),
    debtor        text NOT NULL,
    amount        numeric(20, 2) NOT NULL CHECK (amount >= 0),
    due           timestamptz NOT NULL,
    related_party boolean NOT NULL DEFAULT false,
    disputed      boolean NOT NULL DEFAULT false,
    paid          boolean NOT NULL DEFAULT false
);
CREATE INDEX receivables_facility ON receivables (facility_id);

CREATE TABLE sales (
    id          bigserial PRIMARY KEY,
    facility_id text NOT NULL REFERENCES facilities (facility_id),
    time        timestamptz NOT NULL,
    amount      numeric(20, 2) NOT NULL CHECK (amount >= 0)
);
CREATE INDEX sales_facility_time ON sales (facility_id, time);

CREATE TABLE repayments (
    id          bigserial PRIMARY KEY,
    facility_id text NOT NULL REFERENCES facilities (facility_id),
    time        timestamptz NOT NULL DEFAULT now(),
    amount      numeric(20, 2) NOT NULL CHECK (amount > 0)
);

CREATE TABLE limit_snapshots (
    id               bigserial PRIMARY KEY,
    facility_id      text NOT NULL REFERENCES facilities (facility_id),
    time             timestamptz NOT NULL,
    credit_limit     numeric(20, 2) NOT NULL,
    available        numeric(20, 2) NOT NULL,
    outstanding      numeric(20, 2) NOT NULL,
    collateral_value numeric(20, 2) NOT NULL,
    ltv              double precision,  -- NULL: debt and no collateral (infinite)
    reasons          jsonb NOT NULL DEFAULT '[]',
    inputs           jsonb NOT NULL
);
CREATE INDEX limit_snapshots_facility_time ON limit_snapshots (facility_id, time DESC, id DESC);

CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    key             text NOT NULL,
    type            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    facility_id     text NOT NULL REFERENCES facilities (facility_id),
    lot_id          text,
    status          text NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    message         text NOT NULL,
    evidence        jsonb NOT NULL,
    auto_resolve    boolean NOT NULL,
    cleared         boolean NOT NULL DEFAULT false,
    cure_deadline   timestamptz,
    raised_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz,
    resolved_by     text,
    comment         text
);
-- At most one open (or acknowledged) alert per type and lot or facility.
CREATE UNIQUE INDEX alerts_one_active ON alerts (key) WHERE status <> 'resolved';
CREATE INDEX alerts_key_latest ON alerts (key, id DESC);
CREATE INDEX alerts_facility ON alerts (facility_id, raised_at DESC);
