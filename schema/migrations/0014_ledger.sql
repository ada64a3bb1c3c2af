-- The shared record (issue 12): every event that moves money or collateral, captured by statement
-- triggers into an outbox in the transaction that made it, then appended by one sequencer at a
-- time (ledger/appender.py, under an advisory lock) to an RFC 9162 Merkle log with signed heads.
--
-- ledger_outbox   rows captured and not yet in the log (the sequencer deletes what it appends)
-- ledger_entries  the log: leaf_index, the canonical entry text (what the leaf hash covers), and
--                 its parties (the borrowers it concerns; '*' = every signed-in party; none =
--                 the bank only)
-- ledger_nodes    the hash of every complete aligned subtree (level, index): level 0 holds the
--                 leaf hashes; any proof is O(log n) look-ups here
-- ledger_keys     public keys that signed heads; ledger_heads the signed tree heads
--
-- pw_ledger_attach(table, key, parties, filter, genesis) attaches capture to a table (below, and
-- the benchmark's own table). Only INSERTs and UPDATEs that
-- change a row are captured; timestamps in the captured JSON are written in UTC whatever the
-- session's TimeZone. Rows that existed before this migration enter the log as op 'genesis'
-- (drawdowns, repayments, receivables, programmes, vouchers, voucher payments, release orders);
-- the history tables (inspections, prices, limit snapshots, alert events) start empty.
-- depends: 0013_financing

CREATE TABLE ledger_outbox (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL,
    op         text NOT NULL CHECK (op IN ('insert', 'update', 'genesis')),
    row_key    text NOT NULL,
    parties    text[] NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    leaf_index  bigint PRIMARY KEY CHECK (leaf_index >= 0),
    source      text NOT NULL,
    op          text NOT NULL,
    row_key     text NOT NULL,
    parties     text[] NOT NULL,
    entry       text NOT NULL,
    appended_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_parties ON ledger_entries USING gin (parties);
CREATE INDEX ledger_entries_row ON ledger_entries (source, row_key, leaf_index DESC);

CREATE TABLE ledger_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 0 AND 62),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE ledger_keys (
    key_id     text PRIMARY KEY,
    algorithm  text NOT NULL CHECK (algorithm IN ('ed25519')),
    public_key bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_heads (
    tree_size    bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash    bytea NOT NULL CHECK (length(root_hash) = 32),
    timestamp_ms bigint NOT NULL,
    key_id       text NOT NULL REFERENCES ledger_keys (key_id),
    signature    bytea NOT NULL,
    signed_at    timestamptz NOT NULL DEFAULT now()
);

-- Attach capture to a table: a capture function of its own (static SQL, so each session plans it
-- once) with an INSERT and an UPDATE statement trigger (transition tables allow one event per
-- trigger); optionally the existing rows go in first as genesis entries. ``key_sql`` and
-- ``parties_sql`` are SQL over the row alias {r}: its key (text) and its parties (text[]);
-- ``filter_sql`` (optional) says which rows to capture.
CREATE FUNCTION pw_ledger_attach(tbl regclass, key_sql text, parties_sql text,
                                 filter_sql text DEFAULT NULL, genesis boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $attach$
DECLARE
    v_name   text := (SELECT relname FROM pg_class WHERE oid = tbl);
    v_fn     text := 'pw_ledger_capture_' || v_name;
    v_key_n  text := replace(key_sql, '{r}', 'n');
    v_key_o  text := replace(key_sql, '{r}', 'o');
    v_party  text := replace(parties_sql, '{r}', 'n');
    v_filter text := coalesce(' AND (' || replace(filter_sql, '{r}', 'n') || ')', '');
    v_tz     text := current_setting('TimeZone');
BEGIN
    EXECUTE format($f$
CREATE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
    v_tz text := current_setting('TimeZone');
    v_utc boolean := v_tz IN ('UTC', 'Etc/UTC');
BEGIN
    IF NOT v_utc THEN
        PERFORM set_config('TimeZone', 'UTC', true);  -- timestamps in the JSON: UTC
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ledger_outbox (source, op, row_key, parties, payload)
        SELECT %L, 'insert', %s, %s, to_jsonb(n) FROM new_rows n WHERE true%s;
    ELSE
        INSERT INTO ledger_outbox (source, op, row_key, parties, payload)
        SELECT %L, 'update', %s, %s, to_jsonb(n) FROM new_rows n
        LEFT JOIN old_rows o ON %s = %s
        WHERE to_jsonb(o) IS DISTINCT FROM to_jsonb(n)%s;
    END IF;
    IF NOT v_utc THEN
        PERFORM set_config('TimeZone', v_tz, true);
    END IF;
    RETURN NULL;
END $body$$f$, v_fn, v_name, v_key_n, v_party, v_filter, v_name, v_key_n, v_party, v_key_o,
                   v_key_n, v_filter);
    EXECUTE format('CREATE TRIGGER ledger_capture_insert AFTER INSERT ON %s'
                   ' REFERENCING NEW TABLE AS new_rows'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION %I()', tbl, v_fn);
    EXECUTE format('CREATE TRIGGER ledger_capture_update AFTER UPDATE ON %s'
                   ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION %I()', tbl, v_fn);
    IF genesis THEN
        PERFORM set_config('TimeZone', 'UTC', true);
        EXECUTE format('INSERT INTO ledger_outbox (source, op, row_key, parties, payload)'
                       ' SELECT %L, ''genesis'', %s, %s, to_jsonb(n) FROM %s n WHERE true%s'
                       ' ORDER BY 3', v_name, v_key_n, v_party, tbl, v_filter);
        PERFORM set_config('TimeZone', v_tz, true);
    END IF;
END $attach$;

DO $$
BEGIN
    PERFORM pw_ledger_attach('programmes', '{r}.programme_id', 'ARRAY[{r}.core_id]', NULL, true);
    PERFORM pw_ledger_attach('drawdowns', '{r}.drawdown_id',
                         'ARRAY(SELECT f.borrower_id FROM facilities f WHERE f.facility_id = {r}.facility_id)', NULL, true);
    PERFORM pw_ledger_attach('repayments', '{r}.id::text',
                         'ARRAY(SELECT f.borrower_id FROM facilities f WHERE f.facility_id = {r}.facility_id)', NULL, true);
    PERFORM pw_ledger_attach('receivables', '{r}.receivable_id',
                         'array_remove(ARRAY(SELECT f.borrower_id FROM facilities f'
                         ' WHERE f.facility_id = {r}.facility_id) || {r}.debtor_id, NULL)',
                         NULL, true);
    PERFORM pw_ledger_attach('vouchers', '{r}.voucher_id',
                         'array_remove(ARRAY[{r}.holder_id,'
                         ' (SELECT p.holder_id FROM vouchers p WHERE p.voucher_id = {r}.parent_id),'
                         ' (SELECT g.core_id FROM programmes g WHERE g.programme_id = {r}.programme_id)],'
                         ' NULL)', NULL, true);
    PERFORM pw_ledger_attach('voucher_payments', '{r}.root_id',
                         'ARRAY(SELECT DISTINCT v.holder_id FROM vouchers v WHERE v.root_id = {r}.root_id)'
                         ' || ARRAY(SELECT g.core_id FROM vouchers v JOIN programmes g USING (programme_id)'
                         ' WHERE v.voucher_id = {r}.root_id)', NULL, true);
    PERFORM pw_ledger_attach('release_orders', '{r}.release_id',
                         'ARRAY(SELECT f.borrower_id FROM lots l JOIN facilities f USING (facility_id)'
                         ' WHERE l.lot_id = {r}.lot_id)', NULL, true);
    PERFORM pw_ledger_attach('inspections', '{r}.id::text',
                         'ARRAY(SELECT f.borrower_id FROM facilities f WHERE f.facility_id = {r}.facility_id)');
    PERFORM pw_ledger_attach('prices', '{r}.commodity || ''@'' || {r}.time::text', 'ARRAY[''*'']');
    PERFORM pw_ledger_attach('limit_snapshots', '{r}.id::text',
                         'ARRAY(SELECT f.borrower_id FROM facilities f WHERE f.facility_id = {r}.facility_id)');
    PERFORM pw_ledger_attach('alert_events', '{r}.id::text',
                         'array_remove(ARRAY[{r}.borrower_id], NULL)', '{r}.kind <> ''ping''');
END $$;
