"""`pledgewatch bench api` end to end with tiny numbers: a scratch database on the test server,
both servers, wrk, and the printed lines. Not a timing test: only the format and a positive ratio."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.api import wrk_binary
from tests.support import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
FIGURE = re.compile(rf"^(?P<route>\S+) rps (?P<rps>[0-9]+) p50 (?P<p50>{NUMBER}) ms "
                    rf"p99 (?P<p99>{NUMBER}) ms$")
ROUTES = ["/api/v1/facilities/{id}/limit", "/api/v1/alerts", "baseline"]


def bench_databases(pg: PgServer) -> set[str]:
    with psycopg.connect(pg.admin_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pledgewatch_bench_%'")
        return {r[0] for r in rows}


def test_bench_api_prints_a_line_per_route_and_the_ratio_last(pg: PgServer, tmp_path: Path) -> None:
    if wrk_binary() is None:
        pytest.skip("needs wrk (apt-get install wrk)")
    before = bench_databases(pg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_DATABASE_URL=pg.admin_url, PLEDGEWATCH_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pledgewatch", "bench", "api", "--facilities", "200", "--duration",
         "1s", "--warmup", "1s", "--connections", "2", "--threads", "1", "--repeat", "2",
         "--workdir", str(tmp_path / "work")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()

    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == 2 * (len(ROUTES) + 1)
    for line in rounds:
        body = line.split(": ", 1)[1]
        assert FIGURE.match(body) or re.fullmatch(rf"ratio {NUMBER}", body), line

    final = lines[-(len(ROUTES) + 1):]
    figures = [FIGURE.match(line) for line in final[:-1]]
    assert [m.group("route") if m else None for m in figures] == ROUTES, final
    for m in figures:
        assert m is not None and int(m.group("rps")) > 0
        assert 0 < float(m.group("p50")) <= float(m.group("p99"))
    ratio = re.fullmatch(rf"ratio ({NUMBER})", final[-1])
    assert ratio is not None and float(ratio.group(1)) > 0, final[-1]
    assert "loaded 200 borrowers/facilities" in proc.stderr
    assert bench_databases(pg) == before  # the scratch database is gone
