"""Each incident scenario end to end: simulated devices publish over real MQTT, the gateway stores
their telemetry in a real PostgreSQL, the lending engine (woken by NOTIFY) raises the right alert
— and no wrong one — with its evidence, and the facility's limit moves.

The services are the machine's PostgreSQL and Mosquitto when the environment names them (CI),
and the embedded ones otherwise (the default a new user has).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from firmware_sim.device_models import DeviceSpec
from firmware_sim.fleet import run_fleet
from firmware_sim.market import scenario_series
from lending.domain.alerts import AlertType
from lending.domain.model import ReleaseStatus
from lending.engine import LendingEngine, start_engine_thread
from lending.financing import repay
from lending.operations import advance_release, load_portfolio, post_prices, request_release
from lending.portfolio_file import PortfolioIn
from pledgewatch.demo_portfolio import price_points
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import status_topic
from telemetry.queries import register_devices
from tests.support import Publisher, Stack, running_gateway, wait_until

pytestmark = pytest.mark.e2e

RATE_HZ = 5.0
INCIDENT_AT_S = 4.0
FACILITY = "fac-e2e"
LOT = "lot-e2e"
UNITS = 800
UNIT_KG = 25.0
ROUTE = [[31.20, 121.40], [31.26, 121.46], [31.22, 121.52]]
ALL_TYPES = set(AlertType)




def out_of_hours_now() -> tuple[int, int]:
    """A one-hour business window (site time, UTC+8) that does not contain the present hour."""
    local_hour = (datetime.now(UTC) + timedelta(hours=8)).hour
    start = (local_hour + 12) % 24
    return start, start + 1


@dataclass
class Case:
    scenario: str
    kind: str = "warehouse"
    parameters: dict[str, Any] = field(default_factory=dict)
    commodity: dict[str, Any] = field(default_factory=lambda: {"name": "steel-coil"})
    lot: dict[str, Any] = field(default_factory=dict)
    outstanding: float = 30_000.0

    def spec(self, tenant: str) -> DeviceSpec:
        base: dict[str, Any] = {"incident_at_s": INCIDENT_AT_S}
        if self.kind == "warehouse":
            base |= {"units": UNITS, "unit_weight_kg": UNIT_KG, "base_temp_c": 18.0,
                     "base_humidity_pct": 50.0}
        else:
            base |= {"route": ROUTE, "cruise_kmh": 50.0, "setpoint_c": 4.0}
        device = "wh-e2e" if self.kind == "warehouse" else "veh-e2e"
        return DeviceSpec(tenant, device, self.kind, 4242,  # type: ignore[arg-type]
                          base | self.parameters)

    def portfolio(self, tenant: str, device: str, now: datetime) -> PortfolioIn:
        commodity: dict[str, Any] = ({"unit": "t", "unit_kg": 1000.0, "liquidation_days": 10}
                                      | self.commodity)
        lot: dict[str, Any] = {
            "id": LOT, "facility": FACILITY, "commodity": commodity["name"],
            "declared_quantity": UNITS if self.kind == "warehouse" else 20,
            "unit_weight_kg": UNIT_KG if self.kind == "warehouse" else 1000.0,
            "registration_no": f"REG-{tenant}", "sensors": [device], "business_hours": (0, 24),
        } | self.lot
        prices = scenario_series("steady", commodity["name"], 4_000.0, start=now - timedelta(days=30),
                                 points=31, step_s=86_400.0, seed=1)
        return PortfolioIn.model_validate({
            "commodities": [commodity],
            "borrowers": [{"id": "b-e2e", "name": "E2E Trading", "tenant": tenant}],
            "facilities": [{"id": FACILITY, "borrower": "b-e2e", "line": 100_000.0,
                            "outstanding": self.outstanding,
                            "terms": {"advance_rate": 0.65, "warning_ltv": 0.7,
                                      "liquidation_ltv": 0.85}}],
            "lots": [lot],
            "prices": [{"commodity": p.commodity, "time": p.time, "price": p.price} for p in prices],
        })


class Run:
    """Portfolio loaded, gateway + lending engine + one simulated device running."""

    def __init__(self, stack: Stack, case: Case, state_dir: Path) -> None:
        self.stack, self.case = stack, case
        self.spec = case.spec(stack.tenant)
        self.engine = LendingEngine(stack.database_url, tick_s=2.0)
        self.state_dir = state_dir
        self._stop_engine = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_fleet: asyncio.Event | None = None
        self._fleet = threading.Thread(target=self._run_fleet, name="fleet", daemon=True)

    def conn(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.database_url, autocommit=True)

    def setup(self) -> None:
        now = datetime.now(UTC)
        with psycopg.connect(self.stack.database_url) as conn:
            register_devices(conn, [DeviceInfo(self.spec.device_id, self.stack.tenant,
                                               self.spec.kind)])
            load_portfolio(conn, self.case.portfolio(self.stack.tenant, self.spec.device_id, now),
                           now)

    def _run_fleet(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_fleet = asyncio.Event()
            target = self.stack.broker.target
            await run_fleet([self.spec], host=target.host, port=target.port,
                            username=target.username, password=target.password, rate_hz=RATE_HZ,
                            duration_s=120, scenario=self.case.scenario,
                            state_dir=self.state_dir, protocol=target.protocol,
                            stop=self._stop_fleet)

        asyncio.run(main())

    def start(self) -> None:
        start_engine_thread(self.engine, self._stop_engine)
        self._fleet.start()

    def stop(self) -> None:
        if self._loop is not None and self._stop_fleet is not None:
            self._loop.call_soon_threadsafe(self._stop_fleet.set)
        self._fleet.join(20)
        self._stop_engine.set()
        # The device leaves a retained status on the shared broker: clear it for later tests.
        with Publisher(self.stack.broker.target) as pub:
            pub.client.publish(status_topic(self.stack.tenant, self.spec.device_id), b"",
                               qos=1, retain=True).wait_for_publish(5)

    def limit(self) -> tuple[float, float] | None:
        """The latest (limit, available) snapshot, once every lot has reported."""
        with self.conn() as conn:
            row = conn.execute(
                "SELECT credit_limit, available, inputs FROM limit_snapshots"
                " WHERE facility_id = %s ORDER BY time DESC, id DESC LIMIT 1", (FACILITY,)).fetchone()
        if row is None or any("no_readings" in lot["trust_factors"] for lot in row[2]["lots"]):
            return None
        return float(row[0]), float(row[1])

    def alerts(self) -> dict[str, dict[str, Any]]:
        with self.conn() as conn:
            rows = conn.execute("SELECT type, severity, status, evidence, message FROM alerts"
                                " ORDER BY id").fetchall()
        return {r[0]: {"severity": r[1], "status": r[2], "evidence": r[3], "message": r[4]}
                for r in rows}


@pytest.fixture
def run_case(lending_stack: Stack, tmp_path: Path) -> Iterator[Callable[[Case], Run]]:
    runs: list[Run] = []

    def start(case: Case) -> Run:
        run = Run(lending_stack, case, tmp_path)
        run.setup()
        runs.append(run)
        return run

    with running_gateway(lending_stack):
        yield start
        for run in runs:
            run.stop()
    for run in runs:
        run.engine.close()


def steady_limit(run: Run) -> float:
    """The limit once the lot's first readings are in, before the incident starts."""
    limits: list[float] = []
    def first_limit() -> bool:
        lim = run.limit()
        if lim is None:
            return False
        limits.append(lim[0])
        return True

    assert wait_until(first_limit,
                      timeout=INCIDENT_AT_S + 10), "no limit snapshot with readings"
    return limits[-1]


