"""The goods ledger and the sensor-integrity rules end to end: crafted telemetry published over
real MQTT, stored by the real gateway in a real PostgreSQL, judged by the running lending engine
(woken by NOTIFY). Device timestamps may lie in the past (the gateway accepts up to 7 days), so a
few seconds of publishing replay 20–70 minutes of a warehouse lot's load cell and RFID reader.

- a load cell that drops to ~0 kg while the RFID count vouches for the goods: ``sensor_fault``,
  not ``unauthorised_outbound``;
- a release of 100 units, its goods leaving right after, then 45 min later another 100 units
  leaving: the release explains the first 100 and no more (``unauthorised_outbound`` of ≈100);
- 5 % of a lot leaving evenly over an hour: the ledger adds it up (``unauthorised_outbound``);
- a device clock 2.5 h behind receive time: ``clock_skew``;
- readings refused as out of range (``temp_c`` 500 °C): dead letters and a ``sensor_fault``, and
  the device stays online (it is talking, only what it says is refused);
- the last 8 minutes of a 100-minute series repeating, value for value, the readings of 90 minutes
  earlier (while the true goods fell 20 %): ``sensor_spoofing`` with ``replayed`` evidence;
- a truck's tracker that stops sending positions while the device keeps reporting: the silent
  tracker is a ``sensor_spoofing``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from lending.domain.integrity import IntegrityPolicy
from lending.domain.model import ReleaseStatus
from lending.domain.rules import RulePolicy
from lending.engine import LendingEngine, start_engine_thread
from lending.operations import advance_release, load_portfolio, request_release
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import telemetry_topic
from telemetry.queries import register_devices
from tests.support import Publisher, Stack, running_gateway, wait_until

pytestmark = pytest.mark.e2e

DEVICE = "wh-detect"
FACILITY = "fac-detect"
LOT = "lot-detect"
UNITS = 1000  # declared units of the lot
UNIT_KG = 25.0  # a unit weighs 25 kg: the lot weighs 25 t
OUTBOUND = "unauthorised_outbound"
WIDE_FENCE = [(25.0, 115.0), (25.0, 125.0), (36.0, 125.0), (36.0, 115.0)]  # ~1,000 km across


@pytest.fixture
def stack(lending_stack: Stack) -> Stack:
    return lending_stack


def portfolio(tenant: str, now: datetime, *, truck: bool = False) -> PortfolioIn:
    """The warehouse lot, or (``truck``) the same lot carried by the device's vehicle inside a wide
    geofence."""
    vehicle = {"vehicle": DEVICE, "geofence": WIDE_FENCE} if truck else {}
    return PortfolioIn.model_validate({
        "commodities": [{"name": "rice-bags", "unit": "bag", "unit_kg": UNIT_KG,
                         "liquidation_days": 5, "temp_c": (-10.0, 40.0)}],
        "borrowers": [{"id": "b-detect", "name": "Detect Trading", "tenant": tenant}],
        "facilities": [{"id": FACILITY, "borrower": "b-detect", "line": 200_000.0,
                        "outstanding": 5_000.0, "terms": {"advance_rate": 0.6}}],
        "lots": [{"id": LOT, "facility": FACILITY, "commodity": "rice-bags",
                  "declared_quantity": UNITS, "unit_weight_kg": UNIT_KG,
                  "registration_no": "REG-DETECT", "sensors": [DEVICE],
                  "business_hours": (0, 24), **vehicle}],
        "prices": [{"commodity": "rice-bags", "time": now - timedelta(days=d), "price": 20.0}
                   for d in range(10)],
    })


def payload(seq: int, at: datetime, weight_kg: float, rfid_count: int,
            **extra: float) -> bytes:
    """One message: weight, RFID count and 20 °C, ``extra`` readings added (or overriding)."""
    return json.dumps({"boot": 1, "seq": seq, "ts": int(at.timestamp() * 1000),
                       "readings": {"weight_kg": round(weight_kg, 2), "rfid_count": rfid_count,
                                    "temp_c": 20.0, **extra}}).encode()


class Device:
    """The lot's device: a load cell and an RFID reader in one payload, numbered in order."""

    def __init__(self, tenant: str, seed: int) -> None:
        self.topic = telemetry_topic(tenant, DEVICE)
        self.rng = np.random.default_rng(seed)
        self.seq = 0

    def reading(self, at: datetime, units: float, *, weight_kg: float | None = None,
                noise_share: float = 0.0005, **extra: float) -> tuple[str, bytes]:
        """One reading of ``units`` goods: the weight with uniform ±``noise_share`` noise (or
        ``weight_kg`` as given), the RFID count missing 0–2 tags now and then."""
        if weight_kg is None:
            weight_kg = units * UNIT_KG * (1.0 + self.rng.uniform(-noise_share, noise_share))
        missed = int(self.rng.choice([0, 0, 0, 0, 1, 2]))
        return self.exact(at, weight_kg, max(0, round(units) - missed), **extra)

    def exact(self, at: datetime, weight_kg: float, rfid_count: int,
              **extra: float) -> tuple[str, bytes]:
        """One reading of exactly these values (a recording played back)."""
        msg = (self.topic, payload(self.seq, at, weight_kg, rfid_count, **extra))
        self.seq += 1
        return msg


