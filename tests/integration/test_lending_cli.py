"""`python -m pledgewatch portfolio|prices|facility|release|repay|sale|alerts` against a real
PostgreSQL, as an operator would run them. Each test gets its own database; checks are grouped
per test because every command is a process start."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_cli import output, pledgewatch

# Every check here is a process start: the commands run on one database kind per run (the
# configured server when named, else embedded); test_cli.py covers migrate on both kinds.
pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

DATA = Path(__file__).resolve().parents[1] / "data"
PORTFOLIO = DATA / "portfolio.yaml"


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, output(proc)
    assert "Traceback" not in output(proc)
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str], *expected: str, one_line: bool = False) -> str:
    """Exit code 2, each of ``expected`` said, no traceback; the error text."""
    text = output(proc)
    tail = "\n".join(text.splitlines()[-8:])  # a traceback's last lines say what broke
    assert proc.returncode == 2, tail
    assert "Traceback" not in text, tail
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"
    if one_line:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return text


def scalar(url: str, query: str, *params: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def land_readings(url: str) -> None:
    """Fresh, agreeing readings for fac-grain's sensors (100 t and 40 t of wheat)."""
    now = datetime.now(UTC)
    series = {("wh-t-0001", "weight_kg"): [100_000.0, 100_001.0, 99_999.0],
              ("rfid-t-0001", "rfid_count"): [100.0, 100.0, 100.0],
              ("wh-t-0002", "weight_kg"): [40_000.0, 40_001.0, 39_999.0]}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for (device, metric), values in series.items():
            for i, value in enumerate(values):
                t = now - timedelta(seconds=30 * (len(values) - i))
                cur.execute("INSERT INTO readings VALUES (%s, %s, %s, %s, 1, %s, %s)",
                            (t, device, metric, value, i, now))
            cur.execute("INSERT INTO device_status (device_id, tenant, online, last_seen,"
                        " changed_at) VALUES (%s, 'acme', true, %s, %s)", (device, now, now))


def test_load_a_portfolio_post_prices_and_explain_a_limit(migrated_db: str, tmp_path: Path) -> None:
    loaded = ok(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(PORTFOLIO)))
    assert ("loaded 3 borrower(s), 2 facilit(y/ies), 3 lot(s), 2 commodit(y/ies), "
            "1 receivable(s), 3 price(s)") in loaded
    assert scalar(migrated_db, "SELECT count(*) FROM lot_sensors") == 4
    assert scalar(migrated_db, "SELECT outstanding FROM facilities WHERE facility_id = 'fac-grain'"
                  ) == 100_000

    posted = ok(pledgewatch(migrated_db, tmp_path, "prices", "post", str(DATA / "prices.csv")))
    assert "posted 2 price(s); 2 facilit(y/ies) to revalue" in posted
    assert scalar(migrated_db, "SELECT count(*) FROM prices") == 5
    refused(pledgewatch(migrated_db, tmp_path, "prices", "post", str(DATA / "prices_malformed.csv")),
            "line 3", "not-a-price", one_line=True)
    assert scalar(migrated_db, "SELECT count(*) FROM prices") == 5, "a bad file posts nothing"
    refused(pledgewatch(migrated_db, tmp_path, "prices", "post", str(tmp_path / "absent.csv")),
            "no such file", one_line=True)

    land_readings(migrated_db)
    text = ok(pledgewatch(migrated_db, tmp_path, "facility", "limit", "fac-grain"))
    assert "facility fac-grain" in text
    assert "limit " in text and "CNY" in text
    assert "lot lot-wheat-1 (wheat)" in text and "lot lot-wheat-2 (wheat)" in text
    assert "outstanding 100,000.00" in text
    assert "last change: first assessment" in text

    data = json.loads(ok(pledgewatch(migrated_db, tmp_path, "facility", "limit", "fac-grain",
                                     "--json")))
    assert data["facility_id"] == "fac-grain" and data["currency"] == "CNY"
    assert data["line"] == 500_000 and data["outstanding"] == 100_000
    assert [lot["lot_id"] for lot in data["lots"]] == ["lot-wheat-1", "lot-wheat-2"]
    wheat = data["lots"][0]
    assert wheat["price"] == 2_790.5  # the newest price, from prices.csv
    assert wheat["pledged"] == pytest.approx(100, abs=0.05) and wheat["trust"] == 1.0
    assert wheat["advance_rate"] == 0.6
    assert 0 < data["limit"] <= data["line"]
    assert data["limit"] == pytest.approx(data["lots_base"])
    assert data["available"] == pytest.approx(data["limit"] - 100_000)
    assert data["ltv"] == pytest.approx(100_000 / data["trusted_collateral_value"])  # Σ value × trust
    assert data["last_change"] == ["first assessment"]
    assert float(scalar(migrated_db, "SELECT credit_limit FROM limit_snapshots WHERE facility_id ="
                        " 'fac-grain' ORDER BY id DESC LIMIT 1")) == pytest.approx(  # type: ignore[arg-type]
                            data["limit"], abs=0.01)

    refused(pledgewatch(migrated_db, tmp_path, "facility", "limit", "fac-nope"), "no facility",
            one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "facility", "limit", "x'; DROP TABLE lots;--"),
            "no facility")
    assert scalar(migrated_db, "SELECT count(*) FROM lots") == 3