def expect(run: Run, kind: AlertType, forbidden: set[AlertType], timeout: float = 25.0,
           until: Callable[[dict[str, Any]], bool] = lambda _alert: True) -> dict[str, Any]:
    """The alert of ``kind`` once it exists (and satisfies ``until``); no ``forbidden`` ones."""
    assert wait_until(lambda: kind in (a := run.alerts()) and until(a[kind]), timeout=timeout), (
        f"no {kind} alert; alerts: {run.alerts()}")
    alerts = run.alerts()
    wrong = set(alerts) & {str(t) for t in forbidden}
    assert not wrong, f"unexpected alerts {wrong}: {[alerts[w]['message'] for w in wrong]}"
    return alerts[kind]


def limit_fell(run: Run, before: float, factor: float = 0.97) -> float:
    after: list[float] = []

    def fell() -> bool:
        lim = run.limit()
        if lim is None or lim[0] >= before * factor:
            return False
        after.append(lim[0])
        return True

    assert wait_until(fell, timeout=15), (
        f"limit did not fall below {before * factor:,.2f}: {run.limit()}")
    return after[-1]


SENSOR_ALERTS = {AlertType.SENSOR_TAMPER, AlertType.SENSOR_FLATLINE, AlertType.SENSOR_OFFLINE,
                 AlertType.SENSOR_STALE}