def every(start: datetime, step_s: float, n: int) -> list[datetime]:
    return [start + timedelta(seconds=step_s * i) for i in range(n)]


def alerts(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT type, severity, status, lot_id, message, evidence FROM alerts"
                            " ORDER BY id").fetchall()
    return {r[0]: {"severity": r[1], "status": r[2], "lot": r[3], "message": r[4],
                   "evidence": r[5]} for r in rows}


def summary(url: str) -> str:
    """The alerts present, for failure messages (evidence abridged)."""
    out = []
    for kind, a in alerts(url).items():
        ev = a["evidence"]
        brief = {k: ev[k] for k in ("magnitude", "fault", "offsets_s") if k in ev}
        if "drop" in ev:
            brief["drop"] = {k: ev["drop"].get(k) for k in (
                "shortfall_units", "drop_units", "threshold_units", "detector", "releases")}
        out.append(f"{kind} [{a['severity']}/{a['status']}] {a['message']} {brief}")
    return "\n".join(out) or "(no alerts)"


def magnitude(url: str, kind: str = OUTBOUND) -> float | None:
    found = alerts(url).get(kind)
    value = None if found is None else found["evidence"].get("magnitude")
    return float(value) if isinstance(value, int | float) else None


class Run:
    """A loaded portfolio, the gateway and the engine running, one publisher."""

    def __init__(self, stack: Stack, pub: Publisher) -> None:
        self.stack, self.pub, self.sent = stack, pub, 0  # sent: readings, not messages

    def publish(self, messages: list[tuple[str, bytes]], timeout: float = 30) -> None:
        """Publish in order and wait until the gateway has stored every reading."""
        self.pub.publish(messages)
        self.sent += sum(len(json.loads(body)["readings"]) for _, body in messages)
        rows = self.sent
        assert wait_until(lambda: self.stack.count() >= rows, timeout=timeout), (
            f"gateway stored {self.stack.count()} of {rows} readings")

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        assert wait_until(predicate, timeout=timeout, interval=0.2), (
            f"{what} within {timeout:g} s; alerts present:\n{summary(self.stack.database_url)}")

    def settle(self, seconds: float = 5.0) -> None:
        """Let the engine (tick 2 s, and woken by NOTIFY) make a few more passes."""
        time.sleep(seconds)


def running(stack: Stack, now: datetime, policy: RulePolicy | None = None, *,
            truck: bool = False) -> Callable[[Callable[[Run], None]], None]:
    """Load the portfolio, start gateway, engine and publisher, run ``body``, stop them."""
    def go(body: Callable[[Run], None]) -> None:
        with psycopg.connect(stack.database_url) as conn:
            register_devices(conn, [DeviceInfo(DEVICE, stack.tenant,
                                               "vehicle" if truck else "warehouse")])
            load_portfolio(conn, portfolio(stack.tenant, now, truck=truck), now)
        engine = LendingEngine(stack.database_url, tick_s=2.0, policy=policy)
        stop = threading.Event()
        thread: threading.Thread | None = None
        try:
            with running_gateway(stack) as _gw, Publisher(stack.broker.target) as pub:
                thread = start_engine_thread(engine, stop)
                body(Run(stack, pub))
        finally:
            stop.set()
            if thread is not None:
                thread.join(10)
            engine.close()
    return go


