"""Late data and lying sensors against a real PostgreSQL and the real lending engine: a backlog
that arrives after a live message is read (the cache follows arrival, not device time) and
judged; a device clock hours behind does not hide a night-time door; readings the gateway refuses
as out of range are a sensor fault, and the device that sends them stays online."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from gateway.ingest import DeviceRegistry, decode_batch
from lending.engine import LendingEngine
from lending.operations import load_portfolio
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import Accepted, DeviceInfo, Limits, Reading
from telemetry.contract.topics import telemetry_topic
from telemetry.queries import mark_stale_offline, register_devices
from telemetry.writer import Batch, write_batch

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

TENANT = "late"
DEVICE = "wh-late"
UNITS = 800
UNIT_KG = 25.0
WEIGHT = UNITS * UNIT_KG
STEP = timedelta(seconds=15)
# A fixed moment, 21:00 at the site (UTC+8): out of the default business hours 7–19.
NIGHT = (datetime.now(UTC) - timedelta(days=1)).replace(hour=13, minute=0, second=0, microsecond=0)


def portfolio(now: datetime, hours: tuple[int, int] = (7, 19)) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel", "unit": "t", "unit_kg": 1000}],
        "borrowers": [{"id": "b", "name": "B", "tenant": TENANT}],
        "facilities": [{"id": "fac", "borrower": "b", "line": 1e6, "outstanding": 10_000,
                        "terms": {"advance_rate": 0.5}}],
        "lots": [{"id": "lot", "facility": "fac", "commodity": "steel",
                  "declared_quantity": UNITS, "unit_weight_kg": UNIT_KG, "registration_no": "R1",
                  "sensors": [DEVICE], "business_hours": hours}],
        "prices": [{"commodity": "steel", "time": now - timedelta(days=d), "price": 4000.0}
                   for d in range(5)],
    })


def setup(url: str, now: datetime, hours: tuple[int, int] = (7, 19)) -> None:
    with psycopg.connect(url) as conn:
        register_devices(conn, [DeviceInfo(DEVICE, TENANT, "warehouse")])
        load_portfolio(conn, portfolio(now, hours), now)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NIGHT)


@pytest.fixture
def engine(migrated_db: str, clock: Clock) -> Iterator[LendingEngine]:
    eng = LendingEngine(migrated_db, clock=clock)
    yield eng
    eng.close()


def message(seq: int, device_time: datetime, received: datetime, **readings: float
            ) -> Accepted:
    return Accepted(DEVICE, TENANT, 1, seq, device_time, received,
                    tuple(Reading(m, float(v)) for m, v in readings.items()))


def write(url: str, messages: Sequence[Accepted]) -> None:
    """Through the gateway's own writer (the transaction that also sends NOTIFY pw_ingest)."""
    with psycopg.connect(url) as conn:
        write_batch(conn, Batch(accepted=list(messages)))


def alerts(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT type, status, severity, evidence, message FROM alerts"
                            " ORDER BY id").fetchall()
    return {r[0]: {"status": r[1], "severity": r[2], "evidence": r[3], "message": r[4]}
            for r in rows}


def noisy(rng: np.random.Generator, level: float) -> float:
    return round(level + float(rng.normal(0.0, 0.001 * WEIGHT)), 2)


