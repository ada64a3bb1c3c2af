-- A drawdown changes the derived outstanding only when it is approved or its repaid part moves:
-- a pending or rejected one no longer rewrites its facility's row (every queued request did).
-- depends: 0019_rating_drift

CREATE OR REPLACE FUNCTION pw_drawdowns_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND (NEW.source = 'opening' OR NEW.status <> 'approved') THEN
        RETURN NULL;  -- an opening balance is already in the facility's row; the rest owe nothing
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status <> 'approved' AND NEW.status NOT IN ('approved', 'repaid') THEN
        RETURN NULL;  -- pending to rejected: nothing was drawn
    END IF;
    PERFORM pw_derive_outstanding(NEW.facility_id);
    RETURN NULL;
END $$;