def test_a_load_cell_reading_zero_while_rfid_vouches_is_a_sensor_fault_not_a_theft(
        stack: Stack) -> None:
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=1)
    start = now - timedelta(minutes=21)
    steady = [dev.reading(t, UNITS) for t in every(start, 5.0, 240)]  # 20 min at 5 s
    broken_from = start + timedelta(seconds=5 * 240)
    broken = [dev.reading(t, UNITS, weight_kg=float(dev.rng.uniform(0.0, 0.5)))
              for t in every(broken_from, 5.0, 8)]  # the cable is cut: ~0 kg, all tags seen

    def body(run: Run) -> None:
        run.publish(steady)
        run.settle(4.0)
        assert not alerts(stack.database_url), summary(stack.database_url)
        run.publish(broken)
        run.wait_for("sensor_fault raised",
                     lambda: "sensor_fault" in alerts(stack.database_url), timeout=25)
        run.settle(6.0)  # more passes over the same history: still no outbound

    running(stack, now)(body)
    found = alerts(stack.database_url)
    fault = found["sensor_fault"]
    assert fault["lot"] == LOT and fault["severity"] == "warning" and fault["status"] == "open"
    assert fault["evidence"]["fault"] == "load_cell", fault
    assert fault["evidence"]["by_count"] >= 0.9 * UNITS, fault
    assert "fault, not a theft" in fault["message"]
    assert OUTBOUND not in found, summary(stack.database_url)


def test_a_release_explains_its_own_quantity_and_no_more(stack: Stack) -> None:
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=2)
    start = now - timedelta(minutes=70)
    released_at = start + timedelta(minutes=20)
    second_drop_at = released_at + timedelta(minutes=45)
    steady = [dev.reading(t, UNITS) for t in every(start, 30.0, 40)]  # 20 min at 30 s
    after_release = [dev.reading(t, UNITS - 100)  # 45 min at 900 units: the release's goods
                     for t in every(released_at + timedelta(seconds=30), 30.0, 89)]
    laundered = [dev.reading(t, UNITS - 200)  # another 100 units leave, no release
                 for t in every(second_drop_at, 30.0, 9)]
    assert second_drop_at + timedelta(seconds=30 * 8) < now

    def body(run: Run) -> None:
        run.publish(steady)
        with psycopg.connect(stack.database_url) as conn:
            request_release(conn, "rel-1", LOT, 100, released_at - timedelta(minutes=5))
            advance_release(conn, "rel-1", ReleaseStatus.APPROVED,
                            released_at - timedelta(minutes=2))
            advance_release(conn, "rel-1", ReleaseStatus.EXECUTED, released_at)
        run.publish(after_release)
        run.settle(4.0)
        assert OUTBOUND not in alerts(stack.database_url), (
            "the release explains the first 100 units:\n" + summary(stack.database_url))
        run.publish(laundered)
        run.wait_for("unauthorised_outbound raised",
                     lambda: OUTBOUND in alerts(stack.database_url), timeout=25)
        run.wait_for("its magnitude settled near 100 units",
                     lambda: (m := magnitude(stack.database_url)) is not None and m >= 90,
                     timeout=15)

    running(stack, now)(body)
    out = alerts(stack.database_url)[OUTBOUND]
    assert out["lot"] == LOT and out["severity"] == "critical" and out["status"] == "open"
    assert out["evidence"]["magnitude"] == pytest.approx(100, rel=0.10), summary(
        stack.database_url)
    drop = out["evidence"]["drop"]
    assert drop["metric"] == "weight_kg"
    assert drop["expected_units"] == pytest.approx(UNITS - 100)
    assert drop["drop_units"] == pytest.approx(200, rel=0.10)  # what physically left
    (use,) = drop["releases"]
    assert use["id"] == "rel-1" and use["quantity"] == 100
    assert use["explained"] == pytest.approx(100)  # consumed: it explains no more
    assert datetime.fromisoformat(use["executed_at"]) == released_at
    # two real moves of the same size are not a replayed series (the replay check clips moves)
    assert "sensor_spoofing" not in alerts(stack.database_url), summary(stack.database_url)


def test_five_percent_leaving_evenly_over_an_hour_is_caught(stack: Stack) -> None:
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=3)
    gone = 0.05 * UNITS
    start = now - timedelta(minutes=75)
    steady = [dev.reading(t, UNITS, noise_share=0.002) for t in every(start, 30.0, 20)]
    theft_from = start + timedelta(minutes=10)
    theft = [dev.reading(t, UNITS - gone * (i + 1) / 120, noise_share=0.002)
             for i, t in enumerate(every(theft_from, 30.0, 120))]  # 60 min at 30 s
    after = [dev.reading(t, UNITS - gone, noise_share=0.002)
             for t in every(theft_from + timedelta(minutes=60), 30.0, 6)]
    assert now - timedelta(seconds=60) > theft_from + timedelta(minutes=62, seconds=30)

    def body(run: Run) -> None:
        run.publish(steady + theft[:10])  # 5 min in: 4 units gone, inside the noise
        run.settle(4.0)
        assert OUTBOUND not in alerts(stack.database_url), summary(stack.database_url)
        run.publish(theft[10:] + after)
        run.wait_for("unauthorised_outbound raised",
                     lambda: OUTBOUND in alerts(stack.database_url), timeout=25)
        run.wait_for(f"its magnitude reached 90 % of the {gone:g} units gone",
                     lambda: (m := magnitude(stack.database_url)) is not None
                     and m >= 0.9 * gone, timeout=15)

    running(stack, now)(body)
    out = alerts(stack.database_url)[OUTBOUND]
    assert out["lot"] == LOT and out["severity"] == "critical" and out["status"] == "open"
    assert out["evidence"]["magnitude"] == pytest.approx(gone, rel=0.10), summary(
        stack.database_url)
    drop = out["evidence"]["drop"]
    assert drop["releases"] == [] and drop["expected_units"] == pytest.approx(UNITS)
    assert drop["threshold_units"] < gone


