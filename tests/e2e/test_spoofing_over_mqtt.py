"""A spoofed GPS track end to end: crafted telemetry published over real MQTT, stored by the real
gateway in a real PostgreSQL, judged by the running lending engine (woken by NOTIFY). A truck's
position jumps 300 km in 10 s while staying inside its (wide) geofence: no geofence exit, but a
critical ``sensor_spoofing`` alert with the impossible hop as evidence, and the lot's trust falls.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from lending.engine import LendingEngine, start_engine_thread
from lending.operations import load_portfolio
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import telemetry_topic
from telemetry.queries import register_devices
from tests.support import Publisher, Stack, running_gateway, wait_until

pytestmark = pytest.mark.e2e

DEVICE = "veh-spoof"
FACILITY = "fac-spoof"
LOT = "lot-spoof"
WIDE_FENCE = [(25.0, 115.0), (25.0, 125.0), (36.0, 125.0), (36.0, 115.0)]  # ~1,000 km across


@pytest.fixture
def stack(lending_stack: Stack) -> Stack:
    return lending_stack


def portfolio(tenant: str, now: datetime) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "chilled-food", "unit": "t", "unit_kg": 1000.0,
                         "liquidation_days": 5, "temp_c": (0.0, 8.0)}],
        "borrowers": [{"id": "b-spoof", "name": "Spoof Logistics", "tenant": tenant}],
        "facilities": [{"id": FACILITY, "borrower": "b-spoof", "line": 200_000.0,
                        "outstanding": 10_000.0, "terms": {"advance_rate": 0.6}}],
        "lots": [{"id": LOT, "facility": FACILITY, "commodity": "chilled-food",
                  "declared_quantity": 20, "unit_weight_kg": 1000.0, "registration_no": "REG-SPOOF",
                  "sensors": [DEVICE], "vehicle": DEVICE, "geofence": WIDE_FENCE,
                  "business_hours": (0, 24)}],
        "prices": [{"commodity": "chilled-food", "time": now - timedelta(days=d), "price": 9000.0}
                   for d in range(10)],
    })


def payload(seq: int, at: datetime, **readings: Any) -> bytes:
    return json.dumps({"boot": 1, "seq": seq, "ts": int(at.timestamp() * 1000),
                       "readings": readings}).encode()


def track(start: datetime, n: int, rng: np.random.Generator) -> list[tuple[datetime, float, float]]:
    """A truck driving north at 60 km/h from Shanghai, a fix every 5 s, 10–30 m of GPS jitter."""
    out = []
    for i in range(n):
        north_km = 60.0 * 5.0 * i / 3600.0
        jitter = rng.uniform(-30.0, 30.0, 2) / 111_000.0
        out.append((start + timedelta(seconds=5 * i), 31.2 + north_km / 111.0 + jitter[0],
                    121.4 + jitter[1]))
    return out


def alerts(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT type, severity, status, evidence FROM alerts ORDER BY id"
                            ).fetchall()
    return {r[0]: {"severity": r[1], "status": r[2], "evidence": r[3]} for r in rows}


def latest_trust(url: str) -> dict[str, float] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT inputs FROM limit_snapshots WHERE facility_id = %s"
                           " ORDER BY time DESC, id DESC LIMIT 1", (FACILITY,)).fetchone()
    return None if row is None else row[0]["lots"][0]["trust_factors"]


def test_a_gps_jump_of_300_km_in_10_s_over_mqtt_raises_sensor_spoofing(stack: Stack) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(stack.database_url) as conn:
        register_devices(conn, [DeviceInfo(DEVICE, stack.tenant, "vehicle")])
        load_portfolio(conn, portfolio(stack.tenant, now), now)
    engine = LendingEngine(stack.database_url, tick_s=2.0)
    stop = threading.Event()
    topic = telemetry_topic(stack.tenant, DEVICE)
    rng = np.random.default_rng(42)
    thread: threading.Thread | None = None
    honest = track(now - timedelta(minutes=3), 30, rng)
    messages = [(topic, payload(i, t, lat=round(lat, 6), lon=round(lon, 6), speed_kmh=60.0,
                                temp_c=4.0, tamper=False))
                for i, (t, lat, lon) in enumerate(honest)]
    last_t, last_lat, last_lon = honest[-1]
    jump_t = last_t + timedelta(seconds=10)
    jumped = (last_lat + 300.0 / 111.0, last_lon)  # 300 km north, still inside the fence
    messages.append((topic, payload(len(honest), jump_t, lat=round(jumped[0], 6),
                                    lon=round(jumped[1], 6), speed_kmh=62.0, temp_c=4.0,
                                    tamper=False)))
    try:
        with running_gateway(stack) as gw, Publisher(stack.broker.target) as pub:
            thread = start_engine_thread(engine, stop)
            pub.publish(messages[:-1])
            assert wait_until(lambda: stack.count() >= 5 * len(honest), timeout=20), gw.totals
            assert wait_until(lambda: (f := latest_trust(stack.database_url)) is not None
                              and "no_readings" not in f, timeout=20)
            assert "sensor_spoofing" not in alerts(stack.database_url), "honest jitter is no jump"
            pub.publish(messages[-1:])
            assert wait_until(lambda: "sensor_spoofing" in alerts(stack.database_url),
                              timeout=25), alerts(stack.database_url)
            assert wait_until(lambda: "implausible_track" in (
                latest_trust(stack.database_url) or {}), timeout=10), (
                latest_trust(stack.database_url))
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        engine.close()
    found = alerts(stack.database_url)
    spoof = found["sensor_spoofing"]
    assert spoof["severity"] == "critical" and spoof["status"] == "open"
    (hop,) = spoof["evidence"]["impossible_track"]
    assert hop["km"] == pytest.approx(300.0, rel=0.02)
    assert hop["seconds"] == pytest.approx(10.0)
    assert hop["implied_kmh"] > 100_000 and hop["reported_kmh"] == 62.0
    assert "geofence_exit" not in found, "the jump stays inside the fence: only spoofing says it"
