"""`pledgewatch bench engine` at a tiny size against a real PostgreSQL: every figure is printed in
the contract's format, in order, with ``ratio`` last."""

from __future__ import annotations

import re

import psycopg
import pytest
from typer.testing import CliRunner

from pledgewatch.cli.main import app
from tests.support import PgServer

pytestmark = pytest.mark.integration

NUMBER = r"\d+(?:\.\d+)?"
LINES = [
    re.compile(rf"^load {NUMBER} s$"),
    re.compile(rf"^full_pass {NUMBER} s$"),
    re.compile(r"^price_tick \d+ ms (?P<n>\d+) facilities$"),
    re.compile(r"^telemetry_p99 \d+ ms$"),
    re.compile(r"^rss_mb (?P<mb>\d+)$"),
    re.compile(rf"^engines 1 full_pass {NUMBER} s$"),
    re.compile(rf"^engines 2 full_pass {NUMBER} s$"),
]
RATIO = re.compile(rf"^ratio {NUMBER}$")


def test_bench_engine_prints_its_figures_in_order_and_cleans_up(
        pg_servers: dict[str, PgServer]) -> None:
    server = pg_servers["embedded-pg"].admin_url
    result = CliRunner().invoke(app, [
        "bench", "engine", "--facilities", "50", "--lots-per-facility", "2",
        "--telemetry-seconds", "1", "--telemetry-rate", "500", "--database-url", server])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("(")]
    assert len(lines) == len(LINES) + 1, lines
    for pattern, line in zip(LINES, lines, strict=False):
        assert pattern.match(line), (pattern.pattern, line)
    tick = LINES[2].match(lines[2])
    assert tick is not None and int(tick["n"]) == 17  # facilities 0, 3, …, 48 hold c0
    rss = LINES[4].match(lines[4])
    assert rss is not None and int(rss["mb"]) > 0
    assert RATIO.match(lines[-1]), lines[-1]
    with psycopg.connect(server) as conn:  # its scratch database is gone
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE"
                            " 'pw_bench_engine_%'").fetchone()
    assert left == (0,)


@pytest.mark.parametrize(("args", "message"), [
    (["--facilities", "0"], "--facilities"),
    (["--lots-per-facility", "51"], "--lots-per-facility"),
    (["--telemetry-rate", "nan"], "--telemetry-rate"),
    (["--database-url", "mysql://x"], "--database-url must start with postgresql://"),
])
def test_bench_engine_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", "engine", *args])
    assert result.exit_code != 0
    assert message in result.output
