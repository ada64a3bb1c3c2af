"""`pledgewatch bench ledger` end to end with small numbers (a scratch database on the test server,
8 writers, a sequencer process, a log of 20,000 entries): every line in the contract's format, in
order, `ratio` last, and the scratch database dropped afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def scratch_databases(pg: PgServer) -> set[str]:
    with psycopg.connect(pg.admin_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database"
                            " WHERE datname LIKE 'pw_bench_ledger_%'").fetchall()
    return {r[0] for r in rows}


def test_bench_ledger_prints_its_figures_and_the_ratio_last(pg: PgServer, tmp_path: Path) -> None:
    before = scratch_databases(pg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pledgewatch", "bench", "ledger", "--entries", "20000",
         "--seconds", "2", "--proofs", "300", "--database-url", pg.admin_url,
         "--workdir", str(tmp_path / "work")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    patterns = [r"ledger_append per_s (?P<append>[0-9]+)",
                r"plain_insert per_s (?P<plain>[0-9]+)",
                rf"inclusion_proof p50 (?P<p50>{NUMBER}) ms p99 (?P<p99>{NUMBER}) ms",
                rf"verify entries (?P<entries>[0-9]+) seconds (?P<verify>{NUMBER})",
                rf"ratio (?P<ratio>{NUMBER})"]
    assert len(lines) == len(patterns), proc.stdout + proc.stderr
    found: dict[str, str] = {}
    for pattern, line in zip(patterns, lines, strict=True):
        m = re.fullmatch(pattern, line)
        assert m is not None, (pattern, line)
        found.update(m.groupdict())
    assert int(found["append"]) > 0 and int(found["plain"]) > 0
    assert 0 < float(found["p50"]) <= float(found["p99"])
    assert int(found["entries"]) >= 20000
    assert float(found["ratio"]) > 0
    assert re.search(r"verified [0-9,]+ entries and [0-9]+ signed heads", proc.stderr)
    assert scratch_databases(pg) == before  # dropped
