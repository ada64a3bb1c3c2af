-- Alert notifications out, as a transactional outbox: a trigger on `alerts` records every change
-- bank systems care about in `alert_events` (in the transaction that made it, so nothing is lost
-- while the notifier is down) and fans it out to one `webhook_deliveries` row per matching active
-- webhook. Notifiers claim due deliveries and unpublished events with FOR UPDATE SKIP LOCKED.
-- depends: 0004_api

CREATE TABLE webhooks (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL CHECK (url ~* '^https?://' AND length(url) <= 2000),
    -- Kept in clear: the notifier needs it to sign each delivery (HMAC-SHA256).
    secret      text NOT NULL CHECK (length(secret) BETWEEN 32 AND 256),
    borrower_id text REFERENCES borrowers (borrower_id),  -- NULL: the whole portfolio
    description text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz
);
CREATE INDEX webhooks_active_borrower ON webhooks (borrower_id) WHERE active;

-- kind: raised, escalated (severity, message or evidence grew), acknowledged, resolved, reopened;
-- `ping` rows (no alert) are test deliveries asked for through the API and are never published.
CREATE TABLE alert_events (
    id                bigserial PRIMARY KEY,
    alert_id          bigint REFERENCES alerts (id) ON DELETE CASCADE,
    facility_id       text,
    borrower_id       text,
    kind              text NOT NULL CHECK (kind IN ('raised', 'escalated', 'acknowledged',
                                                    'resolved', 'reopened', 'ping')),
    status            text,
    severity          text,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    mqtt_published_at timestamptz,
    CHECK ((kind = 'ping') = (alert_id IS NULL))
);
CREATE INDEX alert_events_unpublished ON alert_events (id)
    WHERE mqtt_published_at IS NULL AND kind <> 'ping';
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);

-- The delivery log: one row per webhook × event, with its latest outcome ...
CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When pending: the next attempt is due (a claimed delivery's lease runs until then).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id DESC);

-- ... and every attempt.
CREATE TABLE webhook_attempts (
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    started_at   timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    status_code  integer,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE FUNCTION pw_alert_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_kind     text;
    v_borrower text;
    v_event    bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_kind := 'raised';
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        v_kind := CASE NEW.status WHEN 'open' THEN 'reopened' ELSE NEW.status END;
    ELSE
        v_kind := 'escalated';
    END IF;
    SELECT borrower_id INTO v_borrower FROM facilities WHERE facility_id = NEW.facility_id;
    INSERT INTO alert_events (alert_id, facility_id, borrower_id, kind, status, severity, payload)
    VALUES (NEW.id, NEW.facility_id, v_borrower, v_kind, NEW.status, NEW.severity,
            jsonb_build_object(
                'alert', jsonb_build_object(
                    'id', NEW.id, 'key', NEW.key, 'type', NEW.type, 'severity', NEW.severity,
                    'status', NEW.status, 'facility_id', NEW.facility_id,
                    'borrower_id', v_borrower, 'lot_id', NEW.lot_id, 'message', NEW.message,
                    'evidence', NEW.evidence, 'raised_at', NEW.raised_at,
                    'cure_deadline', NEW.cure_deadline, 'acknowledged_at', NEW.acknowledged_at,
                    'acknowledged_by', NEW.acknowledged_by, 'resolved_at', NEW.resolved_at,
                    'resolved_by', NEW.resolved_by, 'comment', NEW.comment),
                'previous', CASE WHEN TG_OP = 'UPDATE' THEN jsonb_build_object(
                    'status', OLD.status, 'severity', OLD.severity) END))
    RETURNING id INTO v_event;
    INSERT INTO webhook_deliveries (webhook_id, event_id)
    SELECT id, v_event FROM webhooks
    WHERE active AND (borrower_id IS NULL OR borrower_id = v_borrower);
    PERFORM pg_notify('pw_notify', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER alerts_event_insert AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION pw_alert_event();
CREATE TRIGGER alerts_event_update AFTER UPDATE OF status, severity, evidence ON alerts
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.severity IS DISTINCT FROM NEW.severity
          OR OLD.evidence IS DISTINCT FROM NEW.evidence)
    EXECUTE FUNCTION pw_alert_event();
