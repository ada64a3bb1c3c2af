-- Signed tree heads published as they are signed (issue 12): the sequencer's hook (wired in
-- pledgewatch/runtime.py, notifier/ledger_heads.py) writes each head to the alerts-out outbox as an
-- `alert_events` row of kind `ledger_head` (no alert, no borrower), with one `webhook_deliveries`
-- row per active webhook that asked for heads (`webhooks.ledger_heads`, whatever its borrower:
-- heads are public to every party); the notifier publishes it on MQTT (retained) and POSTs it.
--
-- The ledger captures `alert_events`: its capture is attached again so that `ledger_head` rows (like
-- `ping` rows) are not captured, or each head would append an entry that makes the next head, for
-- ever. And `ledger_keys.algorithm` may now be `sm2` (SM2 over SM3 head signatures; the tree
-- stays RFC 9162 SHA-256).
-- depends: 0016_reconciliation

ALTER TABLE alert_events DROP CONSTRAINT alert_events_kind_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_kind_check
    CHECK (kind IN ('raised', 'escalated', 'acknowledged', 'resolved', 'reopened', 'ping',
                    'ledger_head'));
ALTER TABLE alert_events DROP CONSTRAINT alert_events_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_check
    CHECK ((kind IN ('ping', 'ledger_head')) = (alert_id IS NULL));

-- Opt in: a webhook receives signed heads only when it asked for them.
ALTER TABLE webhooks ADD COLUMN ledger_heads boolean NOT NULL DEFAULT false;

DROP TRIGGER ledger_capture_insert ON alert_events;
DROP TRIGGER ledger_capture_update ON alert_events;
DROP FUNCTION pw_ledger_capture_alert_events();
-- (PERFORM in a DO block: a SELECT's result would be printed by the migration tool)
DO $$
BEGIN
    PERFORM pw_ledger_attach('alert_events', '{r}.id::text',
                             'array_remove(ARRAY[{r}.borrower_id], NULL)',
                             '{r}.kind NOT IN (''ping'', ''ledger_head'')');
END $$;

ALTER TABLE ledger_keys DROP CONSTRAINT ledger_keys_algorithm_check;
ALTER TABLE ledger_keys ADD CONSTRAINT ledger_keys_algorithm_check
    CHECK (algorithm IN ('ed25519', 'sm2'));
