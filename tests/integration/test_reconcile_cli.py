"""`pledgewatch reconcile statement|stock|goods` against a real database (in this process): the
breaks listed, a bad file one line per bad field and exit 2, goods three ways."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from tests.integration.test_cli_failures import invoke

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

PORTFOLIO = Path(__file__).parents[1] / "data" / "portfolio.yaml"


def test_an_officer_reconciles_a_statement_and_the_goods(
        migrated_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_portfolio(conn, read_portfolio(PORTFOLIO), datetime.now(UTC))
    statement = tmp_path / "statement.csv"
    statement.write_text("reference,facility_id,amount,currency,direction,value_date\n"
                         "dd-unknown,fac-metal,500.00,CNY,debit,2026-11-30\n")
    stock = tmp_path / "stock.csv"
    stock.write_text("lot_id,quantity,as_of\nlot-wheat-1,70,2026-11-30T08:00:00Z\n")

    def cli(*args: str) -> tuple[int, str, str]:
        proc = invoke(list(args), monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=migrated_db)
        return proc.returncode, proc.stdout, proc.stderr

    code, out, _ = cli("reconcile", "statement", str(statement))
    assert code == 0, out
    assert "1 lines, 0 matched, 1 break(s)" in out
    assert "missing_in_platform  fac-metal dd-unknown (line 2)" in out
    code, _, err = cli("reconcile", "statement", str(statement))
    assert code == 2 and "already imported" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("reference,facility_id,amount,currency,direction,value_date\n"
                   "dd-1,fac-metal,1.001,CNY,debit,2026-11-30\n"
                   "dd-2,fac-metal,1,CNY,up,2026-11-30\n")
    code, out, err = cli("reconcile", "statement", str(bad))
    assert code == 2 and out == ""
    assert "line 2, amount" in err and "line 3, direction" in err
    code, _, err = cli("reconcile", "statement", str(tmp_path / "missing.csv"))
    assert code == 2 and "No such file" in err

    code, out, _ = cli("reconcile", "stock", str(stock))
    assert (code, out) == (0, "stock ledger: 1 line(s) imported\n")
    code, out, _ = cli("reconcile", "goods", "--flagged")
    assert code == 0
    assert ("lot-wheat-1 (fac-grain): pledged 100.0, sensors —, operator 70.0  DIFFERS: "
            "operator_vs_pledged") in out
