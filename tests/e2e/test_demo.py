"""`pledgewatch demo` with only the embedded defaults: the whole platform in one process, queried
over real HTTP while it runs, then restarted on the same state directory to show the data stayed."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.demo_process import DASHBOARD, HTTP, Demo, get_json, login, pledgewatch_cli

pytestmark = pytest.mark.e2e

DEVICES = 8
STORE = re.compile(r"^store: (?P<backend>.+) \(embedded\), (?P<migrations>\d+) migration\(s\) applied, "
                   r"(?P<new>\d+) new device\(s\), (?P<stored>[\d,]+) readings already stored$")
BROKER = re.compile(r"^broker: mqtt://127\.0\.0\.1:(?P<port>\d+) \(embedded\)$")
PROGRESS_STORED = re.compile(r"stored (?P<stored>[\d,]+) readings")
FLEET_STOPPED = re.compile(r"^fleet stopped: (?P<published>[\d,]+) published, "
                           r"(?P<acked>[\d,]+) acknowledged, (?P<pending>[\d,]+) still pending$")
GATEWAY_STOPPED = re.compile(r"gateway stopped: .*'stored': (?P<stored>\d+)")
PORTFOLIO = re.compile(r"^portfolio: (?P<borrowers>\d+) borrowers .*, (?P<facilities>\d+) facilities, "
                       r"(?P<lots>\d+) pledged lots$")
LENDING = re.compile(r"lending: (?P<changes>[\d,]+) limit changes, (?P<alerts>[\d,]+) alerts raised")
MIGRATIONS = Path(__file__).resolve().parents[2] / "schema" / "migrations"
MIGRATION_COUNT = sum(1 for p in MIGRATIONS.iterdir()
                      if p.name[:1].isdigit() and p.suffix in (".sql", ".py")
                      and not p.name.endswith(".rollback.sql"))


def number(text: str) -> int:
    return int(text.replace(",", ""))


def officer_token(demo: Demo) -> tuple[str, str]:
    """The API base URL and a token of the officer the demo printed."""
    dashboard = demo.wait_for(DASHBOARD, timeout=30)
    base = demo.wait_for(HTTP, timeout=0)["url"]
    assert dashboard["url"] == f"{base}/dashboard/"
    assert dashboard["username"] == "officer"
    return base, login(base, dashboard["username"], dashboard["password"])


def latest_telemetry(base: str, token: str) -> list[dict[str, Any]] | None:
    """Each device with its newest readings (None while the server has no telemetry route)."""
    try:
        return list(get_json(f"{base}/api/v1/telemetry/latest?limit=500", token)["items"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def wait_for_fleet_in_store(demo: Demo, base: str, token: str, timeout: float, more_than: int = 0
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll /health and the officer API until every device is online with readings (and the store
    holds more than ``more_than``) and every facility has a limit; return health and the latest
    readings per device (empty when the server has no telemetry route)."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    latest: list[dict[str, Any]] | None = []
    facilities: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert demo.proc.poll() is None, f"demo exited while being queried:\n{demo.output}"
        health = get_json(f"{base}/health")
        facilities = get_json(f"{base}/api/v1/facilities", token)["items"]
        latest = latest_telemetry(base, token)
        devices_ok = (latest is None or (len(latest) == DEVICES and all(d["readings"] for d in latest)))
        if (health["devices"] == DEVICES and health["online"] == DEVICES
                and health["readings"] > more_than and devices_ok
                and facilities and all(f["limit"] is not None for f in facilities)):
            return health, latest or []
        time.sleep(0.2)
    pytest.fail(f"the fleet did not reach the store: health={health} latest={latest} "
                f"facilities={facilities}\n{demo.output}")


def test_demo_serves_live_data_and_keeps_it_across_a_restart(start_demo: Callable[..., Demo]
                                                             ) -> None:
    first = start_demo("--no-supply-chain", "--devices", str(DEVICES), "--rate", "5",
                       "--duration", "20")
    store = first.wait_for(STORE, timeout=60)
    assert store["backend"] == "plain PostgreSQL"
    assert (number(store["migrations"]), store["new"], store["stored"]) == (
        MIGRATION_COUNT, str(DEVICES), "0")
    portfolio = first.wait_for(PORTFOLIO, timeout=10)
    assert (portfolio["borrowers"], portfolio["facilities"]) == ("6", "5")
    assert number(portfolio["lots"]) == 6  # 8 devices: 4 warehouses + 2 vehicles (2 lines unpledged)
    assert number(first.wait_for(BROKER, timeout=5)["port"]) != 1883
    http = first.wait_for(HTTP, timeout=30)
    assert number(http["port"]) not in (0, 8000)
    base, token = officer_token(first)
    password = first.wait_for(DASHBOARD, timeout=0)["password"]
    password_file = first.state_dir / "demo_officer_password"
    assert password_file.read_text().strip() == password
    assert password_file.stat().st_mode & 0o777 == 0o600

    health, latest = wait_for_fleet_in_store(first, base, token, timeout=8)
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["dead_letters"] == 0
    assert len({d["device_id"] for d in latest}) in (0, DEVICES)  # 0: no telemetry route
    for device in latest:
        assert device["online"] is True, device
        for metric, reading in device["readings"].items():
            assert isinstance(reading["value"], float), (device["device_id"], metric, reading)
    # A second process shares the demo's embedded database (and must leave it running).
    limit = pledgewatch_cli(first.state_dir, "facility", "limit", "fac-sup-ore-trading")
    assert limit.returncode == 0, limit.stdout + limit.stderr
    assert "limit " in limit.stdout and "lot lot-wh-0001 (steel-coil)" in limit.stdout
    assert first.wait_for(LENDING, timeout=10)
    health, _ = wait_for_fleet_in_store(first, base, token, timeout=5)
    seen_stored = health["readings"]
    metrics_text = urllib.request.urlopen(f"{http['url']}/metrics", timeout=5).read().decode()
    assert "pledgewatch_readings_stored_total" in metrics_text

    assert first.wait_exit(timeout=60) == 0, first.output
    assert "stopped cleanly" in first.output
    stopped = first.wait_for(FLEET_STOPPED, timeout=0)
    assert number(stopped["published"]) > 0
    assert number(stopped["pending"]) == 0, first.output
    assert number(stopped["acked"]) == number(stopped["published"])
    progress = [number(m["stored"]) for line in first.lines if (m := PROGRESS_STORED.search(line))]
    stored_by_gateway = [int(m["stored"]) for line in first.lines
                         if (m := GATEWAY_STOPPED.search(line))]

    second = start_demo("--no-supply-chain", "--devices", str(DEVICES), "--rate", "5",
                        "--duration", "15")
    store = second.wait_for(STORE, timeout=60)
    kept = number(store["stored"])
    assert (store["migrations"], store["new"]) == ("0", "0"), second.output
    assert kept > 0
    assert kept >= max([seen_stored, *progress]), (kept, seen_stored, progress)
    if stored_by_gateway:  # the gateway logs its totals on stop (INFO): nothing went missing
        assert kept == stored_by_gateway[-1], (kept, stored_by_gateway)

    # The officer account and its password survive the restart.
    assert second.wait_for(DASHBOARD, timeout=30)["password"] == password
    base, token = officer_token(second)
    health, latest = wait_for_fleet_in_store(second, base, token, timeout=4, more_than=kept)
    assert health["devices"] == DEVICES and health["dead_letters"] == 0
    assert second.wait_exit(timeout=60) == 0, second.output
    assert "stopped cleanly" in second.output


def test_demo_theft_scenario_raises_outbound_alerts(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--no-supply-chain", "--devices", str(DEVICES), "--rate", "5",
                      "--duration", "30",
                      "--scenario", "theft")
    demo.wait_for(HTTP, timeout=60)
    base, token = officer_token(demo)
    wait_for_fleet_in_store(demo, base, token, timeout=10)
    deadline = time.monotonic() + 20
    listed = ""
    while time.monotonic() < deadline and listed.count("unauthorised_outbound") < 4:
        listed = pledgewatch_cli(demo.state_dir, "alerts", "list").stdout
        time.sleep(0.5)
    # Every warehouse lot (4 of 8 devices) lost 30 % of its goods with no release.
    assert listed.count("unauthorised_outbound") == 4, listed
    assert "geofence_exit" not in listed and "sensor_tamper" not in listed, listed
    # The officer sees the same alerts through the API, with their evidence.
    alerts = get_json(f"{base}/api/v1/alerts?type=unauthorised_outbound", token)["items"]
    assert {a["lot_id"] for a in alerts} == {f"lot-wh-000{i}" for i in range(1, 5)}, alerts
    assert all(a["severity"] == "critical" and a["evidence"] for a in alerts), alerts
    assert demo.wait_exit(timeout=60) == 0, demo.output


DELIVERY_DONE = re.compile(r"^delivery: (?P<real>ar-dlv-real-\d+) (?P<outcome>[\w ]+) \(proven by "
                           r"telemetry.*; (?P<phantom>ar-dlv-phantom-\d+) (?P<flag>[\w ]+) \(a "
                           r"fictitious_trade alert\)$")


def test_demo_supply_chain_moves_vouchers_and_proves_a_delivery_by_its_truck(
        start_demo: Callable[..., Demo]) -> None:
    """The supply chain over the real broker, store and API: a truck's route proves one invoice
    and the truck that never left flags the other; the steelworks' payables reach tier 3."""
    demo = start_demo("--devices", "4", "--rate", "1", "--duration", "75")
    base, token = officer_token(demo)
    done = demo.wait_for(DELIVERY_DONE, timeout=120)
    assert (done["outcome"], done["flag"]) == ("verified", "contradicted"), demo.output
    receivables = {r["receivable_id"]: r for r in get_json(
        f"{base}/api/v1/receivables?limit=500", token)["items"]}
    real, phantom = receivables[done["real"]], receivables[done["phantom"]]
    assert real["trade_status"] == "verified" and real["verified_by"] == "telemetry"
    assert real["trade_evidence"]["checks"]["arrived_and_stopped"] is True
    assert real["confirmed_at"] is not None, "the steelworks confirmed the proven delivery"
    assert phantom["trade_status"] == "contradicted" and phantom["verified"] is False
    flags = get_json(f"{base}/api/v1/alerts?type=fictitious_trade", token)["items"]
    assert [a["evidence"]["receivable_id"] for a in flags] == [done["phantom"]]

    chain = get_json(f"{base}/api/v1/programmes/steel-chain/chain", token)
    vouchers = chain["vouchers"]
    holders = {v["holder_id"] for v in vouchers}
    assert {"sup-ore-trading", "sup-scrap-metals", "sup-grain-coop"} <= holders, vouchers
    tier3 = [v for v in vouchers if v["holder_id"] == "sup-grain-coop"]
    assert tier3 and all(v["status"] == "financed" for v in tier3), tier3
    detail = get_json(f"{base}/api/v1/vouchers/{tier3[0]['voucher_id']}", token)
    assert detail["tier"] == 3 and detail["confirmation"]["debtor_id"] == "core-steelworks"
    assert sum(v["amount"] for v in vouchers
               if v["root_id"] == detail["root_id"] and v["status"] != "spent") == \
        detail["path"][0]["amount"]
    assert demo.wait_exit(timeout=90) == 0, demo.output
