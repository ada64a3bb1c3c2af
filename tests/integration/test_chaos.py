"""`pledgewatch bench chaos --quick`, the short version of the chaos suite: a real `pledgewatch
gateway` SIGKILLed mid-stream, the bench's own PostgreSQL stopped (immediate shutdown) and started,
and its own mosquitto stopped and restarted, each while two real paho clients publish; every
PUBACKed message is stored exactly once. Plus the outage on a shared server (connections refused),
the pieces the counts rest on, and the command's refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bench.chaos import Outcome, Window, held_slots, lost_split
from bench.chaos_rig import READINGS, device_ids, make_messages, message_index, read_persistence
from pledgewatch.broker.mosquitto import CONFIG
from pledgewatch.cli.main import app
from telemetry.contract.payload import Accepted, DeviceInfo, Limits, decode_message
from tests.support import PgServer

pytestmark = pytest.mark.integration

LINE = re.compile(r"^(?P<name>[a-z_]+) published (?P<published>\d+) acked (?P<acked>\d+) stored "
                  r"(?P<stored>\d+) duplicates (?P<duplicates>\d+) lost (?P<lost>\d+) "
                  r"seconds (?P<seconds>[\d.]+)$")
QUICK = ["gateway_sigkill", "db_outage", "broker_restart_graceful"]
BOX = re.compile(r"[│╭╮╰╯─]")


@dataclass
class Run:
    code: int
    lines: list[str]
    err: str


def chaos(*args: str, workdir: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env["PLEDGEWATCH_STATE_DIR"] = str(workdir / "state")
    done = subprocess.run(
        [sys.executable, "-m", "pledgewatch", "bench", "chaos", *args, "--workdir",
         str(workdir)], env=env, capture_output=True, text=True, timeout=240, check=False)
    return Run(done.returncode, done.stdout.splitlines(), done.stderr)


def scenario_lines(run: Run) -> dict[str, dict[str, float]]:
    out = {}
    for line in run.lines:
        match = LINE.match(line)
        if match:
            out[match["name"]] = {k: float(v) for k, v in match.groupdict().items() if k != "name"}
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("chaos")
    args = [a for name in QUICK for a in ("--scenario", name)]
    yield chaos("--quick", *args, workdir=workdir)


def test_quick_run_prints_one_contract_line_per_scenario_and_the_totals_last(quick: Run) -> None:
    assert quick.code == 0, "\n".join(quick.lines) + quick.err[-3000:]
    assert "Traceback" not in quick.err, quick.err
    assert quick.lines[0].startswith("chaos: 3 scenario(s), 3000 messages each"), quick.lines[0]
    names = [m["name"] for m in map(LINE.match, quick.lines) if m]
    assert names == QUICK, quick.lines
    assert quick.lines[-2:] == ["lost_in_broker_window 0", "lost_total 0"], quick.lines


@pytest.mark.parametrize("scenario", QUICK)
def test_every_acknowledged_message_is_stored_once(quick: Run, scenario: str) -> None:
    figures = scenario_lines(quick)[scenario]
    assert figures["published"] == 3000
    assert figures["acked"] == 3000
    assert figures["stored"] == 3000
    assert figures["duplicates"] == 0
    assert figures["lost"] == 0
    assert figures["seconds"] > 0


def test_the_chaos_struck_mid_stream(quick: Run) -> None:
    killed = re.search(r"gateway_sigkill: gateway SIGKILLed with (\d+) of 3000 messages stored",
                       quick.err)
    assert killed and 0 < int(killed[1]) < 3000, quick.err
    assert re.search(r"db_outage: database down \(immediate\) with 750\+ of 3000", quick.err)
    assert "db_outage: database up again" in quick.err
    stopped = re.search(r"broker_restart_graceful: broker stopped \(SIGTERM\) at (\d+)\+ of 3000",
                        quick.err)
    assert stopped and int(stopped[1]) < 3000, quick.err


@pytest.mark.once_per_run
def test_an_outage_on_a_shared_server_refuses_connections_and_drops_the_bench_database(
        db_kind: str, pg: PgServer, tmp_path: Path) -> None:
    run = chaos("--quick", "--scenario", "db_outage", "--messages", "600", "--rate", "300",
                "--outage", "1", "--database-url", pg.admin_url, workdir=tmp_path)
    assert run.code == 0, "\n".join(run.lines) + run.err[-3000:]
    assert "outage = connections to the bench's database refused and cut" in run.lines[0]
    figures = scenario_lines(run)["db_outage"]
    assert (figures["acked"], figures["stored"], figures["lost"]) == (600, 600, 0)
    name = re.search(r"database (pledgewatch_chaos_[0-9a-f]+) on the given server", run.lines[0])
    assert name, run.lines[0]
    with psycopg.connect(pg.admin_url) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name[1],)).fetchone()
    assert left is None, f"{name[1]} was not dropped"


# --- the pieces the counts rest on (no I/O) -----------------------------------------------------

def test_the_messages_are_valid_contract_v1_and_map_back_to_their_index() -> None:
    devices = device_ids("cxabc", 3)
    messages = make_messages("cxabc", devices, 10)
    registry = {d: DeviceInfo(d, "cxabc", "warehouse") for d in devices}
    now = datetime.now(UTC)
    for i, (topic, payload) in enumerate(messages):
        out = decode_message(topic, payload, now, registry, Limits())
        assert isinstance(out, Accepted), out
        assert len(out.readings) == READINGS
        assert message_index(devices, out.device_id, out.seq) == i


def test_broker_persistence_is_read_from_the_config_text() -> None:
    shipped = read_persistence(CONFIG.read_text())
    assert shipped.enabled, "the project's broker config must keep persistence on"
    text = ("# persistence false\npersistence true\nautosave_interval 5\n"
            "autosave_on_changes true\npersistence_file x.db\n")
    assert read_persistence(text).autosave_on_changes
    assert read_persistence(text).autosave_interval == 5
    assert read_persistence(text).file == "x.db"
    assert read_persistence("").enabled is False  # mosquitto's defaults
    assert read_persistence("").autosave_interval == 1800
    assert read_persistence("persistence true").describe() == "persistence on, autosave every 1800 s"


def test_losses_in_the_broker_window_are_those_acknowledged_between_snapshot_and_restart() -> None:
    acked = {("d", 0): 10.0, ("d", 1): 20.0, ("d", 2): 30.0, ("d", 3): 40.0}
    stored = frozenset({("d", 0)})
    killed = frozenset(acked)
    assert lost_split(acked, stored, Window(25.0, killed)) == (3, 2)
    restarted_acked_3 = frozenset({("d", 0), ("d", 1), ("d", 2)})  # ("d", 3): the new broker's
    assert lost_split(acked, stored, Window(25.0, restarted_acked_3)) == (3, 1)
    assert lost_split(acked, stored, None) == (3, 0)
    assert lost_split(acked, frozenset(acked), Window(0.0, killed)) == (0, 0)
    outcome = Outcome("broker_kill_before_autosave", 4, 4, 1, 0, 3, 12.345, in_window=2,
                      window=True)
    assert outcome.lost_outside_window == 1
    assert LINE.match(outcome.line())
    assert outcome.line().endswith("lost 3 seconds 12.3")


def test_the_slots_a_gateway_holds_are_read_from_its_log() -> None:
    log = ("INFO took slot 0 (gw-slot-0)\nINFO took slot 1 (gw-slot-1)\n"
           "INFO released slot 1 (gw-slot-1)\nINFO took slot 12 (gw-slot-12)\n")
    assert held_slots(log) == [0, 12]
    assert held_slots("") == []
    assert held_slots("took slot x; released slot 3") == []


# --- refusals: exit 2, one message, nothing started ---------------------------------------------

@pytest.mark.parametrize(("args", "says"), [
    (["--scenario", "nope"], "--scenario: unknown 'nope'"),
    (["--scenario", "db_outage; rm -rf /"], "--scenario: unknown 'db_outage; rm -rf /'"),
    (["--scenario", ""], "--scenario: unknown ''"),
    (["--pg-stop", "sideways"], "--pg-stop must be fast or immediate"),
    (["--database-url", "mysql://root@localhost/x"], "--database-url must start with postgresql://"),
    (["--messages", "99"], "Invalid value for '--messages'"),
    (["--messages", "1e9"], "Invalid value for '--messages'"),
    (["--rate", "0"], "Invalid value for '--rate'"),
    (["--rate", "nan"], "Invalid value for '--rate'"),
    (["--outage", "inf"], "Invalid value for '--outage'"),
    (["--outage", "-1"], "Invalid value for '--outage'"),
    (["--outage", "601"], "Invalid value for '--outage'"),
])
def test_bad_arguments_are_refused_with_one_message(
        args: list[str], says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["bench", "chaos", *args, "--workdir", str(tmp_path)])
    text = " ".join(BOX.sub(" ", result.output).split())
    assert result.exit_code == 2, text
    assert says in text, text
    assert "Traceback" not in text
    assert not any(tmp_path.iterdir()), "something was started before the refusal"


def test_what_a_killed_broker_lost_comes_back_from_the_devices_outboxes(tmp_path: Path) -> None:
    """Simulated devices with store confirmations: the broker is SIGKILLed before an autosave
    with messages queued for the stopped gateway, and still nothing is lost."""
    run = chaos("--quick", "--scenario", "broker_kill_devices", workdir=tmp_path)
    assert run.code == 0, "\n".join(run.lines) + run.err[-3000:]
    figures = scenario_lines(run)["broker_kill_devices"]
    assert figures["published"] >= 3000
    assert figures["stored"] == figures["published"] == figures["acked"]
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    queued = re.search(r"broker SIGKILLed with about (\d+) PUBACKed messages queued", run.err)
    assert queued and int(queued[1]) >= 1500, run.err  # what the broker lost was real
    recovered = next(line for line in run.lines if " recovered_from_outboxes " in line)
    assert int(recovered.split()[2]) >= int(queued[1]), recovered
    assert run.lines[-1] == "lost_total 0"