def test_a_backlog_arriving_after_a_live_message_is_read_and_judged(
        migrated_db: str, engine: LendingEngine, clock: Clock) -> None:
    """The device reports every 15 s; it is cut off for 30 minutes, during which 10 % of the goods
    leave and its tamper switch is set for a minute. On reconnecting it first sends a live
    heartbeat, then its backlog. The old cache (a cursor on the newest device time) never read
    the backlog; the arrival cursor reads it and the engine raises on what is inside."""
    rng = np.random.default_rng(7)
    start = NIGHT - timedelta(minutes=45)
    setup(migrated_db, NIGHT, hours=(0, 24))
    live = [message(i, start + STEP * i, start + STEP * i, weight_kg=noisy(rng, WEIGHT),
                    rfid_count=UNITS, tamper=0, door_open=0) for i in range(20)]
    write(migrated_db, live)
    clock.now = live[-1].received_at + timedelta(seconds=1)
    engine.recompute(["fac"])
    assert alerts(migrated_db) == {}

    cut_off = live[-1].device_time
    backlog_times = [cut_off + STEP * (k + 1) for k in range(120)]  # 30 minutes
    theft_at = cut_off + timedelta(minutes=10)
    tamper_from, tamper_to = cut_off + timedelta(minutes=15), cut_off + timedelta(minutes=16)
    reconnect = backlog_times[-1] + STEP
    heartbeat = message(1000, reconnect, reconnect, temp_c=18.0, door_open=0)
    write(migrated_db, [heartbeat])  # live first ...
    clock.now = reconnect + timedelta(seconds=1)
    engine.recompute(["fac"])
    assert "unauthorised_outbound" not in alerts(migrated_db)

    flushed = reconnect + timedelta(seconds=20)  # ... then the backlog
    backlog = [message(100 + k, t, flushed,
                       weight_kg=noisy(rng, WEIGHT * (0.9 if t >= theft_at else 1.0)),
                       rfid_count=UNITS * 0.9 if t >= theft_at else UNITS,
                       tamper=1 if tamper_from <= t < tamper_to else 0, door_open=0)
               for k, t in enumerate(backlog_times)]
    write(migrated_db, backlog)
    clock.now = flushed + timedelta(seconds=1)
    engine.recompute(["fac"])

    cached = [t for t, _ in engine.cache.get(DEVICE, "weight_kg")]
    assert cached == sorted(cached), "late readings are slotted in device-time order"
    history = engine.cache.history(DEVICE, "weight_kg")
    assert history is not None and list(history.times_s) == sorted(history.times_s)
    assert history.times_s[-1] == backlog_times[-1].timestamp()
    assert set(backlog_times) & set(cached), "the backlog reached the engine's cache"
    assert cached[-1] == backlog_times[-1]
    found = alerts(migrated_db)
    assert found.get("unauthorised_outbound", {}).get("status") == "open", found
    assert found["unauthorised_outbound"]["severity"] == "critical"
    assert found.get("sensor_tamper", {}).get("status") == "open", found
    assert "clock_skew" not in found, "a backlog is late data, not a slow clock"

    # The same backlog delivered again (a redelivery) is read once: nothing new, no duplicates.
    write(migrated_db, backlog)
    engine.recompute(["fac"])
    again = [t for t, _ in engine.cache.get(DEVICE, "weight_kg")]
    assert again == cached and len(set(again)) == len(again)


def test_a_load_cell_replaying_its_readings_of_90_minutes_ago_is_caught(
        migrated_db: str, engine: LendingEngine, clock: Clock) -> None:
    """Three hours at 5 s; for the last ten minutes the load cell and RFID reader replay what
    they said 90 minutes earlier, while goods leave. The engine's window is one hour; its
    compact history of three hours holds the recording."""
    setup(migrated_db, NIGHT, hours=(0, 24))
    rng = np.random.default_rng(13)
    n, step = 2160, timedelta(seconds=5)
    start = NIGHT - step * n
    weights = [noisy(rng, WEIGHT) for _ in range(n)]
    counts = [UNITS - (int(rng.integers(8, 17)) if rng.random() < 0.2 else 0) for _ in range(n)]
    replay_from, lag = n - 120, 1080
    for i in range(replay_from, n):
        weights[i], counts[i] = weights[i - lag], counts[i - lag]
    stamps = [start + step * (i + 1) for i in range(n)]
    write(migrated_db, [message(i, t, t, weight_kg=weights[i], rfid_count=counts[i], door_open=0)
                        for i, t in enumerate(stamps[:replay_from])])
    clock.now = stamps[replay_from - 1] + timedelta(seconds=1)
    engine.recompute(["fac"])
    assert "sensor_spoofing" not in alerts(migrated_db)
    write(migrated_db, [message(i, stamps[i], stamps[i], weight_kg=weights[i],
                                rfid_count=counts[i], door_open=0)
                        for i in range(replay_from, n)])
    clock.now = NIGHT
    (result,) = engine.recompute(["fac"])
    spoof = alerts(migrated_db).get("sensor_spoofing")
    assert spoof is not None and spoof["severity"] == "critical", alerts(migrated_db)
    replays = spoof["evidence"]["replayed"]
    assert set(replays) == {"weight_kg", "rfid_count"}
    assert replays["weight_kg"]["lag_s"] == pytest.approx(lag * 5.0, abs=5)
    (line,) = result.snapshot.lots
    assert line.trust_factors["replayed_series"] == pytest.approx(0.1)


