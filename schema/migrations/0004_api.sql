-- API access: officer/admin accounts (Argon2 password hashes) and enterprise API keys (SHA-256 of a
-- high-entropy secret, scoped to one borrower, revocable).
-- depends: 0003_lending

CREATE TABLE users (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'officer')),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    key_sha256  bytea NOT NULL UNIQUE CHECK (octet_length(key_sha256) = 32),
    borrower_id text NOT NULL REFERENCES borrowers (borrower_id),
    name        text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_borrower ON api_keys (borrower_id);
CREATE INDEX alerts_status_facility ON alerts (status, facility_id, id DESC);
