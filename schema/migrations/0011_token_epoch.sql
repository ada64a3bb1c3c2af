-- Sessions that end when they should, and log-ins that cannot be guessed at speed.
-- `users.token_epoch` is written into every officer's token (the `ver` claim) and checked on every
-- request: a trigger raises it whenever the password, the disabled flag or the role changes, so
-- a password change, a disable (and a later enable) or a demotion turns every token issued before
-- it away with 401, whichever path made the change (API, CLI, SQL).
-- `login_throttle` counts failed log-ins per account and per client address (the API's
-- exponential lockout, api/login_throttle.py): a table rather than memory, so the lockout holds
-- across restarts and across several API processes.
-- depends: 0004_api 0010_facility_risk

ALTER TABLE users ADD COLUMN token_epoch integer NOT NULL DEFAULT 0;

CREATE FUNCTION users_bump_token_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash
            OR NEW.disabled IS DISTINCT FROM OLD.disabled
            OR NEW.role IS DISTINCT FROM OLD.role THEN
        NEW.token_epoch := OLD.token_epoch + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_token_epoch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_bump_token_epoch();

CREATE TABLE login_throttle (
    scope           text NOT NULL CHECK (scope IN ('account', 'address')),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    failures        integer NOT NULL CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure_at);
