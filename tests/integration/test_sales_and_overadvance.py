"""Overadvance and sales collapse against a real PostgreSQL and the real lending engine: an
overdrawn facility raises `overadvance` with the amount to repay and the repayment clears it;
sales are judged by closed day (three days without sales raise `sales_collapse`, today's first
invoice waits for its day to close) and a history posted invoice by invoice, the engine
recomputing after every one, raises at most one alert, once the load has settled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api import scoped_reads
from lending.domain.rules import RulePolicy
from lending.domain.sales import last_closed_day
from lending.engine import LendingEngine
from lending.financing import repay as post_repayment
from lending.operations import load_portfolio, record_sale
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import Accepted, DeviceInfo, Reading
from telemetry.queries import register_devices
from telemetry.writer import Batch, write_batch

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

TENANT = "risk"
DEVICE = "wh-risk"
UNITS = 1000
UNIT_KG = 20.0
POLICY = RulePolicy()


def repay(conn: psycopg.Connection, facility_id: str, amount: float, now: datetime) -> float:
    """Post a repayment; the facility's derived outstanding after it."""
    return float(post_repayment(conn, facility_id, amount, now)["outstanding"])


def portfolio(now: datetime, outstanding: float) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel", "unit": "t", "unit_kg": 1000}],
        "borrowers": [{"id": "b", "name": "B", "tenant": TENANT}],
        "facilities": [{"id": "fac", "borrower": "b", "line": 1e6, "outstanding": outstanding,
                        "terms": {"advance_rate": 0.5}}],
        "lots": [{"id": "lot", "facility": "fac", "commodity": "steel",
                  "declared_quantity": UNITS, "unit_weight_kg": UNIT_KG, "registration_no": "R1",
                  "sensors": [DEVICE], "business_hours": (0, 24)}],
        "prices": [{"commodity": "steel", "time": now - timedelta(days=d), "price": 4000.0}
                   for d in range(5)],
    })


def loaded(url: str, outstanding: float) -> str:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        register_devices(conn, [DeviceInfo(DEVICE, TENANT, "warehouse")])
        load_portfolio(conn, portfolio(now, outstanding), now)
    return url


def store_readings(url: str, n: int = 20) -> None:
    """A steady lot (weight and count agree) through the gateway's writer."""
    end = datetime.now(UTC)
    accepted = [Accepted(DEVICE, TENANT, 1, i, end - timedelta(seconds=n - 1 - i), end,
                         (Reading("weight_kg", UNITS * UNIT_KG + (i % 3)),
                          Reading("rfid_count", UNITS)))
                for i in range(n)]
    with psycopg.connect(url) as conn:
        write_batch(conn, Batch(accepted=accepted))


def alerts_of(url: str, kind: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status, message, evidence, severity FROM alerts WHERE type = %s"
                            " ORDER BY id", (kind,)).fetchall()
    return [{"status": r[0], "message": r[1], "evidence": r[2], "severity": r[3]} for r in rows]


def events_of(url: str, kind: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT e.kind FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
            " WHERE a.type = %s ORDER BY e.id", (kind,)).fetchall()]


