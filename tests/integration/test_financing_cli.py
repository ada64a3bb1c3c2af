"""`pledgewatch drawdown|blacklist|programme|financing` against a real database (in this process,
through Typer's runner): what an operator sees, and one line with exit 2 for what is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from tests.integration.test_cli_failures import invoke, one_error_line

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

PORTFOLIO = Path(__file__).parents[1] / "data" / "portfolio.yaml"


def test_an_operator_runs_drawdowns_the_blacklist_and_programmes(
        migrated_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_portfolio(conn, read_portfolio(PORTFOLIO), datetime.now(UTC))
        conn.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                     " outstanding, collateral_value, inputs) VALUES ('fac-metal', now(), 50000,"
                     " 50000, 0, 80000, '{}')")

    def cli(*args: str) -> str:
        proc = invoke(list(args), monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=migrated_db)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    def refused(*args: str, says: str) -> None:
        proc = invoke(list(args), monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=migrated_db)
        one_error_line(" ".join(args), proc, says)

    out = cli("drawdown", "request", "fac-metal", "20000", "--tenor", "30", "--key", "erp-0001")
    assert re.search(r"dd-\w+ fac-metal 20,000.00 CNY approved, matures", out), out
    again = cli("drawdown", "request", "fac-metal", "20000", "--tenor", "30", "--key", "erp-0001")
    assert again.startswith("(retry: already made)") and out.split()[0] in again
    refused("drawdown", "request", "fac-metal", "999", "--tenor", "30", "--key", "erp-0001",
            says="Idempotency-Key was used for a different request")
    refused("drawdown", "request", "fac-metal", "10", "--currency", "USD", says="lends in CNY")
    refused("drawdown", "request", "fac-nowhere", "10", says="no facility 'fac-nowhere'")

    over = cli("drawdown", "request", "fac-metal", "40000")
    assert "pending" in over and "exceeds the available limit 30,000.00 CNY" in over
    pending_id = over.split()[0]
    assert pending_id in cli("drawdown", "list", "--status", "pending")
    refused("drawdown", "approve", pending_id, says="exceeds the available limit")
    assert "rejected" in cli("drawdown", "reject", pending_id, "--comment", "too much")
    refused("drawdown", "reject", pending_id, says="is rejected, not pending")

    assert "blacklisted by officer: fraud" in cli("blacklist", "add", "sup-metal", "--reason",
                                                  "fraud")
    refused("blacklist", "add", "sup-metal", "--reason", "again", says="already on the blacklist")
    held = cli("drawdown", "request", "fac-metal", "10")
    assert "pending" in held and "borrower is on the blacklist: fraud" in held
    assert "sup-metal: fraud" in cli("blacklist", "list")
    cli("blacklist", "remove", "sup-metal")
    assert cli("blacklist", "list") == "the blacklist is empty\n"
    assert "removed" in cli("blacklist", "list", "--all")
    refused("blacklist", "remove", "sup-metal", says="no blacklist entry")

    made = cli("programme", "create", "mill", "--core", "core-mill", "--line", "1000000")
    assert "programme mill: core-mill's chain, line 1,000,000.00 CNY" in made
    refused("programme", "create", "bad", "--core", "sup-metal", "--line", "10",
            says="not a core enterprise")
    assert "used 0.00" in cli("programme", "list")
    assert "facility fac-metal: repaid 5,000.00, outstanding 15,000.00" in cli(
        "repay", "fac-metal", "5000")
    assert cli("financing", "sweep") == ("overdue drawdowns 0, late payables 0, "
                                         "trades judged 0\n")