def test_theft_at_night_raises_unauthorised_outbound_with_evidence(run_case: Callable[[Case], Run]
                                                                    ) -> None:
    run = run_case(Case("theft", lot={"business_hours": out_of_hours_now()}))
    run.start()
    before = steady_limit(run)
    alert = expect(run, AlertType.UNAUTHORISED_OUTBOUND,
                   SENSOR_ALERTS | {AlertType.GEOFENCE_EXIT, AlertType.QUANTITY_MISMATCH,
                                    AlertType.CONDITION_OUT_OF_SPEC},
                   # the door opens first (warning), then the drop grows (critical, updated)
                   until=lambda a: a["severity"] == "critical"
                   and a["evidence"]["drop"]["unexplained_units"] >= 0.2 * UNITS)
    drop = alert["evidence"]["drop"]
    assert drop["metric"] == "weight_kg"
    assert 0.2 * UNITS <= drop["unexplained_units"] <= 0.4 * UNITS, drop
    assert drop["releases"] == [] and drop["samples"] and drop["onset"]
    assert alert["evidence"]["door_open_out_of_hours"], "the night-time door opening is evidence"
    # the goods ledger's fast detector raises while the goods are still leaving: wait for the limit
    # to follow all of them (the verified level, not one reading, so it takes a few readings)
    after = limit_fell(run, before, 0.74)
    assert after == pytest.approx(before * 0.7, rel=0.06)


def test_leak_slow_loss_is_caught_by_cusum(run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("leak", parameters={"leak_rate_per_s": 0.01}))
    run.start()
    before = steady_limit(run)
    alert = expect(run, AlertType.UNAUTHORISED_OUTBOUND,
                   SENSOR_ALERTS | {AlertType.GEOFENCE_EXIT, AlertType.CONDITION_OUT_OF_SPEC})
    assert alert["evidence"]["drop"]["metric"] == "weight_kg"
    assert alert["evidence"]["drop"]["drop_units"] >= 0.02 * UNITS
    limit_fell(run, before)


def test_tamper_then_flatline_cuts_trust(run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("tamper"))
    run.start()
    before = steady_limit(run)
    tamper = expect(run, AlertType.SENSOR_TAMPER,
                    {AlertType.UNAUTHORISED_OUTBOUND, AlertType.QUANTITY_MISMATCH,
                     AlertType.GEOFENCE_EXIT})
    assert tamper["severity"] == "critical" and tamper["evidence"]["devices"] == ["wh-e2e"]
    limit_fell(run, before, 0.5)
    flat = expect(run, AlertType.SENSOR_FLATLINE,
                  {AlertType.UNAUTHORISED_OUTBOUND, AlertType.QUANTITY_MISMATCH})
    values = flat["evidence"]["weight_kg"]
    assert len(values) >= 20 and len(set(values)) == 1


def test_swap_weight_steady_count_falls_is_a_mismatch_not_an_outbound(
        run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("swap"))
    run.start()
    before = steady_limit(run)
    alert = expect(run, AlertType.QUANTITY_MISMATCH,
                   SENSOR_ALERTS | {AlertType.UNAUTHORISED_OUTBOUND, AlertType.GEOFENCE_EXIT})
    ev = alert["evidence"]
    assert ev["by_weight_units"] == pytest.approx(UNITS, rel=0.02)
    assert ev["by_count"] == pytest.approx(UNITS * 0.7, rel=0.02)
    limit_fell(run, before, 0.8)


