"""`pledgewatch bench financing` end to end with small numbers (a scratch database on the test
server, the real API and the baseline as processes, concurrent clients): every line in the
contract's format, in order, `overdrafts 0` last; and the audit behind that line counts an
overdrawn facility and a voucher spent twice when there are some."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from bench.financing import audit, borrower_id, facility_id, load
from tests.support import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
FIGURE = re.compile(rf"^(?P<op>drawdown|transfer|baseline) per_s (?P<per_s>[0-9]+) "
                    rf"p50 (?P<p50>{NUMBER}) ms p99 (?P<p99>{NUMBER}) ms$")


def scratch_databases(pg: PgServer) -> set[str]:
    with psycopg.connect(pg.admin_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database"
                            " WHERE datname LIKE 'pw_bench_financing_%'").fetchall()
    return {r[0] for r in rows}


def test_bench_financing_prints_three_figures_the_ratio_and_no_overdrafts(
        pg: PgServer, tmp_path: Path) -> None:
    before = scratch_databases(pg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pledgewatch", "bench", "financing", "--facilities", "200",
         "--clients", "16", "--seconds", "2", "--warmup", "50", "--database-url", pg.admin_url,
         "--workdir", str(tmp_path / "work")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5, lines
    figures = [FIGURE.match(line) for line in lines[:3]]
    assert [m["op"] if m else None for m in figures] == ["drawdown", "transfer", "baseline"], lines
    for m in figures:
        assert m is not None and int(m["per_s"]) > 0
        assert 0 < float(m["p50"]) <= float(m["p99"])
    ratio = re.fullmatch(rf"ratio ({NUMBER})", lines[3])
    assert ratio is not None and float(ratio[1]) > 0, lines[3]
    assert lines[4] == "overdrafts 0", proc.stderr
    # the load raced: drawdowns were refused for the limit and double spends were tried
    assert re.search(r"drawdown: .*approved [0-9,]+, pending [0-9,]+", proc.stderr), proc.stderr
    assert re.search(r"transfer: .*double_spend_refused [0-9,]+", proc.stderr), proc.stderr
    assert "loaded 200 suppliers/facilities" in proc.stderr
    assert scratch_databases(pg) == before  # the scratch database is gone


def test_the_audit_counts_an_overdrawn_facility_and_a_voucher_spent_twice(
        migrated_db: str) -> None:
    now = datetime.now(UTC)
    book = load(migrated_db, 20, 3, now)
    assert audit(migrated_db).total == 0
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        limit = conn.execute("SELECT s.credit_limit - f.outstanding FROM limit_snapshots s"
                             " JOIN facilities f USING (facility_id) WHERE facility_id = %s",
                             (facility_id(3),)).fetchone()
        assert limit is not None
        conn.execute(  # past the lock: an approved drawdown one cent over the available limit
            "INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency, tenor_days, purpose,"
            " status, decided_by, decided_at, maturity) VALUES ('dd-over', %s, %s, 'EUR', 30,"
            " 'x', 'approved', 'auto', now(), now() + interval '30 days')",
            (facility_id(3), limit[0] + Decimal("0.01")))
        root = book.payables[0]
        conn.execute("UPDATE vouchers SET status = 'spent' WHERE voucher_id = %s",
                     (root.voucher_id,))
        for n, holder in enumerate(((root.holder + 1) % 20, (root.holder + 2) % 20)):
            conn.execute(  # two transfers of the whole voucher
                "INSERT INTO vouchers (voucher_id, programme_id, receivable_id, parent_id, root_id,"
                " holder_id, amount, maturity, status, created_by, created_at)"
                " SELECT %s, programme_id, receivable_id, voucher_id, root_id, %s, amount,"
                " maturity, 'active', 'x', %s FROM vouchers WHERE voucher_id = %s",
                (f"v-twice-{n}", borrower_id(holder), now + timedelta(seconds=n),
                 root.voucher_id))
    found = audit(migrated_db, double_paid=1, spent_twice=2)
    assert (found.overdrawn, found.misspent, found.double_paid, found.spent_twice) == (1, 1, 1, 2)
    assert found.total == 5