class Clock:
    """The engine's clock: the wall clock plus a shift a test moves forward."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine_of(clock: Clock) -> Iterator[Any]:
    engines: list[LendingEngine] = []

    def make(url: str) -> LendingEngine:
        engines.append(LendingEngine(url, clock=clock))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


# --- overadvance -----------------------------------------------------------------------------------

def test_an_overdrawn_facility_raises_overadvance_and_a_repayment_clears_it(
        migrated_db: str, engine_of: Any) -> None:
    url = loaded(migrated_db, outstanding=50_000.0)
    store_readings(url)
    engine = engine_of(url)
    [assessment] = engine.recompute(["fac"])
    limit = assessment.snapshot.limit
    # 1,000 bags × 0.02 t × 4,000 × (1 − 5 % haircut) = 76,000; × 50 % advance = 38,000
    assert limit == pytest.approx(38_000.0)
    [over] = alerts_of(url, "overadvance")
    assert (over["status"], over["severity"]) == ("open", "critical")
    repay_needed = over["evidence"]["repay_needed"]
    assert repay_needed == pytest.approx(50_000.0 - 38_000.0 * 0.98, abs=0.01)
    assert f"repay {repay_needed:,.2f} CNY" in over["message"]
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT collateral_value, trusted_collateral_value, ltv"
                           " FROM limit_snapshots ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    assert float(row[1]) == pytest.approx(76_000.0) and float(row[0]) == pytest.approx(76_000.0)
    assert row[2] == pytest.approx(50_000.0 / 76_000.0)
    with psycopg.connect(url) as conn:  # the API's read model shows what LTV is measured on
        shown = scoped_reads.facility_limit(conn, None, "fac")
    assert shown is not None
    assert shown["trusted_collateral_value"] == pytest.approx(76_000.0)
    assert shown["ltv_status"] == "ok"
    # Repaying only the excess leaves the facility on its limit: the alert stays open.
    with psycopg.connect(url) as conn:
        repay(conn, "fac", 12_000.0, datetime.now(UTC))
    engine.recompute(["fac"])
    assert [a["status"] for a in alerts_of(url, "overadvance")] == ["open"]
    # Repaying what the alert asked for clears it.
    with psycopg.connect(url) as conn:
        repay(conn, "fac", repay_needed - 12_000.0, datetime.now(UTC))
    engine.recompute(["fac"])
    assert [a["status"] for a in alerts_of(url, "overadvance")] == ["resolved"]
    assert events_of(url, "overadvance") == ["raised", "resolved"]


# --- sales -----------------------------------------------------------------------------------------

def local_noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC) - timedelta(
        hours=POLICY.utc_offset_hours)


def post_history_and_judge(url: str, engine: LendingEngine, clock: Clock, days: list[date],
                           per_day: int = 2) -> list[int]:
    """Post each day's sales as ``per_day`` invoices, one at a time, recomputing after each; the
    number of sales-collapse alerts after each recompute."""
    counts = []
    for i, day in enumerate(days):
        for k in range(per_day):
            amount = (10_000.0 + 300.0 * ((i * 7) % 5)) / per_day
            with psycopg.connect(url) as conn:
                record_sale(conn, "fac", amount, local_noon(day) + timedelta(hours=k))
            engine.recompute(["fac"])
            counts.append(len(alerts_of(url, "sales_collapse")))
    return counts


def test_three_days_without_sales_raise_one_alert_once_the_history_is_loaded(
        migrated_db: str, engine_of: Any, clock: Clock) -> None:
    url = loaded(migrated_db, outstanding=0.0)
    engine = engine_of(url)
    settled = datetime.now(UTC) + timedelta(hours=1)
    last = last_closed_day(settled, POLICY.utc_offset_hours, POLICY.sales_close_grace)
    days = [last - timedelta(days=d) for d in range(32, 2, -1)]  # 30 days, then 3 without sales
    counts = post_history_and_judge(url, engine, clock, days)
    assert set(counts) == {0}  # nothing while the history was arriving
    clock.shift = timedelta(hours=1)  # the load has settled: judged once
    engine.recompute(["fac"])
    [collapse] = alerts_of(url, "sales_collapse")
    assert collapse["status"] == "open"
    assert collapse["evidence"]["velocity"][-3:] == [0.0, 0.0, 0.0]
    assert collapse["evidence"]["last_closed_day"] == last.isoformat()
    engine.recompute(["fac"])
    assert events_of(url, "sales_collapse") == ["raised"]


def test_a_normal_history_posted_invoice_by_invoice_raises_nothing(
        migrated_db: str, engine_of: Any, clock: Clock) -> None:
    url = loaded(migrated_db, outstanding=0.0)
    engine = engine_of(url)
    settled = datetime.now(UTC) + timedelta(minutes=30)
    last = last_closed_day(settled, POLICY.utc_offset_hours, POLICY.sales_close_grace)
    days = [last - timedelta(days=d) for d in range(29, -1, -1)]
    assert set(post_history_and_judge(url, engine, clock, days)) == {0}
    clock.shift = timedelta(minutes=30)
    engine.recompute(["fac"])
    # today's first, small invoice is not held against full days
    with psycopg.connect(url) as conn:
        record_sale(conn, "fac", 150.0, datetime.now(UTC))
    engine.recompute(["fac"])
    assert alerts_of(url, "sales_collapse") == []
    assert events_of(url, "sales_collapse") == []
