"""The ledger over the real database: the capture triggers record a drawdown and a voucher transfer
(with their parties), the sequencer appends them and signs heads, every proof the store serves
verifies, and tampering is caught: an entry changed in the database is named by `verify`, a row
changed behind the triggers' back is named by the row check, and a rewritten history fails the
consistency proof against a head a party kept."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger import merkle, store, verify
from ledger.appender import HeadPolicy, Record, append_pending, append_records, drain
from ledger.canonical import dumps, loads
from ledger.signing import Signer
from lending import financing
from lending import operations as service

pytestmark = pytest.mark.integration

CORE, SUP_A, SUP_B = "core-ldg", "sup-ldg-a", "sup-ldg-b"
FAC = {SUP_A: "fac-ldg-a", SUP_B: "fac-ldg-b"}


def seed(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO borrowers (borrower_id, tenant, name, role) VALUES"
                 " (%s, 'acme', 'Core Mill', 'core')", (CORE,))
    for sup in (SUP_A, SUP_B):
        conn.execute("INSERT INTO borrowers (borrower_id, tenant, name, role, core_id) VALUES"
                     " (%s, 'acme', %s, 'supplier', %s)", (sup, sup.upper(), CORE))
        conn.execute("INSERT INTO facilities (facility_id, borrower_id, currency, line,"
                     " outstanding) VALUES (%s, %s, 'CNY', 1000000, 0)", (FAC[sup], sup))
        conn.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                     " outstanding, collateral_value, inputs) VALUES (%s, now(), 1e6, 1e6, 0,"
                     " 1e6, '{}')", (FAC[sup],))
    financing.create_programme(conn, "prog-ldg", CORE, "CNY", 1e9, 0.8, "officer",
                               datetime.now(UTC))


@pytest.fixture
def db(migrated_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed(conn)
        yield conn


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def drawdown(conn: psycopg.Connection, sup: str, amount: float, key: str) -> str:
    row, _ = financing.request_drawdown(conn, FAC[sup], amount, "CNY", 30, "stock", by="t",
                                        idempotency_key=key, now=datetime.now(UTC))
    return str(row["drawdown_id"])


def voucher_transfer(conn: psycopg.Connection) -> tuple[str, str]:
    now = datetime.now(UTC)
    service.insert_receivable(conn, "ar-ldg-1", FAC[SUP_A], "Core Mill", 5000.0,
                              now + timedelta(days=60), verified=False, posted_by="t",
                              debtor_id=CORE)
    root = financing.confirm_receivable(conn, "ar-ldg-1", debtor_scope=None, by="officer", now=now)
    child = financing.transfer_voucher(conn, root["voucher_id"], SUP_B, 1200, holder=SUP_A,
                                       by="t", now=now)
    return str(root["voucher_id"]), str(child["voucher_id"])


def latest_entry(conn: psycopg.Connection, table: str, key: str) -> dict[str, Any]:
    found = store.entries(conn, None, 1, 0, table=table, key=key)
    assert found, f"no entry for {table} {key}"
    return found[0]


def test_a_drawdown_and_a_voucher_transfer_are_captured_with_their_parties(
        db: psycopg.Connection, signer: Signer) -> None:
    genesis = drain(db, signer).tree_size  # the programme, the facilities' snapshots
    dd = drawdown(db, SUP_A, 1234.5, "ldg-key-0001")
    root, child = voucher_transfer(db)
    result = drain(db, signer)
    assert result.tree_size > genesis and result.head is not None

    entry = latest_entry(db, "drawdowns", dd)
    body = loads(entry["entry"])
    assert body["table"] == "drawdowns" and body["op"] == "insert" and body["key"] == dd
    assert body["row"]["amount"] == "1234.50"  # numeric's exact text, scale kept
    assert body["row"]["requested_at"].endswith("+00:00")  # timestamps in UTC
    assert entry["parties"] == [SUP_A]
    assert dumps(body) == entry["entry"]  # canonical: re-encoding changes nothing
    assert list(json.loads(entry["entry"])) == sorted(body) and ": " not in entry["entry"]

    spent = latest_entry(db, "vouchers", root)
    assert loads(spent["entry"])["row"]["status"] == "spent" and spent["op"] == "update"
    assert set(spent["parties"]) == {SUP_A, CORE}
    moved = latest_entry(db, "vouchers", child)
    assert loads(moved["entry"])["row"]["holder_id"] == SUP_B
    assert set(moved["parties"]) == {SUP_A, SUP_B, CORE}  # new holder, old holder, the core
    # what B may fetch: its voucher, never A's drawdown
    mine = {e["leaf_index"] for e in store.entries(db, SUP_B, 500, 0)}
    assert moved["leaf_index"] in mine and entry["leaf_index"] not in mine
    assert store.entry(db, entry["leaf_index"], SUP_B) is None
    assert store.entry(db, entry["leaf_index"], SUP_A) is not None
    assert not verify.check_rows(db)


def test_every_proof_the_store_serves_verifies(db: psycopg.Connection, signer: Signer) -> None:
    records = [Record("test", "insert", str(i), [SUP_A], json.dumps({"i": i}))
               for i in range(77)]
    for chunk in (records[:1], records[1:20], records[20:64], records[64:]):
        append_records(db, signer, chunk)
    size = store.tree_size(db)
    leaves = [merkle.leaf_hash(r.text.encode()) for r in records]
    for n in range(1, size + 1):
        root = store.root_at(db, n)
        assert root == merkle.root_of(leaves[:n])
        for m in range(n):
            merkle.verify_inclusion(leaves[m], m, n, store.inclusion_proof(db, m, n), root)
    for first in range(0, size + 1, 3):
        for second in range(first, size + 1, 5):
            merkle.verify_consistency(first, second, store.root_at(db, first),
                                      store.root_at(db, second),
                                      store.consistency_proof(db, first, second))
    report = verify.check_database(db)
    assert report.ok and report.entries == size and report.heads == 4, report.problems


def test_heads_are_signed_every_n_entries(db: psycopg.Connection, signer: Signer) -> None:
    db.execute("INSERT INTO commodities (name, unit, unit_kg, liquidation_days)"
               " VALUES ('wheat', 't', 1000, 10) ON CONFLICT DO NOTHING")
    db.execute("INSERT INTO prices (commodity, time, price, currency) SELECT 'wheat',"
               " now() - make_interval(secs => g), 2000 + g, 'CNY' FROM generate_series(1, 25) g")
    policy = HeadPolicy(every_entries=10, every_seconds=3600)
    signed = [append_pending(db, signer, policy, batch=10).head for _ in range(4)]
    assert [h.tree_size if h else None for h in signed] == [10, 20, None, None]
    assert store.tree_size(db) >= 25  # 25 prices (and the seed's rows): appended, not all signed
    assert store.latest_head(db) == signed[1]
    assert signed[1] is not None
    signed[1].verify()


def test_an_entry_changed_in_the_database_is_named(db: psycopg.Connection,
                                                   signer: Signer) -> None:
    dd = drawdown(db, SUP_A, 1000, "ldg-key-0002")
    drawdown(db, SUP_B, 2000, "ldg-key-0003")
    drain(db, signer)
    assert verify.check_database(db).ok
    target = latest_entry(db, "drawdowns", dd)
    db.execute("UPDATE ledger_entries SET entry = replace(entry, '\"amount\":1000.00',"
               " '\"amount\":100.00') WHERE leaf_index = %s", (target["leaf_index"],))
    report = verify.check_database(db)
    assert not report.ok and report.first_bad_entry == target["leaf_index"]
    assert f"entry {target['leaf_index']} no longer matches" in report.problems[0]
    # ... and when the stored leaf hash is rewritten too, the signed head still catches it
    changed = store.entry(db, target["leaf_index"], None)
    assert changed is not None
    db.execute("UPDATE ledger_nodes SET hash = %s WHERE level = 0 AND idx = %s",
               (merkle.leaf_hash(changed["entry"].encode()), target["leaf_index"]))
    report = verify.check_database(db)
    assert not report.ok and report.first_bad_entry is not None
    assert report.first_bad_entry <= target["leaf_index"]
    assert "does not match the entries" in report.problems[0]


def test_an_export_verifies_and_a_changed_amount_in_it_is_named(
        db: psycopg.Connection, signer: Signer) -> None:
    dd = drawdown(db, SUP_A, 777, "ldg-key-0004")
    drain(db, signer)
    out = io.StringIO()
    count, heads = verify.export(db, out)
    entries, signed = verify.read_export(out.getvalue().splitlines())
    report = verify.check_log(entries, signed)
    assert report.ok and report.entries == count and report.heads == heads
    target = latest_entry(db, "drawdowns", dd)["leaf_index"]
    forged = out.getvalue().replace('\\"amount\\":777.00', '\\"amount\\":7.00')
    assert forged != out.getvalue()
    entries, signed = verify.read_export(forged.splitlines())
    report = verify.check_log(entries, signed)
    assert not report.ok and report.first_bad_entry is not None
    assert report.first_bad_entry <= target


def test_a_row_changed_behind_the_triggers_back_is_named(db: psycopg.Connection,
                                                         signer: Signer) -> None:
    dd = drawdown(db, SUP_A, 500, "ldg-key-0005")
    drain(db, signer)
    entry = latest_entry(db, "drawdowns", dd)
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")  # no triggers fire
        db.execute("UPDATE drawdowns SET purpose = 'yacht' WHERE drawdown_id = %s", (dd,))
    found = verify.check_rows(db)
    assert [(m.table, m.key, m.leaf_index) for m in found] == [("drawdowns", dd,
                                                                 entry["leaf_index"])]
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")
        db.execute("DELETE FROM repayments")  # none was made: nothing to find
    # a change through the front door is no tampering: it is an entry of its own
    db.execute("UPDATE drawdowns SET purpose = 'stock' WHERE drawdown_id = %s", (dd,))
    drain(db, signer)
    assert latest_entry(db, "drawdowns", dd)["op"] == "update"
    assert not verify.check_rows(db)
    # a row deleted behind its back, and one inserted behind its back
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")
        db.execute("DELETE FROM drawdowns WHERE drawdown_id = %s", (dd,))
        db.execute("INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency, tenor_days,"
                   " purpose, status) VALUES ('dd-ghost', %s, 9, 'CNY', 30, 'x', 'pending')",
                   (FAC[SUP_B],))
    found = verify.check_rows(db)
    assert [(m.key, m.gone) for m in found] == [(dd, True), ("dd-ghost", False)]
    assert "is gone" in found[0].describe() and "no entry" in found[1].describe()


def test_a_rewritten_history_fails_against_a_kept_head(db: psycopg.Connection,
                                                       signer: Signer) -> None:
    dd = drawdown(db, SUP_A, 3000, "ldg-key-0006")
    kept = drain(db, signer).head
    assert kept is not None
    drawdown(db, SUP_B, 10, "ldg-key-0007")
    drain(db, signer)
    assert verify.check_kept_head(db, kept).tree_size > kept.tree_size  # an honest extension
    # The operator rewrites the drawdown's entry, rebuilds every hash and signs new heads with
    # the same key: the log verifies on its own, but not against the head a party kept.
    target = latest_entry(db, "drawdowns", dd)["leaf_index"]
    db.execute("UPDATE ledger_entries SET entry = replace(entry, '3000.00', '300.00')"
               " WHERE leaf_index = %s", (target,))
    texts = [t for _i, t, _h in verify.db_entries(db)]
    db.execute("DELETE FROM ledger_nodes")
    db.execute("DELETE FROM ledger_heads")
    db.execute("DELETE FROM ledger_entries")
    append_records(db, signer, [Record("drawdowns", "insert", str(i), [], t)
                                for i, t in enumerate(texts)])
    assert verify.check_database(db).ok
    with pytest.raises(merkle.ProofError):
        verify.check_kept_head(db, kept)
