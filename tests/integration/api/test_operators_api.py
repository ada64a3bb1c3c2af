"""The warehouse operator as a party of its own (issue 12), over the API and the real database: an
operator's key reads the lots it stores and the ledger entries of their releases, inspections and
stock lines, proves them against a signed head with the ledger's own verification code, uploads
the stock ledger of its own lots only, and is refused everything else; keys and operators from
the command line, with their malformed inputs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.problems import MEDIA_TYPE
from ledger import merkle
from ledger.appender import drain
from ledger.signing import Signer
from ledger.store import SignedHead
from ledger.verify import check_inclusion
from lending import financing
from lending import operations as service
from lending.operators import assign_lots
from tests.integration.api.conftest import FAC, LOT, OP, A, B, World
from tests.integration.test_cli import pledgewatch
from tests.integration.test_lending_cli import PORTFOLIO, ok, refused

pytestmark = pytest.mark.integration

V1 = "/api/v1"
SIGNER = Signer.generate()
OTHER_LOT_OF_A = "lot-wheat-2"  # A's second lot, in no operator's care until a test says so


def release(conn: psycopg.Connection, lot_id: str, name: str) -> str:
    release_id = f"rel-{name}"
    service.request_release(conn, release_id, lot_id, 1, datetime.now(UTC))
    return release_id


def index_of(api: TestClient, who: dict[str, str], table: str, key: str) -> int:
    r = api.get(f"{V1}/ledger/entries", params={"table": table, "key": key}, headers=who)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 1, (table, key, items)
    return int(items[0]["leaf_index"])


def stock(api: TestClient, who: dict[str, str], *lots: str) -> Any:
    body = "lot_id,quantity,as_of\n" + "".join(f"{lot},55,2026-11-30T08:00:00Z\n" for lot in lots)
    return api.post(f"{V1}/reconciliation/stock", content=body,
                    headers={**who, "Content-Type": "text/csv"})


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body: dict[str, Any] = response.json()
    return body


def test_an_operator_reads_and_proves_the_entries_of_its_lots_and_nothing_else(
        api: TestClient, world: World, as_op_a: dict[str, str], as_officer: dict[str, str],
        as_a: dict[str, str]) -> None:
    me = api.get(f"{V1}/auth/me", headers=as_op_a).json()
    assert (me["role"], me["operator_id"], me["borrower_id"]) == ("operator", OP[A], None)

    with world.connect() as conn:
        before = release(conn, OTHER_LOT_OF_A, "before")  # no operator yet: not the operator's
        mine = release(conn, LOT[A], "mine")
        theirs = release(conn, LOT[B], "theirs")  # B's lot, the other operator's
        drawn, _ = financing.request_drawdown(conn, FAC[A], 100, "CNY", 30, "operator test",
                                              by="t", idempotency_key="operator-test-0001",
                                              now=datetime.now(UTC))
        drain(conn, SIGNER)
        assign_lots(conn, OP[A], [OTHER_LOT_OF_A])
        after = release(conn, OTHER_LOT_OF_A, "after")
    counted = api.post(f"{V1}/lots/{LOT[A]}/inspections", json={"counted_quantity": 99},
                       headers=as_officer)
    assert counted.status_code == 201, counted.text
    assert stock(api, as_op_a, LOT[A]).status_code == 201
    with world.connect() as conn:
        signed = drain(conn, SIGNER).head
    assert signed is not None

    # The operator's own entries: its party beside the borrower's; proven against the signed head.
    own = {("release_orders", mine), ("release_orders", after),
           ("inspections", str(counted.json()["id"]))}
    head = SignedHead.from_json(api.get(f"{V1}/ledger/head", headers=as_op_a).json())
    assert head == signed
    for table, key in own:
        index = index_of(api, as_op_a, table, key)
        bundle = api.get(f"{V1}/ledger/entries/{index}", headers=as_op_a).json()
        assert set(bundle["parties"]) == {A, f"op:{OP[A]}"}
        check_inclusion(bundle, head, public_key=SIGNER.public_key)
        forged = {**bundle, "entry": bundle["entry"].replace('"quantity":1', '"quantity":2')}
        if forged != bundle:
            with pytest.raises(merkle.ProofError):
                check_inclusion(forged, head, public_key=SIGNER.public_key)
    stock_entries = api.get(f"{V1}/ledger/entries", params={"table": "stock_ledger"},
                            headers=as_op_a).json()["items"]
    assert len(stock_entries) == 1 and f"op:{OP[A]}" in stock_entries[0]["parties"]
    # The enterprise still sees the entries of its lots.
    assert index_of(api, as_a, "release_orders", mine) == index_of(api, as_op_a, "release_orders",
                                                                   mine)

    listed = api.get(f"{V1}/ledger/entries", params={"limit": 500}, headers=as_op_a).json()
    assert listed["items"] and all(f"op:{OP[A]}" in e["parties"] or "*" in e["parties"]
                                   for e in listed["items"])
    assert {e["table"] for e in listed["items"]} >= {"release_orders", "inspections",
                                                     "stock_ledger"}

    # Another operator's entry, a borrower-only one (a drawdown), and one appended before the lot
    # came into the operator's care (the log is append-only: its parties stay as they were) answer
    # exactly as an index that names nothing.
    made_up = problem(api.get(f"{V1}/ledger/entries/987654321", headers=as_op_a), 404)
    for table, key in [("release_orders", theirs), ("drawdowns", drawn["drawdown_id"]),
                       ("release_orders", before)]:
        index = index_of(api, as_officer, table, key)
        got = problem(api.get(f"{V1}/ledger/entries/{index}", headers=as_op_a), 404)
        assert got["detail"].replace(str(index), "<i>") == made_up["detail"].replace(
            "987654321", "<i>")
        assert api.get(f"{V1}/ledger/entries", params={"table": table, "key": key},
                       headers=as_op_a).json()["items"] == []

    heads = api.get(f"{V1}/ledger/heads", headers=as_op_a)
    assert heads.status_code == 200 and heads.json()["items"]
    proof = api.get(f"{V1}/ledger/consistency", params={"first": 1}, headers=as_op_a)
    assert proof.status_code == 200, proof.text


def test_an_operator_lists_the_lots_it_stores_without_the_banks_valuation(
        api: TestClient, as_op_a: dict[str, str], as_a: dict[str, str]) -> None:
    lots = api.get(f"{V1}/lots", headers=as_op_a).json()["items"]
    assert [lot["lot_id"] for lot in lots] == [LOT[A]]
    assert lots[0]["operator_id"] == OP[A] and lots[0]["pledge"] is None
    one = api.get(f"{V1}/lots/{LOT[A]}", headers=as_op_a)
    assert one.status_code == 200 and one.json()["pledge"] is None
    assert api.get(f"{V1}/lots/{LOT[A]}", headers=as_a).json()["pledge"] is not None
    theirs = problem(api.get(f"{V1}/lots/{LOT[B]}", headers=as_op_a), 404)
    made_up = problem(api.get(f"{V1}/lots/lot-made-up", headers=as_op_a), 404)
    assert theirs["detail"].replace(LOT[B], "<id>") == made_up["detail"].replace(
        "lot-made-up", "<id>")
    assert api.get(f"{V1}/lots", params={"facility_id": FAC[B]},
                   headers=as_op_a).json()["items"] == []
    assert api.post(f"{V1}/lots/{LOT[A]}/inspections", json={"counted_quantity": 1},
                    headers=as_op_a).status_code == 403
    assert api.get(f"{V1}/lots/{LOT[A]}/inspections", headers=as_op_a).status_code == 403


def stock_lines(world: World) -> list[tuple[str, str]]:
    with world.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT lot_id, imported_by FROM stock_ledger ORDER BY id").fetchall()]


def test_an_operator_uploads_the_stock_ledger_of_its_own_lots_only(
        api: TestClient, world: World, as_op_a: dict[str, str], as_a: dict[str, str],
        as_officer: dict[str, str]) -> None:
    r = stock(api, as_op_a, LOT[A])
    assert r.status_code == 201 and r.json() == {"imported": 1}, r.text
    assert stock_lines(world) == [(LOT[A], f"op:{OP[A]}")]

    # One line for another operator's lot refuses the whole file, naming the lot; a lot that does
    # not exist answers alike (the operator cannot tell which lots exist).
    foreign = problem(stock(api, as_op_a, LOT[A], LOT[B]), 404)
    assert LOT[B] in foreign["detail"] and LOT[A] not in foreign["detail"]
    unknown = problem(stock(api, as_op_a, LOT[A], "lot-made-up"), 404)
    assert (foreign["detail"].replace(LOT[B], "<id>")
            == unknown["detail"].replace("lot-made-up", "<id>"))
    assert stock_lines(world) == [(LOT[A], f"op:{OP[A]}")]

    problem(stock(api, as_a, LOT[A]), 403)  # an enterprise does not upload the stock ledger
    assert stock(api, as_officer, LOT[B]).status_code == 201  # an officer, any lot
    bad = api.post(f"{V1}/reconciliation/stock", content="lot_id,quantity,as_of\nx,-1,never\n",
                   headers={**as_op_a, "Content-Type": "text/csv"})
    problem(bad, 422)
    assert len(stock_lines(world)) == 2


def test_an_operator_is_refused_on_enterprise_and_bank_routes(
        api: TestClient, world: World, as_op_a: dict[str, str]) -> None:
    """Routes without an id (those with one are in test_authz_matrix.MATRIX): 403 before
    anything is looked up or stored."""
    with world.connect() as conn:
        counts = ("SELECT (SELECT count(*) FROM drawdowns), (SELECT count(*) FROM release_orders),"
                  " (SELECT count(*) FROM sales), (SELECT count(*) FROM receivables),"
                  " (SELECT count(*) FROM repayments), (SELECT count(*) FROM statement_imports)")
        before = conn.execute(counts).fetchone()
    csv = {"Content-Type": "text/csv"}
    calls: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/facilities", None, {}), ("GET", "/alerts", None, {}),
        ("GET", "/borrowers", None, {}), ("GET", "/devices", None, {}),
        ("GET", "/telemetry/latest", None, {}), ("GET", "/releases", None, {}),
        ("GET", "/prices", None, {}), ("GET", "/sales", None, {}),
        ("GET", "/receivables", None, {}), ("GET", "/drawdowns", None, {}),
        ("GET", "/vouchers", None, {}), ("GET", "/programmes", None, {}),
        ("GET", "/ratings", None, {}), ("GET", "/events", None, {}),
        ("POST", "/releases", {"lot_id": LOT[A], "quantity": 1}, {}),
        ("POST", "/sales", {"facility_id": FAC[A], "amount": 10}, {}),
        ("POST", "/receivables", {"facility_id": FAC[A], "debtor": "x", "amount": 10,
                                  "due": "2030-01-01T00:00:00Z"}, {}),
        ("POST", "/drawdowns", {"facility_id": FAC[A], "amount": 10, "currency": "CNY",
                                "tenor_days": 30, "purpose": "x"},
         {"Idempotency-Key": "operator-refused-1"}),
        ("POST", "/repayments", {"facility_id": FAC[A], "amount": 10}, {}),
        ("GET", "/reconciliation/statements", None, {}),
        ("GET", "/reconciliation/goods", None, {}),
        ("GET", "/webhooks", None, {}), ("GET", "/users", None, {}), ("GET", "/api-keys", None, {}),
        ("POST", "/api-keys", {"operator_id": OP[A], "name": "more"}, {}),
        ("POST", "/prices", [{"commodity": "wheat", "time": "2026-03-01T00:00:00Z",
                              "price": 1.0}], {}),
        ("POST", "/ratings/run", None, {}),
    ]
    for method, path, body, headers in calls:
        r = api.request(method, V1 + path, json=body, headers={**as_op_a, **headers})
        assert r.status_code == 403, (method, path, r.text)
        assert r.headers["content-type"] == MEDIA_TYPE
    statement = ("reference,facility_id,amount,currency,direction,value_date\n"
                 f"x-1,{FAC[A]},1.00,CNY,debit,2026-11-30\n")
    r = api.post(f"{V1}/reconciliation/statements", content=statement,
                 headers={**as_op_a, **csv})
    problem(r, 403)
    with world.connect() as conn:
        assert conn.execute(counts).fetchone() == before


def test_api_keys_for_operators_name_exactly_one_party(
        api: TestClient, world: World, operators: dict[str, str],
        as_admin: dict[str, str]) -> None:
    keys = f"{V1}/api-keys"
    r = api.post(keys, json={"operator_id": OP[A], "name": "second WMS"}, headers=as_admin)
    assert r.status_code == 201, r.text
    issued = r.json()
    assert (issued["operator_id"], issued["borrower_id"]) == (OP[A], None)
    me = api.get(f"{V1}/auth/me", headers={"X-API-Key": issued["api_key"]}).json()
    assert me["role"] == "operator" and me["operator_id"] == OP[A]
    listed = api.get(keys, params={"operator_id": OP[A]}, headers=as_admin).json()["items"]
    assert {k["key_id"] for k in listed} >= {issued["key_id"]}
    assert all(k["operator_id"] == OP[A] for k in listed)

    for body in [{"operator_id": OP[A], "borrower_id": A, "name": "both"},
                 {"name": "neither"},
                 {"operator_id": "op:north", "name": "a colon"},
                 {"operator_id": "", "name": "empty"},
                 {"operator_id": "x" * 65, "name": "too long"},
                 {"operator_id": 7, "name": "a number"}]:
        problem(api.post(keys, json=body, headers=as_admin), 422)
    missing = problem(api.post(keys, json={"operator_id": "op-nowhere", "name": "x"},
                               headers=as_admin), 409)
    assert "op-nowhere" in missing["detail"]

    with world.connect() as conn:  # the database holds the same rules
        for sql in [("INSERT INTO api_keys (key_id, key_sha256, name, created_by)"
                     " VALUES ('k-none', sha256('a'), 'x', 't')"),
                    (f"INSERT INTO api_keys (key_id, key_sha256, borrower_id, operator_id, name,"
                     f" created_by) VALUES ('k-both', sha256('b'), '{A}', '{OP[A]}', 'x', 't')"),
                    ("INSERT INTO borrowers (borrower_id, tenant, name, role)"
                     " VALUES ('op:op-north', 'acme', 'Impostor', 'supplier')"),
                    "INSERT INTO warehouse_operators (operator_id, name) VALUES ('op:x', 'x')"]:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(sql)


def test_operators_and_their_keys_from_the_command_line(migrated_db: str, tmp_path: Path) -> None:
    def cli(*args: str) -> Any:
        return pledgewatch(migrated_db, tmp_path, *args)

    ok(cli("portfolio", "load", str(PORTFOLIO)))
    assert "op-east (East Bonded) added" in ok(cli("operators", "add", "op-east", "--name",
                                                   "East Bonded"))
    assigned = ok(cli("operators", "assign", "op-east", "lot-wheat-1", "lot-wheat-2"))
    assert "lot-wheat-1: op-east" in assigned and "lot-wheat-2: op-east" in assigned
    assert re.search(r"op-east\s+2 lot\(s\)\s+East Bonded", ok(cli("operators", "list")))
    issued = ok(cli("api-keys", "issue", "--operator", "op-east", "--name", "WMS"))
    assert "for warehouse operator op-east" in issued and "api key: pwk_" in issued
    assert "op:op-east" in ok(cli("api-keys", "list", "--operator", "op-east"))

    refused(cli("operators", "add", "op-east", "--name", "again"), "already exists",
            one_line=True)
    refused(cli("operators", "add", "op:bad", "--name", "x"), "op:bad", one_line=True)
    refused(cli("operators", "add", "op-west", "--name", ""), "--name", one_line=True)
    refused(cli("operators", "assign", "op-east", "lot-copper-1", "lot-made-up"),
            "lot-made-up", "no lot was assigned", one_line=True)
    refused(cli("operators", "assign", "op-nowhere", "lot-copper-1"), "op-nowhere",
            one_line=True)
    refused(cli("api-keys", "issue", "sup-grain", "--operator", "op-east", "--name", "x"),
            "exactly one of BORROWER and --operator", one_line=True)
    refused(cli("api-keys", "issue", "--name", "x"), "exactly one of BORROWER and --operator",
            one_line=True)
    refused(cli("api-keys", "issue", "--operator", "op-nowhere", "--name", "x"), "op-nowhere",
            one_line=True)
    refused(cli("api-keys", "issue", "--operator", "bad id!", "--name", "x"), "--operator",
            one_line=True)
    with psycopg.connect(migrated_db) as conn:
        rows = conn.execute("SELECT lot_id, operator_id FROM lots WHERE lot_id IN"
                            " ('lot-wheat-1', 'lot-copper-1') ORDER BY lot_id").fetchall()
        assert rows == [("lot-copper-1", None), ("lot-wheat-1", "op-east")]
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
    assert "lot-wheat-2: no operator (was op-east)" in ok(cli("operators", "unassign",
                                                              "lot-wheat-2"))
