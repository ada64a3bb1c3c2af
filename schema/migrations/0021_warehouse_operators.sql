-- The warehouse operator as a party of its own (issue 12): the company whose warehouse holds a
-- pledged lot signs in with an API key of its own and fetches the signed heads and the proofs of
-- the events on its lots.
--
-- warehouse_operators  the operators (operator_id, name)
-- lots.operator_id     the operator whose warehouse stores the lot (none: not in an operator's care)
-- api_keys.operator_id a key belongs to a borrower or to an operator, exactly one of the two
--
-- The ledger's capture (0014, 0016) of release orders, inspections and stock-ledger lines is
-- attached again so that their parties also name the lot's operator as 'op:<operator_id>'.
-- Entries already in the log keep their parties (the log is append-only): only new entries carry
-- the operator. A borrower id may not start with 'op:', or a borrower would read an operator's
-- entries.
-- depends: 0020_derive_on_change

CREATE TABLE warehouse_operators (
    operator_id text PRIMARY KEY CHECK (operator_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE lots ADD COLUMN operator_id text REFERENCES warehouse_operators (operator_id);
CREATE INDEX lots_operator ON lots (operator_id) WHERE operator_id IS NOT NULL;

ALTER TABLE api_keys ALTER COLUMN borrower_id DROP NOT NULL;
ALTER TABLE api_keys ADD COLUMN operator_id text REFERENCES warehouse_operators (operator_id);
ALTER TABLE api_keys ADD CONSTRAINT api_keys_one_party
    CHECK ((borrower_id IS NULL) <> (operator_id IS NULL));
CREATE INDEX api_keys_operator ON api_keys (operator_id) WHERE operator_id IS NOT NULL;

-- 'op:' names an operator among a ledger entry's parties.
ALTER TABLE borrowers ADD CONSTRAINT borrowers_not_an_operator_party
    CHECK (borrower_id NOT LIKE 'op:%');

DROP TRIGGER ledger_capture_insert ON release_orders;
DROP TRIGGER ledger_capture_update ON release_orders;
DROP FUNCTION pw_ledger_capture_release_orders();
DROP TRIGGER ledger_capture_insert ON inspections;
DROP TRIGGER ledger_capture_update ON inspections;
DROP FUNCTION pw_ledger_capture_inspections();
DROP TRIGGER ledger_capture_insert ON stock_ledger;
DROP TRIGGER ledger_capture_update ON stock_ledger;
DROP FUNCTION pw_ledger_capture_stock_ledger();

-- (PERFORM in a DO block: a SELECT's result would be printed by the migration tool)
DO $$
BEGIN
    PERFORM pw_ledger_attach('release_orders', '{r}.release_id',
                         'array_remove(ARRAY(SELECT f.borrower_id FROM lots l JOIN facilities f'
                         ' USING (facility_id) WHERE l.lot_id = {r}.lot_id)'
                         ' || (SELECT ''op:'' || l.operator_id FROM lots l WHERE l.lot_id = {r}.lot_id),'
                         ' NULL)');
    PERFORM pw_ledger_attach('inspections', '{r}.id::text',
                         'array_remove(ARRAY(SELECT f.borrower_id FROM facilities f'
                         ' WHERE f.facility_id = {r}.facility_id)'
                         ' || (SELECT ''op:'' || l.operator_id FROM lots l WHERE l.lot_id = {r}.lot_id),'
                         ' NULL)');
    PERFORM pw_ledger_attach('stock_ledger', '{r}.id::text',
                         'array_remove(ARRAY(SELECT f.borrower_id FROM lots l JOIN facilities f'
                         ' USING (facility_id) WHERE l.lot_id = {r}.lot_id)'
                         ' || (SELECT ''op:'' || l.operator_id FROM lots l WHERE l.lot_id = {r}.lot_id),'
                         ' NULL)');
END $$;
