"""`pledgewatch bench detection --quick` end to end against a real database: every scenario runs
through the real writer and the real engine and prints its line in the contract's format, the
totals come last, and what the bench says agrees with the alerts table."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bench.detection import Outcome, run_detection
from bench.detection_scenarios import SCENARIOS, Scenario
from pledgewatch.cli.main import app
from tests.support import PgServer

NUMBER = r"-?\d+(?:\.\d+)?"
SCENARIO_LINE = re.compile(rf"^(?P<name>[a-z0-9_]+) (?:detected (?P<minutes>{NUMBER}) (?P<units>\d+)"
                           rf" (?P<error>{NUMBER}|-)|missed - - -)$")
NORMAL_LINE = re.compile(r"^normal false_alerts (?P<n>\d+)$")
RATE_LINE = re.compile(rf"^false_alerts_per_1000_lot_days (?P<x>{NUMBER}|-)$")
MISSED_LINE = re.compile(r"^missed (?P<n>\d+)$")


@pytest.fixture(scope="module")
def quick_run(pg_servers: dict[str, PgServer]
              ) -> Iterator[tuple[list[str], str, dict[str, Outcome], str]]:
    """The whole quick library once for the module (embedded PostgreSQL)."""
    pg = pg_servers["embedded-pg"]
    url = pg.migrated_database()
    out, err = io.StringIO(), io.StringIO()
    outcomes: dict[str, Outcome] = {}

    def keep(scenario: Scenario, outcome: Outcome) -> None:
        outcomes[scenario.name] = outcome

    try:
        run_detection(url, seed=1, quick=True, scenarios=list(SCENARIOS), out=out, err=err,
                      on_outcome=keep)
        yield out.getvalue().splitlines(), err.getvalue(), outcomes, url
    finally:
        pg.drop(url)


def test_every_scenario_prints_one_line_in_the_format_and_the_totals_come_last(
        quick_run: tuple[list[str], str, dict[str, Outcome], str]) -> None:
    lines, err, _, _ = quick_run
    assert len(lines) == len(SCENARIOS) + 2, "\n".join(lines)
    assert NORMAL_LINE.match(lines[0]), lines[0]
    names = []
    for line in lines[1:-2]:
        match = SCENARIO_LINE.match(line)
        assert match, f"not a scenario line: {line!r}"
        names.append(match["name"])
    assert ["normal", *names] == list(SCENARIOS)
    rate, missed = RATE_LINE.match(lines[-2]), MISSED_LINE.match(lines[-1])
    assert rate and missed, lines[-2:]
    assert int(missed["n"]) == sum(1 for line in lines[1:-2] if " missed " in line)
    normal = NORMAL_LINE.match(lines[0])
    assert normal is not None
    # 4 lots for 6 hours: one lot-day
    assert float(rate["x"]) == pytest.approx(int(normal["n"]) * 1000.0)
    assert "detection: normal (seed 1, quick): 4 lot(s)" in err
    assert "Traceback" not in err, err


def test_what_the_bench_reports_is_what_the_alerts_table_holds(
        quick_run: tuple[list[str], str, dict[str, Outcome], str]) -> None:
    _, _, outcomes, url = quick_run
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT facility_id, type, raised_at FROM alerts").fetchall()
        loaded = {r[0] for r in conn.execute("SELECT lot_id FROM lots").fetchall()}
        devices = conn.execute("SELECT count(DISTINCT device_id) FROM readings").fetchone()
    seen = sum(len(o.alerts) for o in outcomes.values())
    assert seen == sum(1 for fid, _, _ in stored if not fid.startswith("fac-duplicate_pledge-other"))
    assert outcomes["normal"].false_alerts == len(outcomes["normal"].alerts)
    assert {f"lot-{n}" for n in SCENARIOS if n != "normal"} <= loaded
    assert devices is not None and devices[0] >= len(SCENARIOS) - 1 + 4


def test_a_fast_theft_is_found_within_minutes_with_the_units_it_took(
        quick_run: tuple[list[str], str, dict[str, Outcome], str]) -> None:
    """The engine of every version so far finds 30 % leaving in 5 minutes: a bench that said
    otherwise would be measuring itself."""
    _, _, outcomes, _ = quick_run
    for name in ("fast_theft_5s", "fast_theft_60s"):
        outcome = outcomes[name]
        assert outcome.detected, (name, outcome.notes, outcome.alerts)
        assert outcome.minutes is not None and -5.0 <= outcome.minutes <= 15.0
        assert outcome.units is not None and 40 <= outcome.units <= 600
        assert outcome.magnitude_error is not None and outcome.magnitude_error < 50.0


def test_the_command_makes_and_drops_its_own_database(pg_servers: dict[str, PgServer],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    pg = pg_servers["embedded-pg"]
    for name in [n for n in os.environ if n.startswith("PLEDGEWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PLEDGEWATCH_DATABASE_URL", pg.admin_url)
    monkeypatch.setenv("PLEDGEWATCH_STATE_DIR", str(tmp_path / "state"))
    with psycopg.connect(pg.admin_url) as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    result = CliRunner().invoke(app, ["bench", "detection", "--quick", "--scenario",
                                      "fast_theft_60s", "--scenario", "duplicate_pledge"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["fast_theft_60s", "duplicate_pledge",
                                                   "false_alerts_per_1000_lot_days", "missed"]
    assert lines[-2] == "false_alerts_per_1000_lot_days -"
    with psycopg.connect(pg.admin_url) as conn:
        after = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert after == before