def test_a_device_clock_hours_behind_raises_clock_skew(stack: Stack) -> None:
    """The shipped rule wants 5 arrivals spanning 2 min of receive time before it judges a clock
    (unit-tested in tests/unit/test_integrity.py); here the engine is told 8 s, so the path from a
    live MQTT message to the alert is tested in seconds rather than minutes."""
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=4)
    behind = timedelta(hours=2, minutes=30)
    quick = RulePolicy(integrity=IntegrityPolicy(clock_skew_min_span=timedelta(seconds=8)))

    def body(run: Run) -> None:
        for _ in range(15):  # one fresh reading every 2 s, its clock 2.5 h behind
            run.publish([dev.reading(datetime.now(UTC) - behind, UNITS)])
            if "clock_skew" in alerts(stack.database_url):
                break
            time.sleep(2.0)
        run.wait_for("clock_skew raised",
                     lambda: "clock_skew" in alerts(stack.database_url), timeout=20)

    running(stack, now, quick)(body)
    skew = alerts(stack.database_url)["clock_skew"]
    assert skew["lot"] == LOT and skew["severity"] == "warning" and skew["status"] == "open"
    offset = skew["evidence"]["offsets_s"][DEVICE]
    assert offset == pytest.approx(behind.total_seconds(), abs=60), skew
    assert "+150" in skew["message"], skew["message"]


def dead_letters(url: str) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT reason, detail, device_id FROM dead_letters ORDER BY id"
                            ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_readings_refused_as_out_of_range_are_a_sensor_fault_and_the_device_stays_online(
        stack: Stack) -> None:
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=5)
    start = now - timedelta(minutes=4)
    steady = [dev.reading(t, UNITS) for t in every(start, 5.0, 36)]  # 3 min at 5 s
    bad_from = start + timedelta(seconds=5 * 36)
    bad = [dev.reading(t, UNITS, temp_c=500.0)  # outside [-60, 120] °C: impossible
           for t in every(bad_from, 5.0, 3)]
    assert bad_from + timedelta(seconds=10) < now

    def body(run: Run) -> None:
        run.publish(steady)
        run.settle(4.0)
        assert not alerts(stack.database_url), summary(stack.database_url)
        run.pub.publish(bad)  # refused: nothing stored, so wait on the dead letters
        run.wait_for("3 dead letters", lambda: len(dead_letters(stack.database_url)) >= 3,
                     timeout=15)
        run.wait_for("sensor_fault raised",
                     lambda: "sensor_fault" in alerts(stack.database_url), timeout=20)
        run.settle(4.0)  # more passes: still no offline

    running(stack, now)(body)
    letters = dead_letters(stack.database_url)
    assert len(letters) == 3, letters
    assert all(reason == "out_of_range" and device == DEVICE and "temp_c" in detail
               for reason, detail, device in letters), letters
    assert stack.count() == 3 * len(steady), "a refused message stores none of its readings"
    found = alerts(stack.database_url)
    fault = found["sensor_fault"]
    assert fault["lot"] == LOT and fault["severity"] == "warning" and fault["status"] == "open"
    # the evidence is what the raising pass saw (an open alert is not rewritten for more of the
    # same): at least the first refusal
    refused = fault["evidence"]["refused"][DEVICE]
    assert 1 <= len(refused) <= 3 and {r["reason"] for r in refused} == {"out_of_range"}, fault
    assert "fault, not a theft" in fault["message"]
    assert "sensor_offline" not in found, summary(stack.database_url)
    assert OUTBOUND not in found and "sensor_spoofing" not in found, summary(stack.database_url)
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT online, last_seen, last_heard FROM device_status"
                           " WHERE device_id = %s", (DEVICE,)).fetchone()
    assert row is not None
    online, last_seen, last_heard = row
    assert online, row
    assert last_heard is not None and last_heard >= last_seen, (
        "the refused messages count as heard; last_seen stays the last stored reading", row)