def test_bad_portfolio_files_are_clear_errors(migrated_db: str, tmp_path: Path) -> None:
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(tmp_path / "absent.yaml")),
            "absent.yaml", "no such file", one_line=True)

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("borrowers:\n  - {id: b1, name: Müller}\n".encode("latin-1"))
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(latin1)),
            "latin1.yaml", "not UTF-8", one_line=True)

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(PORTFOLIO.read_text(encoding="utf-8").replace(
        "line: 500000", "line: -500000"), encoding="utf-8")
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(invalid)),
            "invalid.yaml", "facilities.0.line")

    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("facilities: [\n  {id: f1\n", encoding="utf-8")
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(not_yaml)),
            "not.yaml", "not valid YAML")

    assert scalar(migrated_db, "SELECT count(*) FROM facilities") == 0, "nothing may be loaded"

    nested = tmp_path / "nested.yaml"
    nested.write_text("lots: " + "[" * 5_000 + "]" * 5_000 + "\n", encoding="utf-8")
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(nested)), "nested.yaml")


def test_release_flow_repayments_and_sales(migrated_db: str, tmp_path: Path) -> None:
    ok(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(PORTFOLIO)))
    requested = ok(pledgewatch(migrated_db, tmp_path, "release", "request", "rel-1",
                               "--lot-id", "lot-wheat-1", "--quantity", "20"))
    assert "release rel-1: requested 20 unit(s) from lot-wheat-1" in requested
    refused(pledgewatch(migrated_db, tmp_path, "release", "execute", "rel-1"),
            "rel-1 is requested", "cannot become executed", one_line=True)
    assert "rel-1: approved" in ok(pledgewatch(migrated_db, tmp_path, "release", "approve", "rel-1"))
    assert scalar(migrated_db, "SELECT declared_quantity FROM lots WHERE lot_id = 'lot-wheat-1'") == 100
    assert "rel-1: executed (20 unit(s) of lot-wheat-1)" in ok(
        pledgewatch(migrated_db, tmp_path, "release", "execute", "rel-1"))
    assert scalar(migrated_db, "SELECT declared_quantity FROM lots WHERE lot_id = 'lot-wheat-1'") == 80
    refused(pledgewatch(migrated_db, tmp_path, "release", "reject", "rel-1"), "rel-1 is executed")
    refused(pledgewatch(migrated_db, tmp_path, "release", "request", "rel-2", "--lot-id",
                        "lot-wheat-1", "--quantity", "81"), "cannot release 81", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "release", "approve", "rel-none"),
            "no release order 'rel-none'", one_line=True)

    repaid = ok(pledgewatch(migrated_db, tmp_path, "repay", "fac-grain", "30000"))
    assert "facility fac-grain: repaid 30,000.00, outstanding 70,000.00" in repaid
    for amount in ("-5", "0", "abc", "nan", "inf", "1e300"):
        refused(pledgewatch(migrated_db, tmp_path, "repay", "fac-grain", "--", amount))
    refused(pledgewatch(migrated_db, tmp_path, "repay", "fac-nope", "10"), "no facility",
            one_line=True)
    assert scalar(migrated_db, "SELECT outstanding FROM facilities WHERE facility_id = 'fac-grain'"
                  ) == 70_000
    assert scalar(migrated_db, "SELECT count(*) FROM repayments") == 1

    sold = ok(pledgewatch(migrated_db, tmp_path, "sale", "fac-grain", "1234.5"))
    assert "facility fac-grain: sale of 1,234.50 recorded" in sold
    for amount in ("-1", "abc", "nan", "inf", "1e300"):
        refused(pledgewatch(migrated_db, tmp_path, "sale", "fac-grain", "--", amount))
    refused(pledgewatch(migrated_db, tmp_path, "sale", "fac-nope", "10"), "no facility",
            one_line=True)
    assert scalar(migrated_db, "SELECT count(*) FROM sales") == 1