def test_a_device_clock_hours_behind_does_not_hide_a_door_at_night(
        migrated_db: str, engine: LendingEngine, clock: Clock) -> None:
    """21:00 at the site, outside business hours 7–19. The device's clock is 2.5 h behind: its
    readings say 18:30, inside them. The door rule judges by when the readings arrived."""
    setup(migrated_db, NIGHT)
    rng = np.random.default_rng(3)
    behind = timedelta(hours=2, minutes=30)
    received = [NIGHT - timedelta(minutes=10) + STEP * i for i in range(40)]
    write(migrated_db, [message(i, r - behind, r, weight_kg=noisy(rng, WEIGHT), rfid_count=UNITS,
                                door_open=1 if i == 38 else 0)
                        for i, r in enumerate(received)])
    clock.now = NIGHT
    result = engine.recompute(["fac"])
    found = alerts(migrated_db)
    outbound = found.get("unauthorised_outbound")
    assert outbound is not None and outbound["status"] == "open", found
    (door,) = outbound["evidence"]["door_open_out_of_hours"]
    opened = datetime.fromisoformat(door)
    assert abs((opened - received[38]).total_seconds()) < 60, "judged by its arrival, 21:00"
    skew = found.get("clock_skew")
    assert skew is not None and skew["severity"] == "warning"
    assert skew["evidence"]["offsets_s"][DEVICE] == pytest.approx(behind.total_seconds(), abs=60)
    (line,) = result[0].snapshot.lots
    assert "clock_skew" in line.trust_factors


def registry_of(url: str) -> DeviceRegistry:
    registry = DeviceRegistry(refresh_s=0.0)
    with psycopg.connect(url) as conn:
        registry.load(conn)
    return registry


def test_refused_out_of_range_readings_are_a_sensor_fault_and_the_device_stays_online(
        migrated_db: str, engine: LendingEngine, clock: Clock) -> None:
    """A load cell whose cable is damaged reports nonsense: the gateway refuses each message as
    out of range (or not finite). The device is talking: it stays online; the lot gets a sensor
    fault (not an offline sensor, not a theft) and its trust falls; its data is still as old as
    its last stored reading (stale)."""
    now = datetime.now(UTC)
    setup(migrated_db, now, hours=(0, 24))
    rng = np.random.default_rng(5)
    good = [message(i, now - timedelta(minutes=10) + STEP * i, now - timedelta(minutes=10) + STEP * i,
                    weight_kg=noisy(rng, WEIGHT), rfid_count=UNITS) for i in range(8)]
    write(migrated_db, good)
    topic = telemetry_topic(TENANT, DEVICE)
    bad: list[tuple[str, bytes, float]] = []
    for k in range(20):  # the last five minutes: every message refused
        at = now - timedelta(minutes=5) + STEP * k
        value: Any = -900.0 if k % 2 else "NaN"
        payload = json.dumps({"boot": 1, "seq": 100 + k, "ts": int(at.timestamp() * 1000),
                              "readings": {"weight_kg": value, "rfid_count": UNITS}})
        bad.append((topic, payload.replace('"NaN"', "NaN").encode(), at.timestamp()))
    batch = decode_batch(bad, registry_of(migrated_db), Limits(), lambda: False)
    assert {d.reason for d in batch.dead} == {"out_of_range", "non_finite_value"}
    assert not batch.accepted
    with psycopg.connect(migrated_db) as conn:
        write_batch(conn, batch)
        gone = mark_stale_offline(conn, timedelta(seconds=120))  # the gateway's housekeeping
        online, seen, heard = conn.execute(
            "SELECT online, last_seen, last_heard FROM device_status WHERE device_id = %s",
            (DEVICE,)).fetchone()  # type: ignore[misc]
    assert gone == [] and online is True
    assert heard == max(d.received_at for d in batch.dead)
    assert seen == good[-1].received_at, "last_seen stays the last stored reading"

    clock.now = datetime.now(UTC)
    (result,) = engine.recompute(["fac"])
    found = alerts(migrated_db)
    fault = found.get("sensor_fault")
    assert fault is not None and fault["status"] == "open" and fault["severity"] == "warning"
    assert {r["reason"] for r in fault["evidence"]["refused"][DEVICE]} == {
        "out_of_range", "non_finite_value"}
    assert "sensor_offline" not in found
    assert found.get("sensor_stale", {}).get("status") == "open", "its data is 8 minutes old"
    assert "unauthorised_outbound" not in found
    (line,) = result.snapshot.lots
    assert line.trust_factors["refused_readings"] == pytest.approx(0.5)


def test_refused_readings_wake_the_running_engine(migrated_db: str) -> None:
    """The writer's NOTIFY names a device whose messages were all refused, so a running engine
    recomputes its facility without waiting for the timer."""
    now = datetime.now(UTC)
    setup(migrated_db, now, hours=(0, 24))
    topic = telemetry_topic(TENANT, DEVICE)
    with psycopg.connect(migrated_db, autocommit=True) as listener:
        listener.execute("LISTEN pw_ingest")
        payload = json.dumps({"boot": 1, "seq": 1, "ts": int(now.timestamp() * 1000),
                              "readings": {"weight_kg": 1e12}}).encode()
        batch = decode_batch([(topic, payload, time.time())], registry_of(migrated_db), Limits(),
                             lambda: False)
        with psycopg.connect(migrated_db) as conn:
            write_batch(conn, batch)
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert notes == [DEVICE]
