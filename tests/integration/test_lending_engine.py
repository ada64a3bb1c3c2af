"""The lending engine's triggers against a real PostgreSQL: readings stored by the gateway's own
writer (NOTIFY pw_ingest at commit), portfolio changes (NOTIFY pw_lending), the passing of time
(tick), two engines racing on one facility, and a database outage under a running engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from lending.domain.model import PricePoint
from lending.domain.rules import RulePolicy
from lending.domain.sales import last_closed_day
from lending.engine import LendingEngine, start_engine_thread
from lending.operations import load_portfolio, post_prices, record_sale
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import Accepted, DeviceInfo, Reading
from telemetry.queries import register_devices
from telemetry.writer import Batch, write_batch
from tests.support import PgServer, wait_until

pytestmark = pytest.mark.integration

TENANT = "eng"
DEVICE = "wh-eng"
UNITS = 1000
UNIT_KG = 20.0


def portfolio(now: datetime) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel", "unit": "t", "unit_kg": 1000}],
        "borrowers": [{"id": "b", "name": "B", "tenant": TENANT}],
        "facilities": [{"id": "fac", "borrower": "b", "line": 1e6, "outstanding": 10_000,
                        "terms": {"advance_rate": 0.5}}],
        "lots": [{"id": "lot", "facility": "fac", "commodity": "steel",
                  "declared_quantity": UNITS, "unit_weight_kg": UNIT_KG, "registration_no": "R1",
                  "sensors": [DEVICE], "business_hours": (0, 24)}],
        "prices": [{"commodity": "steel", "time": now - timedelta(days=d), "price": 4000.0}
                   for d in range(5)],
    })


@pytest.fixture
def db(migrated_db: str) -> str:
    now = datetime.now(UTC)
    with psycopg.connect(migrated_db) as conn:
        register_devices(conn, [DeviceInfo(DEVICE, TENANT, "warehouse")])
        load_portfolio(conn, portfolio(now), now)
    return migrated_db


def store(url: str, weights: list[float], start_seq: int = 0, spacing_s: float = 1.0,
          end: datetime | None = None) -> None:
    """Readings written by the gateway's writer (the transaction that sends NOTIFY pw_ingest)."""
    end = end or datetime.now(UTC)
    received = datetime.now(UTC)
    accepted = [
        Accepted(DEVICE, TENANT, 1, start_seq + i,
                 end - timedelta(seconds=spacing_s * (len(weights) - 1 - i)), received,
                 (Reading("weight_kg", w), Reading("rfid_count", round(w / UNIT_KG))))
        for i, w in enumerate(weights)]
    with psycopg.connect(url) as conn:
        write_batch(conn, Batch(accepted=accepted))


def alerts(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT type, status FROM alerts ORDER BY id").fetchall()]


def latest_limit(url: str) -> float | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT credit_limit FROM limit_snapshots ORDER BY time DESC, id DESC"
                           " LIMIT 1").fetchone()
    return None if row is None else float(row[0])


@pytest.fixture
def running(db: str) -> Iterator[LendingEngine]:
    engine = LendingEngine(db, tick_s=60.0)
    stop = threading.Event()
    thread = start_engine_thread(engine, stop)
    yield engine
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_stored_readings_wake_the_engine_and_a_theft_raises_one_alert(db: str,
                                                                      running: LendingEngine) -> None:
    steady = [UNITS * UNIT_KG + (i % 3) for i in range(20)]
    store(db, steady)
    assert wait_until(lambda: (lim := latest_limit(db)) is not None and lim > 0, timeout=10)
    before = latest_limit(db)
    assert before is not None
    later = datetime.now(UTC) + timedelta(seconds=30)  # device times after the steady readings
    store(db, [UNITS * UNIT_KG * 0.6] * 3, start_seq=100, end=later)
    assert wait_until(lambda: ("unauthorised_outbound", "open") in alerts(db), timeout=10), alerts(db)
    assert wait_until(lambda: (latest_limit(db) or before) < before * 0.7, timeout=10)
    # The same readings again (a redelivery) change nothing: no second alert.
    store(db, [UNITS * UNIT_KG * 0.6] * 3, start_seq=100, end=later)
    cycles = running.stats.cycles
    assert wait_until(lambda: running.stats.cycles > cycles, timeout=10)
    assert [a for a in alerts(db) if a[0] == "unauthorised_outbound"] == [
        ("unauthorised_outbound", "open")]


def test_a_price_post_wakes_the_engine(db: str, running: LendingEngine) -> None:
    store(db, [UNITS * UNIT_KG] * 15)
    assert wait_until(lambda: (lim := latest_limit(db)) is not None and lim > 0, timeout=10)
    before = latest_limit(db)
    assert before is not None
    with psycopg.connect(db) as conn:
        post_prices(conn, [PricePoint("steel", datetime.now(UTC), 2000.0)])
    assert wait_until(lambda: (latest_limit(db) or before) < before * 0.6, timeout=10), (
        before, latest_limit(db))