def test_a_replayed_recording_of_the_load_cell_is_spoofing(stack: Stack) -> None:
    """100 minutes at 5 s; over the last 8 the goods really fall 20 %, but the device plays back,
    value for value, what it published 90 minutes earlier (new timestamps and sequence numbers)."""
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=6)
    lag = 1080  # readings in 90 min at 5 s
    honest_n, replay_n = 1104, 96  # 92 min honest, then 8 min played back
    start = now - timedelta(seconds=5 * (honest_n + replay_n) + 60)
    times = every(start, 5.0, honest_n + replay_n)
    honest = [dev.reading(t, UNITS) for t in times[:honest_n]]
    values = [(float(r["weight_kg"]), int(r["rfid_count"]))
              for r in (json.loads(body)["readings"] for _, body in honest)]
    replay = [dev.exact(t, *values[honest_n + i - lag])
              for i, t in enumerate(times[honest_n:])]  # the true 800 units are never shown
    assert json.loads(replay[-1][1])["readings"]["weight_kg"] == pytest.approx(
        UNITS * UNIT_KG, rel=0.001)

    def body(run: Run) -> None:
        for i in range(0, honest_n, 276):  # in device-time order, in batches
            run.publish(honest[i:i + 276])
        run.settle(4.0)
        assert "sensor_spoofing" not in alerts(stack.database_url), (
            "honest noise is no replay:\n" + summary(stack.database_url))
        run.publish(replay[:48])
        run.publish(replay[48:])
        run.wait_for("sensor_spoofing raised",
                     lambda: "sensor_spoofing" in alerts(stack.database_url), timeout=25)

    running(stack, now)(body)
    spoof = alerts(stack.database_url)["sensor_spoofing"]
    assert spoof["lot"] == LOT and spoof["severity"] == "critical" and spoof["status"] == "open"
    assert "replays its own history" in spoof["message"], spoof["message"]
    found = spoof["evidence"]["replayed"]["weight_kg"]
    assert found["correlation"] >= 0.98 and found["difference"] <= 0.2, found
    assert found["lag_s"] == pytest.approx(5.0 * lag), found
    recent = [datetime.fromisoformat(t) for t in found["recent"]]
    assert times[honest_n] <= recent[0] and recent[1] <= times[-1], found


def test_a_truck_tracker_gone_silent_while_the_device_reports_is_spoofing(stack: Stack) -> None:
    """The shipped rule calls a tracker silent after 10 min without a position (unit-tested in
    tests/unit/test_integrity.py); here the engine is told 6 s, so the path from live MQTT
    messages to the alert is tested in seconds rather than minutes."""
    now = datetime.now(UTC)
    dev = Device(stack.tenant, seed=7)
    stale = timedelta(seconds=6)
    quick = RulePolicy(integrity=IntegrityPolicy(position_stale_after=stale))
    lat, lon = 31.2, 121.4  # inside the wide fence

    def body(run: Run) -> None:
        for i in range(4):  # fixes with every reading, a second apart
            run.publish([dev.reading(datetime.now(UTC), UNITS, lat=lat + 0.001 * i, lon=lon,
                                     speed_kmh=40.0)])
            time.sleep(1.0)
        run.settle(3.0)
        assert "sensor_spoofing" not in alerts(stack.database_url), summary(stack.database_url)
        for _ in range(20):  # then weight and temperature only, one a second
            run.publish([dev.reading(datetime.now(UTC), UNITS)])
            if "sensor_spoofing" in alerts(stack.database_url):
                break
            time.sleep(1.0)
        run.wait_for("sensor_spoofing raised",
                     lambda: "sensor_spoofing" in alerts(stack.database_url), timeout=5)

    running(stack, now, quick, truck=True)(body)
    found = alerts(stack.database_url)
    spoof = found["sensor_spoofing"]
    assert spoof["lot"] == LOT and spoof["severity"] == "critical" and spoof["status"] == "open"
    assert "stopped sending positions" in spoof["message"], spoof["message"]
    silent = spoof["evidence"]["position_silent"][DEVICE]
    assert silent["silent_s"] > stale.total_seconds(), silent
    assert set(spoof["evidence"]) == {"position_silent"}, spoof["evidence"]
    assert "geofence_exit" not in found, summary(stack.database_url)