def test_alerts_list_ack_and_resolve(migrated_db: str, tmp_path: Path) -> None:
    assert ok(pledgewatch(migrated_db, tmp_path, "alerts", "list")).strip() == "no alerts"

    ok(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(PORTFOLIO)))
    claim = tmp_path / "claim.csv"
    claim.write_text("id,facility,commodity,declared_quantity,unit_weight_kg,registration_no,"
                     "sensors\nlot-again,fac-metal,wheat,100,1000,ZDW-2026-0001,wh-new-1\n",
                     encoding="utf-8")
    refused(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(claim)),
            "duplicate pledge refused", "lot-wheat-1", "fac-grain")
    assert scalar(migrated_db, "SELECT count(*) FROM lots") == 3

    listed = ok(pledgewatch(migrated_db, tmp_path, "alerts", "list", "--facility", "fac-grain"))
    (line,) = listed.strip().splitlines()
    assert "duplicate_pledge" in line and "critical" in line and "open" in line
    assert "fac-grain lot-wheat-1" in line
    alert_id = line.split()[0].lstrip("#")
    assert ok(pledgewatch(migrated_db, tmp_path, "alerts", "list", "--facility", "fac-metal")
              ).strip() == "no alerts"

    assert f"alert #{alert_id} acknowledged by ana" in ok(
        pledgewatch(migrated_db, tmp_path, "alerts", "ack", alert_id, "--by", "ana"))
    refused(pledgewatch(migrated_db, tmp_path, "alerts", "ack", alert_id), "acknowledged",
            one_line=True)
    assert f"alert #{alert_id} resolved by officer" in ok(
        pledgewatch(migrated_db, tmp_path, "alerts", "resolve", alert_id, "--comment", "checked"))
    refused(pledgewatch(migrated_db, tmp_path, "alerts", "resolve", alert_id, "--comment", "again"),
            "already resolved", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "alerts", "ack", "999"), "no alert 999",
            one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "alerts", "ack", "0"))
    assert ok(pledgewatch(migrated_db, tmp_path, "alerts", "list")).strip() == "no alerts"
    history = ok(pledgewatch(migrated_db, tmp_path, "alerts", "list", "--all"))
    assert "resolved" in history and "duplicate_pledge" in history
    assert scalar(migrated_db, "SELECT comment FROM alerts WHERE id = %s", int(alert_id)) == "checked"


def test_an_unmigrated_database_says_run_migrate(empty_db: str, tmp_path: Path) -> None:
    for args in (["alerts", "list"], ["portfolio", "load", str(PORTFOLIO)]):
        refused(pledgewatch(empty_db, tmp_path, *args), "not migrated", "pledgewatch migrate",
                one_line=True)