def test_the_engine_exports_its_lag_and_last_full_pass(db: str, running: LendingEngine) -> None:
    registry = running.metrics.registry

    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    started = time.time()
    assert value("pledgewatch_engine_last_pass_timestamp_seconds") > started - 60  # first pass
    assessed = value("pledgewatch_engine_assessed_total")
    store(db, [UNITS * UNIT_KG] * 5)
    assert wait_until(lambda: value("pledgewatch_engine_assessed_total") > assessed, timeout=10)
    assert wait_until(lambda: value("pledgewatch_engine_lag_seconds") > 0, timeout=10)
    assert value("pledgewatch_engine_lag_seconds") < 10
    assert wait_until(lambda: value("pledgewatch_engine_lag_seconds") == 0, timeout=10)


def test_time_passing_alone_makes_a_silent_lot_stale(db: str) -> None:
    store(db, [UNITS * UNIT_KG] * 15)
    clock = [datetime.now(UTC)]
    engine = LendingEngine(db, clock=lambda: clock[0])
    try:
        engine.recompute(None)
        assert ("sensor_stale", "open") not in alerts(db)
        clock[0] += timedelta(minutes=20)  # no new data, just time
        engine.recompute(None)
        assert ("sensor_stale", "open") in alerts(db)
        snapshot = engine.recompute(["fac"])[0].snapshot
        assert snapshot.lots[0].trust_factors["stale"] < 0.5
    finally:
        engine.close()


def test_two_engines_racing_on_one_facility_store_one_alert(db: str) -> None:
    store(db, [UNITS * UNIT_KG + (i % 3) for i in range(20)])
    store(db, [UNITS * UNIT_KG * 0.5] * 3, start_seq=100, end=datetime.now(UTC) + timedelta(seconds=30))
    engines = [LendingEngine(db) for _ in range(2)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def race(engine: LendingEngine) -> None:
        try:
            barrier.wait(5)
            for _ in range(3):
                engine.recompute(["fac"])
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for engine in engines:
        engine.close()
    assert not errors, errors
    assert [a for a in alerts(db) if a[0] == "unauthorised_outbound"] == [
        ("unauthorised_outbound", "open")]


def test_the_engine_rides_out_a_database_outage(pg: PgServer, db: str,
                                                running: LendingEngine) -> None:
    store(db, [UNITS * UNIT_KG] * 15)
    assert wait_until(lambda: (lim := latest_limit(db)) is not None and lim > 0, timeout=10)
    with pg.outage(db):
        wait_until(lambda: False, timeout=1.0)
    # Back up: new readings are followed again.
    store(db, [UNITS * UNIT_KG * 0.5] * 3, start_seq=200, end=datetime.now(UTC) + timedelta(seconds=30))
    assert wait_until(lambda: ("unauthorised_outbound", "open") in alerts(db), timeout=20), (
        alerts(db))


def test_a_sales_collapse_raises_an_early_warning(db: str) -> None:
    store(db, [UNITS * UNIT_KG] * 15)
    shift = [timedelta(0)]  # the engine's clock, moved past the settle time of the history posted
    settled = datetime.now(UTC) + timedelta(hours=1)
    last = last_closed_day(settled, RulePolicy().utc_offset_hours, RulePolicy().sales_close_grace)

    def at_noon(day: date) -> datetime:  # 12:00 at the sites (UTC+8)
        return datetime(day.year, day.month, day.day, 4, tzinfo=UTC)

    with psycopg.connect(db) as conn:
        for day in range(20, 0, -1):  # three weeks of steady daily sales ...
            record_sale(conn, "fac", 50_000.0 + 1_000.0 * (day % 5),
                        at_noon(last - timedelta(days=day)))
    engine = LendingEngine(db, clock=lambda: datetime.now(UTC) + shift[0])
    try:
        engine.recompute(["fac"])
        assert ("sales_collapse", "open") not in alerts(db)
        with psycopg.connect(db) as conn:  # ... then the last closed day's sales collapse
            record_sale(conn, "fac", 2_000.0, at_noon(last))
        engine.recompute(["fac"])
        assert ("sales_collapse", "open") not in alerts(db)  # a history still arriving: held
        shift[0] = timedelta(hours=1)  # settled: judged once
        engine.recompute(["fac"])
        assert ("sales_collapse", "open") in alerts(db)
        with psycopg.connect(db) as conn:
            evidence = conn.execute("SELECT evidence FROM alerts WHERE type = 'sales_collapse'"
                                    ).fetchone()[0]  # type: ignore[index]
        assert evidence["robust_z"] < -3.5 and evidence["velocity"][-1] == 2_000.0
    finally:
        engine.close()


def test_back_filled_prices_reach_a_running_engines_price_cache(db: str,
                                                               running: LendingEngine) -> None:
    store(db, [UNITS * UNIT_KG] * 15)
    assert wait_until(lambda: (lim := latest_limit(db)) is not None and lim > 0, timeout=10)
    before = latest_limit(db)
    assert before is not None
    # Prices older than the newest one the engine has seen: a wild history, filled in late.
    now = datetime.now(UTC)
    wild = [PricePoint("steel", now - timedelta(days=30 - d), 4000.0 * (1.3 if d % 2 else 0.7))
            for d in range(25)]
    with psycopg.connect(db) as conn:
        post_prices(conn, wild)
    assert wait_until(lambda: (latest_limit(db) or before) < before * 0.9, timeout=10), (
        before, latest_limit(db))
