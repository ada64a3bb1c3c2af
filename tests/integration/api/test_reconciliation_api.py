"""T+0 reconciliation over the API and the real database: the bank's statement (CSV and camt.053)
against real drawdowns and repayments, every break listed and alerted once, the same file refused
twice, hostile uploads refused; the operator's stock ledger and goods three ways."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lending import financing
from tests.integration.api.conftest import FAC, LOT, A, B, World

pytestmark = pytest.mark.integration

V1 = "/api/v1/reconciliation"
HEADER = "reference,facility_id,amount,currency,direction,value_date\n"


def moves(world: World) -> tuple[str, str, int]:
    """Two drawdowns and a repayment on A's facility, today: (booked drawdown, unbooked one,
    repayment id)."""
    now = datetime.now(UTC)
    with world.connect() as conn:
        conn.execute("UPDATE alerts SET status = 'resolved' WHERE facility_id = %s", (FAC[A],))
        conn.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                     " outstanding, collateral_value, inputs) VALUES (%s, now(), 1e9, 1e9, 0, 1e9,"
                     " '{}')", (FAC[A],))
        first, _ = financing.request_drawdown(conn, FAC[A], 1000, "CNY", 30, "recon", by="t",
                                              idempotency_key="recon-0001", now=now)
        second, _ = financing.request_drawdown(conn, FAC[A], 250, "CNY", 30, "recon", by="t",
                                               idempotency_key="recon-0002", now=now)
        paid = financing.repay(conn, FAC[A], 300, now)
    return first["drawdown_id"], second["drawdown_id"], int(paid["id"])


def upload(api: TestClient, who: dict[str, str], body: str | bytes,
           media: str = "text/csv") -> Any:
    return api.post(f"{V1}/statements", content=body, headers={**who, "Content-Type": media})


def test_a_statement_is_matched_and_every_break_is_listed_and_alerted_once(
        api: TestClient, world: World, as_officer: dict[str, str], as_a: dict[str, str]) -> None:
    booked, unbooked, _repayment = moves(world)
    today = datetime.now(UTC).date().isoformat()
    statement = (HEADER
                 + f"{booked},{FAC[A]},1000.00,CNY,debit,{today}\n"
                 + f"{booked},{FAC[A]},1000.00,CNY,debit,{today}\n"      # booked twice
                 + f"PAYIN-77,{FAC[A]},300.00,CNY,credit,{today}\n"       # the borrower's ref
                 + f"dd-ghost,{FAC[A]},5000.00,CNY,debit,{today}\n")      # nothing explains it
    assert upload(api, as_a, statement).status_code == 403
    r = upload(api, as_officer, statement)
    assert r.status_code == 201, r.text
    result = r.json()
    assert (result["format"], result["lines"], result["matched"]) == ("csv", 4, 2)
    assert result["counts"] == {"duplicate": 1, "missing_in_platform": 1, "missing_in_bank": 1}
    kinds = {(b["kind"], b["reference"]) for b in result["break_list"]}
    assert kinds == {("duplicate", booked), ("missing_in_platform", "dd-ghost"),
                     ("missing_in_bank", unbooked)}
    assert all(b["alert_id"] for b in result["break_list"])
    alerts = api.get("/api/v1/alerts", headers=as_officer,
                     params={"type": "reconciliation_break"}).json()["items"]
    assert {a["evidence"]["reference"] for a in alerts} == {booked, "dd-ghost", unbooked}
    assert {a["severity"] for a in alerts if a["evidence"]["kind"] == "missing_in_platform"} == {
        "critical"}

    again = upload(api, as_officer, statement)
    assert again.status_code == 409 and "already imported" in again.json()["detail"]
    # the next day's statement with the same break adds no second alert
    upload(api, as_officer, statement + f"dd-other,{FAC[B]},1.00,CNY,debit,{today}\n")
    alerts = api.get("/api/v1/alerts", headers=as_officer,
                     params={"type": "reconciliation_break"}).json()["items"]
    assert len(alerts) == 4, [a["evidence"] for a in alerts]
    listed = api.get(f"{V1}/statements", headers=as_officer).json()["items"]
    assert len(listed) == 2
    one = api.get(f"{V1}/statements/{result['id']}", headers=as_officer).json()
    assert one["break_list"] == result["break_list"]


def test_a_camt053_statement_reconciles_like_the_csv(
        api: TestClient, world: World, as_officer: dict[str, str]) -> None:
    booked, unbooked, repayment = moves(world)
    today = datetime.now(UTC).date().isoformat()
    ns = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"

    def entry(ref: str, amount: str, ind: str) -> str:
        return (f'<Ntry><Amt Ccy="CNY">{amount}</Amt><CdtDbtInd>{ind}</CdtDbtInd><ValDt><Dt>'
                f"{today}</Dt></ValDt><NtryDtls><TxDtls><Refs><EndToEndId>{ref}</EndToEndId>"
                "</Refs></TxDtls></NtryDtls></Ntry>")

    document = (f'<?xml version="1.0"?><Document xmlns="{ns}"><BkToCstmrStmt><Stmt><Id>1</Id>'
                f"<Acct><Id><Othr><Id>{FAC[A]}</Id></Othr></Id></Acct>"
                + entry(booked, "1000.00", "DBIT") + entry(unbooked, "260.00", "DBIT")
                + entry(f"rp-{repayment}", "300.00", "CRDT")
                + "</Stmt></BkToCstmrStmt></Document>")
    r = upload(api, as_officer, document, "application/xml")
    assert r.status_code == 201, r.text
    assert (r.json()["format"], r.json()["matched"]) == ("camt053", 2)
    assert [(b["kind"], b["reference"]) for b in r.json()["break_list"]] == [
        ("amount_mismatch", unbooked)]


@pytest.mark.parametrize(("body", "media", "status"), [
    ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
     "application/xml", 422),
    (HEADER + "dd-1,fac-grain,NaN,CNY,debit,2026-11-30\n", "text/csv", 422),
    (b"\xff\xfe not utf-8", "text/csv", 422),
    ("{}", "application/json", 415),
    ("a" * (9 * 1024 * 1024), "text/csv", 413),
])
def test_hostile_statements_are_refused_and_nothing_is_stored(
        api: TestClient, world: World, as_officer: dict[str, str], body: str | bytes, media: str,
        status: int) -> None:
    r = upload(api, as_officer, body, media)
    assert r.status_code == status, r.text
    with world.connect() as conn:
        assert conn.execute("SELECT count(*) FROM statement_imports").fetchone() == (0,)


def test_the_operators_stock_ledger_and_goods_three_ways(
        api: TestClient, world: World, as_officer: dict[str, str]) -> None:
    stock = f"lot_id,quantity,as_of\n{LOT[A]},60,2026-11-30T08:00:00Z\n"
    r = api.post(f"{V1}/stock", content=stock,
                 headers={**as_officer, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json() == {"imported": 1}
    unknown = api.post(f"{V1}/stock", content="lot_id,quantity,as_of\nlot-x,1,2026-11-30T08:00:00Z\n",
                       headers={**as_officer, "Content-Type": "text/csv"})
    assert unknown.status_code == 409 and "lot-x" in unknown.json()["detail"]
    goods = {g["lot_id"]: g for g in api.get(f"{V1}/goods", headers=as_officer,
                                             params={"facility_id": FAC[A]}).json()}
    wheat = goods[LOT[A]]
    assert wheat["pledged"] == 100 and wheat["operator"] == 60
    assert wheat["differences"]["operator_vs_pledged"] == -40
    assert "operator_vs_pledged" in wheat["flagged"]
