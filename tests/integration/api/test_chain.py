"""Core-enterprise payables that flow down the chain, over the API and the real database: the core
enterprise confirms a supplier's receivable with its own key (a voucher within the programme
line), the holder splits and transfers part to a tier-2 supplier, the tier-2 holder finances its
part, a voucher is spent once under concurrent transfers, amounts are conserved, every voucher
shows its path back to the confirmation, and at maturity the bank is repaid what it financed and
holders the rest; a late payment raises alerts on the programme and every holder's facility."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.accounts import issue_api_key
from lending import financing
from lending.operations import LendingError
from tests.integration.api.conftest import FAC, A, B, World

pytestmark = pytest.mark.integration

CORE = "core-mill"
V1 = "/api/v1"


@pytest.fixture
def as_core(world: World) -> dict[str, str]:
    with world.connect() as conn:
        key, _row = issue_api_key(conn, CORE, "core ERP", "admin")
    return {"X-API-Key": key.secret}


@pytest.fixture
def programme(api: TestClient, as_officer: dict[str, str]) -> dict[str, Any]:
    r = api.post(f"{V1}/programmes", headers=as_officer, json={
        "programme_id": "mill-chain", "core_id": CORE, "currency": "CNY", "line": 250_000,
        "advance_rate": 0.8})
    assert r.status_code == 201, r.text
    return dict(r.json())


def payable(api: TestClient, seller: dict[str, str], facility: str, amount: float,
            days: int = 60) -> str:
    due = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    r = api.post(f"{V1}/receivables", headers=seller, json={
        "facility_id": facility, "debtor": "Example Flour Mill Group", "debtor_id": CORE,
        "amount": amount, "due": due})
    assert r.status_code == 201, r.text
    assert r.json()["verified"] is False and r.json()["debtor_id"] == CORE
    return str(r.json()["receivable_id"])


def test_confirm_split_transfer_finance_and_settle_conserve_every_amount(
        api: TestClient, world: World, programme: dict[str, Any], as_core: dict[str, str],
        as_a: dict[str, str], as_b: dict[str, str], as_officer: dict[str, str]) -> None:
    receivable = payable(api, as_b, FAC[B], 100_000)
    # the core enterprise sees what it owes and confirms with its own key; suppliers cannot
    owed = api.get(f"{V1}/receivables", headers=as_core).json()["items"]
    assert receivable in {r["receivable_id"] for r in owed}
    assert api.post(f"{V1}/receivables/{receivable}/confirm", headers=as_b).status_code == 404
    r = api.post(f"{V1}/receivables/{receivable}/confirm", headers=as_core)
    assert r.status_code == 201, r.text
    root = r.json()
    assert (root["holder_id"], root["amount"], root["tier"], root["status"]) == (B, 100_000, 1,
                                                                                 "active")
    assert root["confirmation"]["debtor_id"] == CORE
    assert api.post(f"{V1}/receivables/{receivable}/confirm",
                    headers=as_core).status_code == 409, "confirmed twice"
    assert api.get(f"{V1}/programmes/mill-chain", headers=as_b).json()["used"] == 100_000

    # tier 1 (B) passes 40,000 down to its supplier A (tier 2) and keeps 60,000
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/transfer", headers=as_a,
                    json={"to": A, "amount": 1}).status_code == 404, "A does not hold it"
    for bad in ({"to": A, "amount": 100_000.01}, {"to": B, "amount": 1},
                {"to": "sup-nobody", "amount": 1}, {"to": A, "amount": 0},
                {"to": A, "amount": 1.001}, {"to": A, "amount": "1"}):
        resp = api.post(f"{V1}/vouchers/{root['voucher_id']}/transfer", headers=as_b, json=bad)
        assert resp.status_code == 422, (bad, resp.text)
    moved = api.post(f"{V1}/vouchers/{root['voucher_id']}/transfer", headers=as_b,
                     json={"to": A, "amount": 40_000})
    assert moved.status_code == 201, moved.text
    tier2 = moved.json()
    assert (tier2["holder_id"], tier2["amount"], tier2["tier"]) == (A, 40_000, 2)
    assert [s["holder_id"] for s in tier2["path"]] == [B, A]
    assert tier2["path"][0]["voucher_id"] == root["voucher_id"]
    assert tier2["confirmation"]["receivable_id"] == receivable
    kept = api.get(f"{V1}/vouchers", headers=as_b, params={"status": "active"}).json()["items"]
    assert [(v["holder_id"], v["amount"]) for v in kept if v["holder_id"] == B] == [(B, 60_000)]
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/transfer", headers=as_b,
                    json={"to": A, "amount": 1}).status_code == 409, "spent twice"

    # tier 2 finances its part at the programme's advance rate; once only; officers cannot
    assert api.post(f"{V1}/vouchers/{tier2['voucher_id']}/finance",
                    headers=as_officer).status_code == 403
    financed = api.post(f"{V1}/vouchers/{tier2['voucher_id']}/finance", headers=as_a)
    assert financed.status_code == 200, financed.text
    assert financed.json()["financed_amount"] == 32_000 and financed.json()["status"] == "financed"
    assert api.post(f"{V1}/vouchers/{tier2['voucher_id']}/finance",
                    headers=as_a).status_code == 409

    chain = api.get(f"{V1}/programmes/mill-chain/chain", headers=as_core).json()
    assert {m["borrower_id"] for m in chain["members"]} == {CORE, A, B}
    assert len(chain["vouchers"]) == 3
    # what B sees of the chain: its vouchers only, not A's
    b_view = api.get(f"{V1}/programmes/mill-chain/chain", headers=as_b).json()
    assert {v["holder_id"] for v in b_view["vouchers"]} == {B}

    # at maturity the core pays: the bank gets what it financed, holders the rest
    assert api.post(f"{V1}/vouchers/{tier2['voucher_id']}/pay", headers=as_core,
                    json={"amount": 40_000}).status_code == 404, "only a root is paid"
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/pay", headers=as_core,
                    json={"amount": 99_999}).status_code == 422
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/pay", headers=as_b,
                    json={"amount": 100_000}).status_code == 404
    paid = api.post(f"{V1}/vouchers/{root['voucher_id']}/pay", headers=as_core,
                    json={"amount": 100_000})
    assert paid.status_code == 201, paid.text
    payouts = sorted((p["payee"], p["amount"]) for p in paid.json()["payouts"])
    assert payouts == sorted([(A, 8_000), (B, 60_000), ("bank", 32_000)])
    assert sum(p for _, p in payouts) == 100_000
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/pay", headers=as_core,
                    json={"amount": 100_000}).status_code == 409
    with world.connect() as conn:
        states = conn.execute("SELECT status, count(*) FROM vouchers GROUP BY status"
                              " ORDER BY status").fetchall()
    assert states == [("settled", 2), ("spent", 1)]
    assert api.get(f"{V1}/programmes/mill-chain", headers=as_officer).json()["used"] == 0


def test_the_programme_line_bounds_confirmations(
        api: TestClient, programme: dict[str, Any], as_core: dict[str, str],
        as_b: dict[str, str]) -> None:
    first = payable(api, as_b, FAC[B], 200_000)
    second = payable(api, as_b, FAC[B], 60_000)
    assert api.post(f"{V1}/receivables/{first}/confirm", headers=as_core).status_code == 201
    over = api.post(f"{V1}/receivables/{second}/confirm", headers=as_core)
    assert over.status_code == 409 and "50,000.00 left" in over.json()["detail"]


def test_a_voucher_is_spent_once_under_concurrent_transfers(
        api: TestClient, world: World, programme: dict[str, Any], as_core: dict[str, str],
        as_b: dict[str, str]) -> None:
    receivable = payable(api, as_b, FAC[B], 10_000)
    root = api.post(f"{V1}/receivables/{receivable}/confirm", headers=as_core).json()
    wins: list[str] = []
    refusals: list[str] = []
    start = threading.Barrier(12)

    def spend(n: int) -> None:
        with psycopg.connect(world.url, autocommit=True) as conn:
            start.wait()
            try:
                if n % 2:
                    financing.transfer_voucher(conn, root["voucher_id"], A, 1_000 + n, holder=B,
                                               by="race", now=datetime.now(UTC))
                else:
                    financing.finance_voucher(conn, root["voucher_id"], holder=B, by="race",
                                              now=datetime.now(UTC))
                wins.append(str(n))
            except LendingError as exc:
                refusals.append(str(exc))

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(wins) == 1, (wins, refusals)
    assert len(refusals) == 11 and all("spent only once" in r for r in refusals), refusals
    with world.connect() as conn:
        leaves = conn.execute("SELECT coalesce(sum(amount), 0) FROM vouchers WHERE root_id = %s"
                              " AND status IN ('active', 'financed')",
                              (root["voucher_id"],)).fetchone()
    assert leaves is not None and Decimal(leaves[0]) == Decimal(10_000), "amounts not conserved"


def test_a_late_payment_alerts_the_programme_and_every_holder_until_paid(
        api: TestClient, world: World, programme: dict[str, Any], as_core: dict[str, str],
        as_b: dict[str, str]) -> None:
    receivable = payable(api, as_b, FAC[B], 30_000, days=5)
    root = api.post(f"{V1}/receivables/{receivable}/confirm", headers=as_core).json()
    api.post(f"{V1}/vouchers/{root['voucher_id']}/transfer", headers=as_b,
             json={"to": A, "amount": 10_000})
    late = datetime.now(UTC) + timedelta(days=6)
    with world.connect() as conn:
        assert financing.sweep(conn, late).late == 3
        assert financing.sweep(conn, late).late == 0, "raised twice"
        alerts = conn.execute("SELECT facility_id, severity FROM alerts WHERE type ="
                              " 'payable_late' AND status = 'open' ORDER BY facility_id").fetchall()
    assert alerts == [(FAC[A], "warning"), (FAC[B], "warning"),
                      (programme["facility_id"], "critical")]
    assert api.post(f"{V1}/vouchers/{root['voucher_id']}/pay", headers=as_core,
                    json={"amount": 30_000}).status_code == 201
    with world.connect() as conn:
        assert conn.execute("SELECT count(*) FROM alerts WHERE type = 'payable_late'"
                            " AND status <> 'resolved'").fetchone() == (0,)
