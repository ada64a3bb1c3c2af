-- Nothing vanishes, nothing is stored twice, stale status does not win.
--
-- Dead letters: one row per distinct bad message. `dedupe_key` = SHA-256 of reason, NUL, topic,
-- NUL, full payload bytes. A broker redelivery after a gateway crash (same bytes; MQTT gives no
-- message identity that survives it) or a device resending the same bytes adds to `occurrences`
-- and moves `last_received_at`; `received_at` stays the first arrival. Only the first 4096 bytes of
-- a payload are kept (`payload`), with its full size (`payload_size`) and SHA-256
-- (`payload_sha256`). The writer computes all of these; the trigger fills them for rows inserted
-- by hand (and cuts their payload the same way).
--
-- Device status: `status_at` is when the device's current status held (a live message's arrival,
-- or a retained one's own `ts`); a status older than the device's newest stored reading, refused
-- message or status is not applied (telemetry/writer.py).
-- depends: 0001_ingestion 0009_arrival_cursor

ALTER TABLE dead_letters
    ADD COLUMN dedupe_key       bytea,
    ADD COLUMN payload_size     integer,
    ADD COLUMN payload_sha256   bytea,
    ADD COLUMN occurrences      integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    ADD COLUMN last_received_at timestamptz;

UPDATE dead_letters
   SET dedupe_key = sha256(convert_to(reason, 'UTF8') || '\x00'::bytea || convert_to(topic, 'UTF8')
                           || '\x00'::bytea || payload),
       payload_size = length(payload),
       payload_sha256 = sha256(payload),
       last_received_at = received_at;

-- Rows stored again by earlier redeliveries become one row each, counted.
WITH groups AS (
    SELECT dedupe_key, min(id) AS keep, count(*) AS n, max(received_at) AS last
      FROM dead_letters GROUP BY dedupe_key HAVING count(*) > 1)
UPDATE dead_letters d SET occurrences = g.n, last_received_at = g.last
  FROM groups g WHERE d.id = g.keep;
DELETE FROM dead_letters d USING dead_letters k
 WHERE d.dedupe_key = k.dedupe_key AND d.id > k.id;

UPDATE dead_letters SET payload = substring(payload FROM 1 FOR 4096) WHERE length(payload) > 4096;

CREATE FUNCTION pw_dead_letter_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.payload_size := coalesce(NEW.payload_size, length(NEW.payload));
    NEW.payload_sha256 := coalesce(NEW.payload_sha256, sha256(NEW.payload));
    NEW.dedupe_key := coalesce(NEW.dedupe_key,
        sha256(convert_to(NEW.reason, 'UTF8') || '\x00'::bytea || convert_to(NEW.topic, 'UTF8')
               || '\x00'::bytea || NEW.payload));
    NEW.last_received_at := coalesce(NEW.last_received_at, NEW.received_at);
    IF length(NEW.payload) > 4096 THEN
        NEW.payload := substring(NEW.payload FROM 1 FOR 4096);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER dead_letter_defaults BEFORE INSERT ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION pw_dead_letter_defaults();

ALTER TABLE dead_letters
    ALTER COLUMN dedupe_key SET NOT NULL,
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ALTER COLUMN last_received_at SET NOT NULL;
CREATE UNIQUE INDEX dead_letters_dedupe ON dead_letters (dedupe_key);

ALTER TABLE device_status ADD COLUMN status_at timestamptz;
