-- Ingestion backbone: devices, readings, dead letters, device status.
-- depends:

CREATE TABLE devices (
    device_id        text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    tenant           text NOT NULL CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind             text NOT NULL,
    credentials_hash text,
    bound_to         text,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_tenant ON devices (tenant);

-- One row per (device, metric) reading. The unique key is the dedupe key the device puts in its
-- payload (boot counter + sequence number) and includes the time column, as a hypertable needs.
-- Its column order also serves "latest value per device and metric". Ids compare bytewise
-- (COLLATE "C"): a locale-aware key made index maintenance the store's largest cost.
CREATE TABLE readings (
    time        timestamptz      NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    value       double precision NOT NULL,
    boot        integer          NOT NULL,
    seq         bigint           NOT NULL,
    received_at timestamptz      NOT NULL,
    CONSTRAINT readings_dedupe UNIQUE (device_id, metric, time, boot, seq)
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    device_id   text
);
CREATE INDEX dead_letters_reason_time ON dead_letters (reason, received_at DESC);
CREATE INDEX dead_letters_device_time ON dead_letters (device_id, received_at DESC);

CREATE TABLE device_status (
    device_id  text PRIMARY KEY,
    tenant     text        NOT NULL,
    online     boolean     NOT NULL,
    last_seen  timestamptz,
    changed_at timestamptz NOT NULL,
    last_boot  integer,
    last_seq   bigint
);
