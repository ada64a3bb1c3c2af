"""Financing against the live limit over the API and the real database: drawdowns decided in the
transaction that locks the facility, idempotent retries, the officers' queue, the blacklist,
repayments that pay the first-maturing drawdowns, outstanding derived (never set by hand), overdue
alerts, and 16 concurrent clients that never overdraw the limit."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.accounts import issue_api_key
from lending import financing
from lending.engine import LendingEngine
from pledgewatch.http import create_app
from telemetry.contract.payload import Accepted, Reading
from telemetry.writer import Batch, write_batch
from tests.integration.api.conftest import FAC, A, B, World, settings

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def live_limit(world: World) -> None:
    """The sensors of borrower A's wheat lots report their full weight, and the engine gives the
    facility a live limit to draw on."""
    end = datetime.now(UTC)
    accepted = [
        Accepted(device, "acme", 1, i, end - timedelta(seconds=30 - i), end,
                 (Reading("weight_kg", units * 1000.0 + i % 3), *extra))
        for device, units, extra in (("wh-t-0001", 100, (Reading("rfid_count", 100),)),
                                     ("wh-t-0002", 40, ()))
        for i in range(30)]
    with psycopg.connect(world.url) as conn:
        write_batch(conn, Batch(accepted=accepted))
    engine = LendingEngine(world.url)
    engine.recompute([FAC[A]])
    engine.close()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def clear_alerts(world: World, facility_id: str) -> None:
    with world.connect() as conn:
        conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = now(),"
                     " resolved_by = 'test', comment = 'test' WHERE facility_id = %s", (facility_id,))


def limit_of(world: World, facility_id: str) -> Decimal:
    with world.connect() as conn:
        row = conn.execute("SELECT credit_limit FROM limit_snapshots WHERE facility_id = %s"
                           " ORDER BY time DESC, id DESC LIMIT 1", (facility_id,)).fetchone()
    assert row is not None
    return Decimal(row[0])


def outstanding(world: World, facility_id: str) -> Decimal:
    with world.connect() as conn:
        row = conn.execute("SELECT outstanding FROM facilities WHERE facility_id = %s",
                           (facility_id,)).fetchone()
    assert row is not None
    return Decimal(row[0])


def draw(api: TestClient, who: dict[str, str], amount: float, facility: str = FAC[A],
         headers: dict[str, str] | None = None, **extra: Any) -> Any:
    body = {"facility_id": facility, "amount": amount, "currency": "CNY", "tenor_days": 90,
            "purpose": "buy wheat", **extra}
    return api.post("/api/v1/drawdowns", json=body, headers={**who, **(headers or key())})


def test_a_drawdown_within_the_limit_is_approved_at_once_and_a_retry_never_pays_twice(
        api: TestClient, world: World, as_a: dict[str, str], as_officer: dict[str, str]) -> None:
    clear_alerts(world, FAC[A])
    available = limit_of(world, FAC[A]) - outstanding(world, FAC[A])
    assert available > 10_000, "the test portfolio leaves room to draw"
    before = outstanding(world, FAC[A])
    retry = key()
    r = draw(api, as_a, 10_000, headers=retry)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "approved" and first["decided_by"] == "auto" and first["reasons"] == []
    assert first["maturity"] is not None and first["borrower_id"] == A
    assert outstanding(world, FAC[A]) == before + 10_000

    again = draw(api, as_a, 10_000, headers=retry)
    assert again.status_code == 200 and again.json()["drawdown_id"] == first["drawdown_id"]
    assert outstanding(world, FAC[A]) == before + 10_000, "a retried request paid twice"
    other = draw(api, as_a, 20_000, headers=retry)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    missing = api.post("/api/v1/drawdowns", headers=as_a, json={
        "facility_id": FAC[A], "amount": 1, "currency": "CNY", "tenor_days": 1, "purpose": "x"})
    assert missing.status_code == 422 and "Idempotency-Key" in missing.json()["detail"]

    listed = api.get("/api/v1/drawdowns", headers=as_a, params={"facility_id": FAC[A]}).json()
    ids = {d["drawdown_id"]: d for d in listed["items"]}
    assert first["drawdown_id"] in ids
    assert any(d["source"] == "opening" for d in ids.values()), "the opening balance is a drawdown"
    assert api.get(f"/api/v1/drawdowns/{first['drawdown_id']}",
                   headers={"X-API-Key": world.key[B]}).status_code == 404
    assert draw(api, {"X-API-Key": world.key[B]}, 10, facility=FAC[A]).status_code == 404


def test_over_the_limit_an_alert_or_the_blacklist_queue_a_drawdown_for_an_officer(
        api: TestClient, world: World, as_a: dict[str, str], as_officer: dict[str, str]) -> None:
    # the fixture's open critical (tamper) alert holds every drawdown for an officer
    small = draw(api, as_a, 1_000).json()
    assert small["status"] == "pending"
    assert any("critical alert" in r and "sensor_tamper" in r for r in small["reasons"])
    assert api.post(f"/api/v1/drawdowns/{small['drawdown_id']}/approve",
                    headers=as_a).status_code == 403
    ok = api.post(f"/api/v1/drawdowns/{small['drawdown_id']}/approve", headers=as_officer,
                  json={"comment": "seal replaced, checked on site"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "approved" and ok.json()["decided_by"] == "officer"
    assert api.post(f"/api/v1/drawdowns/{small['drawdown_id']}/reject",
                    headers=as_officer).status_code == 409

    clear_alerts(world, FAC[A])
    available = limit_of(world, FAC[A]) - outstanding(world, FAC[A])
    big = draw(api, as_a, float(available) + 1).json()
    assert big["status"] == "pending"
    assert any("exceeds the available limit" in r for r in big["reasons"]), big["reasons"]
    refused = api.post(f"/api/v1/drawdowns/{big['drawdown_id']}/approve", headers=as_officer)
    assert refused.status_code == 409 and "exceeds" in refused.json()["detail"]
    queue = api.get("/api/v1/drawdowns", headers=as_officer, params={"status": "pending"}).json()
    assert big["drawdown_id"] in {d["drawdown_id"] for d in queue["items"]}
    rejected = api.post(f"/api/v1/drawdowns/{big['drawdown_id']}/reject", headers=as_officer,
                        json={"comment": "over the limit"}).json()
    assert rejected["status"] == "rejected" and rejected["comment"] == "over the limit"

    entry = api.post("/api/v1/blacklist", headers=as_officer,
                     json={"borrower_id": A, "reason": "goods pledged twice elsewhere"})
    assert entry.status_code == 201 and entry.json()["added_by"] == "officer"
    assert api.post("/api/v1/blacklist", headers=as_officer,
                    json={"borrower_id": A, "reason": "again"}).status_code == 409
    assert api.post("/api/v1/blacklist", headers=as_a,
                    json={"borrower_id": B, "reason": "x"}).status_code == 403
    held = draw(api, as_a, 100).json()
    assert held["status"] == "pending"
    assert any("blacklist" in r and "pledged twice" in r for r in held["reasons"])
    assert api.post(f"/api/v1/drawdowns/{held['drawdown_id']}/approve",
                    headers=as_officer).status_code == 409
    removed = api.delete(f"/api/v1/blacklist/{A}", headers=as_officer).json()
    assert removed["removed_by"] == "officer"
    history = api.get("/api/v1/blacklist", headers=as_officer,
                      params={"include_removed": True}).json()
    assert [e["borrower_id"] for e in history] == [A]
    assert api.get("/api/v1/blacklist", headers=as_officer).json() == []
    assert draw(api, as_a, 100).json()["status"] == "approved"


HOSTILE: list[dict[str, Any]] = [
    {"amount": -5}, {"amount": 0}, {"amount": 1.005}, {"amount": "100"}, {"amount": True},
    {"amount": 1e300}, {"amount": None}, {"tenor_days": 0}, {"tenor_days": 99999},
    {"tenor_days": 1.5}, {"currency": "cny"}, {"currency": "USD"}, {"purpose": ""},
    {"purpose": "x" * 501}, {"facility_id": "../etc"}, {"surprise": 1},
]


def test_hostile_drawdown_bodies_get_a_clear_error_and_change_nothing(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    clear_alerts(world, FAC[A])
    before = outstanding(world, FAC[A])
    for change in HOSTILE:
        r = draw(api, as_a, **{"amount": 10.0, **change})
        assert r.status_code == 422, (change, r.text)
        assert r.json()["detail"], change
    assert outstanding(world, FAC[A]) == before
    with world.connect() as conn:
        assert conn.execute("SELECT count(*) FROM drawdowns WHERE source = 'request'"
                            ).fetchone() == (0,)
    for bad_key in ("short", "x" * 200, "bad key with spaces"):
        r = draw(api, as_a, 10, headers={"Idempotency-Key": bad_key})
        assert r.status_code == 422, bad_key


def test_repayments_pay_the_first_maturing_drawdowns_and_outstanding_is_never_set_by_hand(
        api: TestClient, world: World, as_a: dict[str, str], as_officer: dict[str, str]) -> None:
    clear_alerts(world, FAC[A])
    opening = outstanding(world, FAC[A])  # the portfolio's opening drawdown (10 years)
    short = draw(api, as_a, 3_000, tenor_days=10).json()
    long = draw(api, as_a, 2_000, tenor_days=200).json()
    assert outstanding(world, FAC[A]) == opening + 5_000
    paid = api.post("/api/v1/repayments", headers=as_a,
                    json={"facility_id": FAC[A], "amount": 4_000})
    assert paid.status_code == 201, paid.text
    body = paid.json()
    assert body["allocation"] == [{"drawdown_id": short["drawdown_id"], "amount": 3_000.0},
                                  {"drawdown_id": long["drawdown_id"], "amount": 1_000.0}]
    assert body["outstanding"] == float(opening + 1_000) and body["unapplied"] == 0
    assert api.get(f"/api/v1/drawdowns/{short['drawdown_id']}",
                   headers=as_a).json()["status"] == "repaid"
    assert api.post("/api/v1/repayments", headers={"X-API-Key": world.key[B]},
                    json={"facility_id": FAC[A], "amount": 1}).status_code == 404
    for bad in (0, -1, "1", 1.001):
        assert api.post("/api/v1/repayments", headers=as_a,
                        json={"facility_id": FAC[A], "amount": bad}).status_code == 422
    with world.connect() as conn, pytest.raises(psycopg.errors.CheckViolation, match="derived"):
        conn.execute("UPDATE facilities SET outstanding = 0 WHERE facility_id = %s", (FAC[A],))
    assert outstanding(world, FAC[A]) == opening + 1_000


def test_a_drawdown_past_its_maturity_raises_an_overdue_alert_that_repayment_resolves(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    clear_alerts(world, FAC[A])
    d = draw(api, as_a, 500, tenor_days=1).json()
    later = datetime.now(UTC) + timedelta(days=2)
    with world.connect() as conn:
        first = financing.sweep(conn, later)
        assert financing.sweep(conn, later).overdue == 0, "an open alert is not raised twice"
        alert = conn.execute("SELECT type, severity, status, evidence FROM alerts"
                             " WHERE facility_id = %s AND type = 'drawdown_overdue'",
                             (FAC[A],)).fetchall()
    assert first.overdue == 1
    assert [(a[0], a[1], a[2]) for a in alert] == [("drawdown_overdue", "warning", "open")]
    assert alert[0][3]["drawdown_id"] == d["drawdown_id"]
    overdue = api.get("/api/v1/drawdowns", headers=as_a, params={"overdue": True}).json()["items"]
    assert overdue == [], "not overdue by the wall clock yet"
    # pays the 1-day drawdown first (it matures before the opening balance)
    api.post("/api/v1/repayments", headers=as_a, json={"facility_id": FAC[A], "amount": 500})
    with world.connect() as conn:
        status = conn.execute("SELECT status, resolved_by FROM alerts WHERE type ="
                              " 'drawdown_overdue'").fetchone()
    assert status == ("resolved", "system")


def test_sixteen_concurrent_clients_never_draw_more_than_the_limit(world: World) -> None:
    clear_alerts(world, FAC[A])
    available = limit_of(world, FAC[A]) - outstanding(world, FAC[A])
    each = (available / 10).quantize(Decimal("0.01"))  # room for 10 of the 48 requests
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def client(n: int) -> None:
        try:
            with psycopg.connect(world.url, autocommit=True) as conn:
                start.wait()
                for i in range(3):
                    row, _ = financing.request_drawdown(
                        conn, FAC[A], each, "CNY", 30, "race", by=f"client-{n}",
                        idempotency_key=f"race-{n}-{i}", now=datetime.now(UTC))
                    results.append(row["status"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 48
    assert results.count("approved") == 10, results
    with world.connect() as conn:
        drawn = conn.execute("SELECT coalesce(sum(amount), 0) FROM drawdowns WHERE facility_id = %s"
                             " AND purpose = 'race' AND status = 'approved'", (FAC[A],)).fetchone()
    assert drawn is not None and drawn[0] <= available
    assert outstanding(world, FAC[A]) <= limit_of(world, FAC[A])


def test_more_concurrent_enterprises_than_pooled_connections_are_all_answered(
        world: World, tmp_path: Path) -> None:
    """Each request holds a pooled connection while its caller's API key (not cached yet) is
    looked up: the look-up must not wait for the same pool (it would, with as many callers as
    connections, until the pool timeout: 503)."""
    with world.connect() as conn:
        keys = [issue_api_key(conn, A, f"erp-{n}", "admin")[0].secret for n in range(8)]
    app = create_app(world.url, settings=settings(tmp_path, api_pool_size=2))
    answers: list[int] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        start = threading.Barrier(len(keys))

        def call(secret: str) -> None:
            start.wait()
            answers.append(client.get("/api/v1/drawdowns", headers={"X-API-Key": secret},
                                      params={"facility_id": FAC[A]}).status_code)

        threads = [threading.Thread(target=call, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert answers == [200] * len(keys)
