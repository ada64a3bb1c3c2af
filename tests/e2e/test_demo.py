"""`pledgewatch demo` with only the embedded defaults: the whole platform in one process, queried
over real HTTP while it runs, then restarted on the same state directory to show the data stayed."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 8
STORE = re.compile(r"^store: (?P<backend>.+) \(embedded\), (?P<migrations>\d+) migration\(s\) applied, "
                   r"(?P<new>\d+) new device\(s\), (?P<stored>[\d,]+) readings already stored$")
HTTP = re.compile(r"^http: (?P<url>http://127\.0\.0\.1:(?P<port>\d+))/health ")
BROKER = re.compile(r"^broker: mqtt://127\.0\.0\.1:(?P<port>\d+) \(embedded\)$")
PROGRESS_STORED = re.compile(r"stored (?P<stored>[\d,]+) readings")
FLEET_STOPPED = re.compile(r"^fleet stopped: (?P<published>[\d,]+) published, "
                           r"(?P<acked>[\d,]+) acknowledged, (?P<pending>[\d,]+) still pending$")
GATEWAY_STOPPED = re.compile(r"gateway stopped: .*'stored': (?P<stored>\d+)")
PORTFOLIO = re.compile(r"^portfolio: (?P<borrowers>\d+) borrowers .*, (?P<facilities>\d+) facilities, "
                       r"(?P<lots>\d+) pledged lots$")
LENDING = re.compile(r"lending: (?P<changes>[\d,]+) limit changes, (?P<alerts>[\d,]+) alerts raised")


def number(text: str) -> int:
    return int(text.replace(",", ""))


class Demo:
    """A `python -m pledgewatch demo` subprocess whose output is read line by line, with deadlines."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        self.state_dir = state_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
        env.update(PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_HTTP_PORT="0",
                   PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pledgewatch", "demo", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(self.lines[-1])
        self._new.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        for line in self.lines:
            if m := pattern.search(line):
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"demo exited ({self.proc.poll()}) before {pattern.pattern!r}:\n"
                            f"{self.output}")
            if m := pattern.search(line):
                return m
        pytest.fail(f"no {pattern.pattern!r} within {timeout}s:\n{self.output}")

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo still running after {timeout}s:\n{self.output}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGTERM first (the demo stops its embedded services cleanly), SIGKILL if that hangs."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def pledgewatch_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pledgewatch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def stop_leftover_postgres(data_dir: Path) -> None:
    """pg_ctl daemonizes: a demo killed hard leaves its PostgreSQL running. Stop that postmaster
    (the one whose pid its own data directory records) with SIGQUIT, PostgreSQL's immediate
    shutdown, and wait for it to go."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        started.append(Demo(tmp_path / "state", *args))
        return started[-1]

    yield start
    for demo in started:
        demo.kill()
    stop_leftover_postgres(tmp_path / "state" / "postgres")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def wait_for_fleet_in_store(demo: Demo, base: str, timeout: float, more_than: int = 0
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll /health and /devices/latest until every device has readings (and the store holds more
    than ``more_than``); return the last answers."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    latest: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert demo.proc.poll() is None, f"demo exited while being queried:\n{demo.output}"
        health = get_json(f"{base}/health")
        latest = get_json(f"{base}/devices/latest?tenant=demo")
        if (health["devices"] == DEVICES and health["readings"] > more_than
                and len(latest) == DEVICES and all(d["readings"] for d in latest)):
            return health, latest
        time.sleep(0.2)
    pytest.fail(f"the fleet did not reach the store: health={health} latest={latest}\n"
                f"{demo.output}")


def test_demo_serves_live_data_and_keeps_it_across_a_restart(start_demo: Callable[..., Demo]
                                                             ) -> None:
    first = start_demo("--devices", str(DEVICES), "--rate", "5", "--duration", "6")
    store = first.wait_for(STORE, timeout=60)
    assert store["backend"] == "plain PostgreSQL"
    assert (store["migrations"], store["new"], store["stored"]) == ("3", str(DEVICES), "0")
    portfolio = first.wait_for(PORTFOLIO, timeout=10)
    assert (portfolio["borrowers"], portfolio["facilities"]) == ("6", "5")
    assert number(portfolio["lots"]) == 6  # 8 devices: 4 warehouses + 2 vehicles (2 lines unpledged)
    assert number(first.wait_for(BROKER, timeout=5)["port"]) != 1883
    http = first.wait_for(HTTP, timeout=30)
    assert number(http["port"]) not in (0, 8000)

    health, latest = wait_for_fleet_in_store(first, http["url"], timeout=6)
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["dead_letters"] == 0
    assert {d["tenant"] for d in latest} == {"demo"}
    assert len({d["device_id"] for d in latest}) == DEVICES
    for device in latest:
        assert device["online"] is True, device
        for metric, reading in device["readings"].items():
            assert isinstance(reading["value"], float), (device["device_id"], metric, reading)
    # A second process shares the demo's embedded database (and must leave it running).
    limit = pledgewatch_cli(first.state_dir, "facility", "limit", "fac-sup-ore-trading")
    assert limit.returncode == 0, limit.stdout + limit.stderr
    assert "limit " in limit.stdout and "lot lot-wh-0001 (steel-coil)" in limit.stdout
    assert first.wait_for(LENDING, timeout=10)
    health, _ = wait_for_fleet_in_store(first, http["url"], timeout=5)
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

    second = start_demo("--devices", str(DEVICES), "--rate", "5", "--duration", "4")
    store = second.wait_for(STORE, timeout=60)
    kept = number(store["stored"])
    assert (store["migrations"], store["new"]) == ("0", "0"), second.output
    assert kept > 0
    assert kept >= max([seen_stored, *progress]), (kept, seen_stored, progress)
    if stored_by_gateway:  # the gateway logs its totals on stop (INFO): nothing went missing
        assert kept == stored_by_gateway[-1], (kept, stored_by_gateway)

    http = second.wait_for(HTTP, timeout=30)
    health, latest = wait_for_fleet_in_store(second, http["url"], timeout=4, more_than=kept)
    assert health["devices"] == DEVICES and health["dead_letters"] == 0
    assert second.wait_exit(timeout=60) == 0, second.output
    assert "stopped cleanly" in second.output


def test_demo_theft_scenario_raises_outbound_alerts(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--devices", str(DEVICES), "--rate", "5", "--duration", "14",
                      "--scenario", "theft")
    http = demo.wait_for(HTTP, timeout=60)
    wait_for_fleet_in_store(demo, http["url"], timeout=10)
    deadline = time.monotonic() + 20
    listed = ""
    while time.monotonic() < deadline and listed.count("unauthorised_outbound") < 4:
        listed = pledgewatch_cli(demo.state_dir, "alerts", "list").stdout
        time.sleep(0.5)
    # Every warehouse lot (4 of 8 devices) lost 30 % of its goods with no release.
    assert listed.count("unauthorised_outbound") == 4, listed
    assert "geofence_exit" not in listed and "sensor_tamper" not in listed, listed
    assert demo.wait_exit(timeout=60) == 0, demo.output