def test_truck_leaving_its_corridor_raises_geofence_exit(run_case: Callable[[Case], Run]) -> None:
    fence = [(31.15, 121.35), (31.15, 121.57), (31.31, 121.57), (31.31, 121.35)]
    run = run_case(Case("geofence", kind="vehicle",
                        parameters={"geofence_speed_deg_per_s": 0.1},
                        commodity={"name": "chilled-food", "temp_c": (0.0, 8.0)},
                        lot={"vehicle": "veh-e2e", "geofence": fence}))
    run.start()
    before = steady_limit(run)
    alert = expect(run, AlertType.GEOFENCE_EXIT,
                   SENSOR_ALERTS | {AlertType.UNAUTHORISED_OUTBOUND,
                                    AlertType.CONDITION_OUT_OF_SPEC})
    lat, lon = alert["evidence"]["position"]
    assert not (31.15 <= lat <= 31.31 and 121.35 <= lon <= 121.57), (lat, lon)
    assert alert["evidence"]["vehicle"] == "veh-e2e"
    assert limit_fell(run, before, 0.5) < before * 0.5


def test_coldchain_excursion_raises_condition_alert(run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("coldchain", commodity={"name": "chilled-goods", "temp_c": (0.0, 25.0)}))
    run.start()
    before = steady_limit(run)
    alert = expect(run, AlertType.CONDITION_OUT_OF_SPEC,
                   SENSOR_ALERTS | {AlertType.UNAUTHORISED_OUTBOUND, AlertType.GEOFENCE_EXIT,
                                    AlertType.QUANTITY_MISMATCH})
    assert alert["evidence"]["temp_c"] > 25.0
    assert alert["evidence"]["temp_range"] == [0.0, 25.0]
    limit_fell(run, before, 0.8)


def test_release_executed_before_goods_leave_raises_no_outbound(
        run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("release", lot={"business_hours": out_of_hours_now()}))
    quantity = 0.25 * UNITS
    with psycopg.connect(run.stack.database_url) as conn:
        now = datetime.now(UTC)
        request_release(conn, "rel-1", LOT, quantity, now)
        advance_release(conn, "rel-1", ReleaseStatus.APPROVED, now)
    run.start()
    before = steady_limit(run)
    with psycopg.connect(run.stack.database_url) as conn:
        advance_release(conn, "rel-1", ReleaseStatus.EXECUTED, datetime.now(UTC))
    after = limit_fell(run, before, 0.9)
    assert after == pytest.approx(before * 0.75, rel=0.06)
    # The goods have gone (weight and count), the door opened out of hours: all explained.
    with run.conn() as conn:
        assert wait_until(lambda: conn.execute(
            "SELECT count(*) FROM readings WHERE metric = 'rfid_count' AND value <= %s",
            (UNITS - quantity,)).fetchone()[0] >= 10, timeout=15)  # type: ignore[index]
    wait_until(lambda: False, timeout=2 * 2.0)  # two more engine passes
    alerts = run.alerts()
    assert str(AlertType.UNAUTHORISED_OUTBOUND) not in alerts, alerts
    assert not set(alerts) & {str(t) for t in SENSOR_ALERTS | {AlertType.QUANTITY_MISMATCH}}
    # A repayment lowers the drawn amount: available rises with it.
    available = run.limit()[1]  # type: ignore[index]
    with psycopg.connect(run.stack.database_url) as conn:
        repay(conn, FACILITY, 10_000.0, datetime.now(UTC))
    assert wait_until(lambda: (lim := run.limit()) is not None and lim[1] >= available + 9_000,
                      timeout=10), (available, run.limit())


def test_price_crash_crosses_the_ltv_lines(run_case: Callable[[Case], Run]) -> None:
    run = run_case(Case("normal", outstanding=40_000.0))
    run.start()
    before = steady_limit(run)
    crash = scenario_series("price-crash", "steel-coil", 4_000.0,
                            start=datetime.now(UTC) - timedelta(hours=9), points=10,
                            step_s=3_600.0, seed=3)
    with psycopg.connect(run.stack.database_url) as conn:
        post_prices(conn, price_points(crash))
    alert = expect(run, AlertType.LTV_WARNING,
                   SENSOR_ALERTS | {AlertType.UNAUTHORISED_OUTBOUND, AlertType.GEOFENCE_EXIT,
                                    AlertType.QUANTITY_MISMATCH})
    ev = alert["evidence"]
    assert ev["ltv"] >= 0.7 and ev["top_up_needed"] > 0
    assert ev["prices"]["steel-coil"][0] == pytest.approx(crash[-1].price)
    assert "cure" not in alert["message"] or "top up" in alert["message"]
    assert limit_fell(run, before, 0.75) < before
