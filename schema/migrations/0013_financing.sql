-- Supply-chain finance: drawdowns against the live limit, a managed blacklist, programme lines for
-- a core enterprise's chain, confirmed payables as transferable vouchers, settlement at maturity,
-- and receivables whose trade is proven by sensors.
--
-- `facilities.outstanding` is derived: Σ (amount − repaid) of the facility's approved drawdowns,
-- kept by the triggers below in the transaction that changes a drawdown. An UPDATE that sets it by
-- hand is refused. A facility inserted with an outstanding (a portfolio file's opening balance, a
-- bulk COPY) gets an `opening` drawdown of that amount, so the derivation holds from the start.
-- depends: 0012_dead_letter_dedupe

CREATE TABLE drawdowns (
    drawdown_id     text PRIMARY KEY,
    facility_id     text NOT NULL REFERENCES facilities (facility_id),
    amount          numeric(20, 2) NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    tenor_days      integer NOT NULL CHECK (tenor_days BETWEEN 1 AND 3660),
    purpose         text NOT NULL,
    source          text NOT NULL DEFAULT 'request' CHECK (source IN ('request', 'opening')),
    status          text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'repaid')),
    reasons         jsonb NOT NULL DEFAULT '[]',
    repaid          numeric(20, 2) NOT NULL DEFAULT 0 CHECK (repaid >= 0 AND repaid <= amount),
    requested_by    text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    decided_by      text,
    decided_at      timestamptz,
    comment         text,
    maturity        timestamptz,
    idempotency_key text,
    request_hash    text,
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);
CREATE INDEX drawdowns_facility ON drawdowns (facility_id, requested_at DESC);
CREATE INDEX drawdowns_open_maturity ON drawdowns (maturity) WHERE status = 'approved';
CREATE INDEX drawdowns_pending ON drawdowns (requested_at) WHERE status = 'pending';
-- A retried request (same caller, same key) finds the drawdown its first attempt made.
CREATE UNIQUE INDEX drawdowns_idempotency ON drawdowns (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE repayments
    ADD COLUMN allocation jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN unapplied  numeric(20, 2) NOT NULL DEFAULT 0 CHECK (unapplied >= 0),
    ADD COLUMN posted_by  text;

CREATE FUNCTION pw_derive_outstanding(fid text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pledgewatch.deriving', 'on', true);
    UPDATE facilities SET outstanding = coalesce((
        SELECT sum(amount - repaid) FROM drawdowns WHERE facility_id = fid AND status = 'approved'
    ), 0) WHERE facility_id = fid;
    PERFORM set_config('pledgewatch.deriving', 'off', true);
END $$;

CREATE FUNCTION pw_drawdowns_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.source = 'opening' THEN
        RETURN NULL;  -- written by the facility's own insert, which already holds this amount
    END IF;
    PERFORM pw_derive_outstanding(NEW.facility_id);
    RETURN NULL;
END $$;
CREATE TRIGGER drawdowns_derive AFTER INSERT OR UPDATE OF status, amount, repaid ON drawdowns
    FOR EACH ROW EXECUTE FUNCTION pw_drawdowns_changed();

CREATE FUNCTION pw_outstanding_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.outstanding IS DISTINCT FROM OLD.outstanding
       AND coalesce(current_setting('pledgewatch.deriving', true), 'off') <> 'on' THEN
        RAISE EXCEPTION 'facilities.outstanding is derived from drawdowns and repayments; post a drawdown or a repayment instead'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER facilities_outstanding_guard BEFORE UPDATE OF outstanding ON facilities
    FOR EACH ROW EXECUTE FUNCTION pw_outstanding_guard();

CREATE FUNCTION pw_facility_opening() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency, tenor_days, purpose,
                           source, status, decided_by, decided_at, requested_at, maturity)
    SELECT 'open-' || facility_id, facility_id, outstanding, currency, 3660, 'opening balance',
           'opening', 'approved', 'portfolio', now(), now(), now() + interval '3660 days'
    FROM new_facilities WHERE outstanding > 0;
    RETURN NULL;
END $$;
-- One statement per insert (a bulk COPY of 100,000 facilities adds one INSERT … SELECT).
CREATE TRIGGER facilities_opening AFTER INSERT ON facilities
    REFERENCING NEW TABLE AS new_facilities
    FOR EACH STATEMENT EXECUTE FUNCTION pw_facility_opening();

-- Facilities that existed before drawdowns: their outstanding becomes an opening drawdown.
INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency, tenor_days, purpose, source,
                       status, decided_by, decided_at, maturity)
SELECT 'open-' || facility_id, facility_id, outstanding, currency, 3660, 'opening balance',
       'opening', 'approved', 'migration', now(), now() + interval '3660 days'
FROM facilities WHERE outstanding > 0;

-- Who may not borrow, who put them there and why. Removing an entry keeps it (removed_*).
CREATE TABLE blacklist (
    id          bigserial PRIMARY KEY,
    borrower_id text NOT NULL REFERENCES borrowers (borrower_id),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    removed_by  text,
    removed_at  timestamptz,
    CHECK ((removed_by IS NULL) = (removed_at IS NULL))
);
CREATE UNIQUE INDEX blacklist_active ON blacklist (borrower_id) WHERE removed_at IS NULL;

-- A programme line the bank sets for a core enterprise's chain. Its alerts (a late payment) sit
-- on a facility of the core enterprise made for the programme (no lots, nothing drawn).
CREATE TABLE programmes (
    programme_id text PRIMARY KEY,
    core_id      text NOT NULL REFERENCES borrowers (borrower_id),
    facility_id  text NOT NULL UNIQUE REFERENCES facilities (facility_id),
    currency     text NOT NULL,
    line         numeric(20, 2) NOT NULL CHECK (line > 0),
    advance_rate double precision NOT NULL CHECK (advance_rate > 0 AND advance_rate <= 1),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX programmes_core ON programmes (core_id);

-- A receivable may be owed by a chain member (debtor_id) who confirms it, and may name the
-- shipment behind it; the trade is then proven (or contradicted) by telemetry.
ALTER TABLE receivables
    ADD COLUMN debtor_id      text REFERENCES borrowers (borrower_id),
    ADD COLUMN programme_id   text REFERENCES programmes (programme_id),
    ADD COLUMN confirmed_at   timestamptz,
    ADD COLUMN confirmed_by   text,
    ADD COLUMN shipment       jsonb,
    ADD COLUMN trade_status   text NOT NULL DEFAULT 'none'
        CHECK (trade_status IN ('none', 'pending', 'verified', 'contradicted')),
    ADD COLUMN trade_evidence jsonb,
    ADD COLUMN trade_checked_at timestamptz;
CREATE INDEX receivables_debtor ON receivables (debtor_id) WHERE debtor_id IS NOT NULL;
CREATE INDEX receivables_trade_pending ON receivables (trade_status) WHERE trade_status = 'pending';

-- Vouchers: a confirmed payable is a claim on the core enterprise (the root); a holder splits and
-- transfers parts down its chain. Only an `active` voucher can be spent (transferred, financed or
-- settled) and spending one is a single conditional UPDATE, so it is spent once. Children sum to
-- their parent.
CREATE TABLE vouchers (
    voucher_id     text PRIMARY KEY,
    programme_id   text NOT NULL REFERENCES programmes (programme_id),
    receivable_id  text NOT NULL REFERENCES receivables (receivable_id),
    parent_id      text REFERENCES vouchers (voucher_id),
    root_id        text NOT NULL,
    holder_id      text NOT NULL REFERENCES borrowers (borrower_id),
    amount         numeric(20, 2) NOT NULL CHECK (amount > 0),
    maturity       timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('active', 'spent', 'financed', 'settled')),
    financed_amount numeric(20, 2) CHECK (financed_amount > 0 AND financed_amount <= amount),
    financed_at    timestamptz,
    financed_by    text,
    settled_at     timestamptz,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((financed_amount IS NULL) = (financed_at IS NULL))
);
CREATE UNIQUE INDEX vouchers_one_root ON vouchers (receivable_id) WHERE parent_id IS NULL;
CREATE INDEX vouchers_root ON vouchers (root_id);
CREATE INDEX vouchers_parent ON vouchers (parent_id);
CREATE INDEX vouchers_holder ON vouchers (holder_id);
CREATE INDEX vouchers_programme_maturity ON vouchers (programme_id, maturity) WHERE parent_id IS NULL;

-- At maturity the core enterprise pays a root voucher; each payout is who got what.
CREATE TABLE voucher_payments (
    root_id  text PRIMARY KEY REFERENCES vouchers (voucher_id),
    amount   numeric(20, 2) NOT NULL CHECK (amount > 0),
    paid_at  timestamptz NOT NULL,
    paid_by  text NOT NULL,
    payouts  jsonb NOT NULL
);
