"""Credit rating against a real PostgreSQL: the daily features of a small hand-built book match
values worked out by hand; ratings are stored with reason codes and history; a change of grade is
logged and moves the facility's advance rate and line to its product's `by_grade` terms; a drawdown
above the grade's auto-approval cap waits for an officer with the reason."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from lending.financing import request_drawdown
from pledgewatch.cli.rating import register
from rating.features import compute_features, day_end, store_features
from rating.points import NumericFeature, PointsCard
from rating.service import (
    ModelCard,
    RatingScheduler,
    borrower_rating,
    latest_ratings,
    rate_all,
)
from tests.integration.test_cli_failures import environment

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

AS_OF = datetime.now(UTC).date() - timedelta(days=1)
END = day_end(AS_OF)
DAY = timedelta(days=1)
BY_GRADE = {"A": {"advance_rate": 0.7, "line_cap": 2_000_000, "auto_approve_max": 500_000},
            "G": {"advance_rate": 0.3, "line_cap": 100_000, "auto_approve_max": 1_000}}


@pytest.fixture
def conn(migrated_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated_db, autocommit=True) as c:
        build_book(c)
        yield c


def lot(verified: float, upq: float, price: float, trust: float) -> dict[str, Any]:
    return {"lot_id": "lot-1", "verified": verified, "units_per_quote": upq, "price": price,
            "trust": trust}


def build_book(c: psycopg.Connection) -> None:
    c.execute("INSERT INTO borrowers (borrower_id, tenant, name, role, core_id, created_at) VALUES"
              " ('core-1', 't', 'Core', 'core', NULL, %s),"
              " ('sup-1', 't', 'Supplier', 'supplier', 'core-1', %s),"
              " ('ind-1', 't', 'New', 'independent', NULL, %s)",
              (END - 800 * DAY, END - 365 * DAY, END - 10 * DAY))
    c.execute("INSERT INTO facilities (facility_id, borrower_id, currency, line, outstanding, terms)"
              " VALUES ('fac-1', 'sup-1', 'CNY', 1000000, 0, '{}'),"
              " ('fac-2', 'sup-1', 'CNY', 500000, 0, %s),"
              " ('fac-core', 'core-1', 'CNY', 0, 0, '{}')",
              (Jsonb({"advance_rate": 0.6, "by_grade": BY_GRADE}),))
    # limit snapshots of fac-1: 100 days ago (carried into the window), 20 and 10 days ago
    for t, limit, out, ltv, lots in (
            (END - 100 * DAY, 500, 100, 0.2, [lot(10, 1, 10, 1.0)]),
            (END - 20 * DAY, 500, 600, 0.9, [lot(20, 1, 10, 0.5)]),
            (END - 10 * DAY, 500, 400, 0.5, [lot(30, 2, 10, 1.0)])):
        c.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                  " outstanding, collateral_value, ltv, inputs) VALUES ('fac-1', %s, %s, %s, %s,"
                  " 0, %s, %s)", (t, limit, limit - out, out, ltv, Jsonb({"lots": lots})))
    c.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
              " outstanding, collateral_value, ltv, inputs) VALUES ('fac-2', %s, 100000, 100000,"
              " 0, 200000, 0, %s)", (END - 5 * DAY, Jsonb({"lots": []})))
    for t, amount in ((END - 1 * DAY, 100), (END - 15 * DAY, 200), (END - 45 * DAY, 600),
                      (END - 95 * DAY, 5000), (END + DAY, 7000)):
        c.execute("INSERT INTO sales (facility_id, time, amount) VALUES ('fac-1', %s, %s)",
                  (t, amount))
    for t, kind, severity in ((END - 5 * DAY, "sensor_tamper", "critical"),
                              (END - 50 * DAY, "sensor_tamper", "critical"),
                              (END - 3 * DAY, "ltv_warning", "warning"),
                              (END - 100 * DAY, "geofence_exit", "critical")):
        c.execute("INSERT INTO alerts (key, type, severity, facility_id, status, message, evidence,"
                  " auto_resolve, raised_at) VALUES (%s, %s, %s, 'fac-1', 'resolved', 'x', '{}',"
                  " false, %s)", (f"k-{t.isoformat()}", kind, severity, t))
    for did, amount, status, repaid, maturity in (
            ("dd-open", 100, "approved", 0, END - 12 * DAY),  # 12 days past due at the end
            ("dd-late", 50, "repaid", 50, END - 40 * DAY),  # repaid 5 days late
            ("dd-old", 50, "repaid", 50, END - 200 * DAY),  # late, but settled before the window
            ("dd-fine", 70, "approved", 0, END + 30 * DAY)):
        c.execute("INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency, tenor_days,"
                  " purpose, status, repaid, maturity) VALUES (%s, 'fac-1', %s, 'CNY', 30, 'p',"
                  " %s, %s, %s)", (did, amount, status, repaid, maturity))
    for did, t in (("dd-late", END - 35 * DAY), ("dd-old", END - 150 * DAY)):
        c.execute("INSERT INTO repayments (facility_id, time, amount, allocation) VALUES"
                  " ('fac-1', %s, 50, %s)", (t, Jsonb([{"drawdown_id": did, "amount": "50"}])))
    # the core's root vouchers: on time, 3 days late, unpaid; not yet due, and too old
    c.execute("INSERT INTO programmes (programme_id, core_id, facility_id, currency, line,"
              " advance_rate, created_by) VALUES ('pg-1', 'core-1', 'fac-core', 'CNY', 1e6, 0.8,"
              " 'o')")
    for vid, maturity, paid in (("v1", END - 20 * DAY, END - 20 * DAY + timedelta(hours=2)),
                                ("v2", END - 10 * DAY, END - 7 * DAY),
                                ("v3", END - 5 * DAY, None),
                                ("v4", END + 5 * DAY, None),
                                ("v5", END - 200 * DAY, END - 150 * DAY)):
        c.execute("INSERT INTO receivables (receivable_id, facility_id, debtor, amount, due) VALUES"
                  " (%s, 'fac-1', 'core', 100, %s)", (f"r-{vid}", maturity))
        c.execute("INSERT INTO vouchers (voucher_id, programme_id, receivable_id, root_id,"
                  " holder_id, amount, maturity, status, created_by) VALUES (%s, 'pg-1', %s, %s,"
                  " 'sup-1', 100, %s, 'active', 'o')", (vid, f"r-{vid}", vid, maturity))
        if paid is not None:
            c.execute("INSERT INTO voucher_payments (root_id, amount, paid_at, paid_by, payouts)"
                      " VALUES (%s, 100, %s, 'core-1', '[]')", (vid, paid))
    # a production line on the lot's site
    c.execute("INSERT INTO commodities (name, unit, unit_kg, liquidation_days) VALUES"
              " ('wheat', 't', 1000, 10)")
    c.execute("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
              " registration_no, site) VALUES ('lot-1', 'fac-1', 'wheat', 30, 1000, 'reg-1',"
              " 'site-1')")
    c.execute("INSERT INTO devices (device_id, tenant, kind, bound_to) VALUES"
              " ('line-1', 't', 'line', 'site-1')")
    for seq, (t, metric, value) in enumerate((
            (END - 20 * DAY, "line_running", 1), (END - 10 * DAY, "line_running", 1),
            (END - 2 * DAY, "line_running", 0), (END - 40 * DAY, "line_running", 0),
            (END - 20 * DAY, "line_count", 100), (END - 2 * DAY, "line_count", 160))):
        c.execute("INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
                  " VALUES (%s, 'line-1', %s, %s, 1, %s, %s)", (t, metric, value, seq, t))


def test_features_of_a_small_book_match_the_hand_computed_values(conn: psycopg.Connection) -> None:
    features = compute_features(conn, AS_OF)
    s = features["sup-1"]
    assert s["days_past_due_max_90d"] == 12  # the open drawdown; the repaid one was 5 days late
    assert s["ltv_max_90d"] == pytest.approx(0.9)
    assert s["overadvance_days_90d"] == pytest.approx(10)  # outstanding 600 > 500 for 10 days
    assert s["trust_below_one_share_30d"] == pytest.approx(1 / 3)  # 10 of 30 days at trust 0.5
    assert s["critical_alerts_90d"] == 2
    assert s["alerts_by_type_90d"] == {"sensor_tamper": 2, "ltv_warning": 1}
    # stock: 100 for 70 days, 200 for 10, 30 × 2 × 10 = 600 for 10; sales 900 in 90 days
    assert s["sales_per_day_90d"] == pytest.approx(10)
    assert s["days_of_stock"] == pytest.approx(60)
    assert s["inventory_turnover_90d"] == pytest.approx(900 / (15000 / 90))
    assert s["sales_trend_90d"] == pytest.approx(300 / (600 / 2))
    weeks = [100, 0, 200, 0, 0, 0, 600] + [0] * 6
    assert s["sales_volatility_90d"] == pytest.approx(statistics.pstdev(weeks) / statistics.mean(weeks))
    assert s["line_utilisation_30d"] == pytest.approx(2 / 3)
    assert s["line_output_30d"] == pytest.approx(60)
    assert s["core_on_time_share_180d"] == pytest.approx(1 / 3)
    assert s["core_late_payments_180d"] == 2
    assert s["tenure_months"] == pytest.approx(365 / 30.4375)
    assert features["core-1"]["core_on_time_share_180d"] == pytest.approx(1 / 3)
    new = features["ind-1"]  # no facility: nothing to say but its tenure
    assert new["days_past_due_max_90d"] is None and new["ltv_max_90d"] is None
    assert new["days_of_stock"] is None and new["core_on_time_share_180d"] is None
    assert math.isclose(new["tenure_months"], 10 / 30.4375)


def card(points: float) -> ModelCard:
    feature = NumericFeature("days_past_due_max_90d", (1.0,), (points, points - 50), points)
    return ModelCard("test", 1, PointsCard("test_v1", (feature,), 600.0))


def test_features_are_stored_with_history(conn: psycopg.Connection) -> None:
    assert store_features(conn, AS_OF - DAY) == 3
    assert store_features(conn, AS_OF) == 3
    assert store_features(conn, AS_OF) == 3  # a rerun replaces the day
    rows = conn.execute("SELECT as_of, count(*) FROM borrower_features GROUP BY as_of"
                        " ORDER BY as_of").fetchall()
    assert rows == [(AS_OF - DAY, 3), (AS_OF, 3)]


def test_a_rating_is_stored_with_reasons_and_history(conn: psycopg.Connection) -> None:
    expert = rate_all(conn, AS_OF - DAY, by="test")
    assert (expert.model, expert.version, expert.rated) == ("expert", 1, 3)
    rate_all(conn, AS_OF, by="test")
    got = borrower_rating(conn, "sup-1")
    assert got is not None
    assert [r["as_of"] for r in got["history"]] == [AS_OF, AS_OF - DAY]
    current = got["current"]
    assert current["model"] == "expert" and current["grade"] in "ABCDEFG"
    assert 0 < current["pd"] < 1
    # expert_v1: LTV 0.9 costs 50 points against its best bin, trust below 1 for a third of the
    # month 40, a core paying one voucher in three on time 25 (12 days past due only 20)
    assert [(r["feature"], r["points_lost"]) for r in current["reasons"]] == [
        ("ltv_max_90d", 50), ("trust_below_one_share_30d", 40), ("core_on_time_share_180d", 25)]
    assert current["reasons"][0]["bin"] == "[0.8, inf)"
    # the first rating is a change of grade from none, logged once
    assert [(c["previous_grade"], c["changed_by"]) for c in got["grade_changes"]] == [
        (None, "test")]
    assert {r["borrower_id"] for r in latest_ratings(conn)} == {"core-1", "sup-1", "ind-1"}
    assert borrower_rating(conn, "nobody") is None


def test_a_change_of_grade_moves_advance_rate_and_line_and_is_logged(
        conn: psycopg.Connection) -> None:
    first = rate_all(conn, AS_OF - DAY, by="officer-1", model=card(200))  # 800 points: grade A
    assert {c["borrower_id"]: c["grade"] for c in first.changed}["sup-1"] == "A"
    terms, line = conn.execute("SELECT terms, line FROM facilities WHERE facility_id = 'fac-2'"
                               ).fetchone() or (None, None)
    assert terms["advance_rate"] == 0.7 and line == Decimal("2000000.00")
    assert terms["by_grade"] == BY_GRADE
    plain = conn.execute("SELECT terms, line FROM facilities WHERE facility_id = 'fac-1'").fetchone()
    assert plain == ({}, Decimal("1000000.00"))  # no by_grade: untouched

    second = rate_all(conn, AS_OF, by="scheduler", model=card(-300))  # 250 points: grade G
    change = {c["borrower_id"]: c for c in second.changed}["sup-1"]
    assert (change["previous_grade"], change["grade"]) == ("A", "G")
    assert change["facilities"] == [{"facility_id": "fac-2",
                                     "advance_rate": {"from": 0.7, "to": 0.3},
                                     "line": {"from": 2_000_000.0, "to": 100_000.0}}]
    terms, line = conn.execute("SELECT terms, line FROM facilities WHERE facility_id = 'fac-2'"
                               ).fetchone() or (None, None)
    assert terms["advance_rate"] == 0.3 and line == Decimal("100000.00")
    logged = conn.execute("SELECT previous_grade, grade, changed_by, reasons, facilities"
                          " FROM rating_changes WHERE borrower_id = 'sup-1' ORDER BY id").fetchall()
    assert [(p, g, by) for p, g, by, _, _ in logged] == [(None, "A", "officer-1"),
                                                         ("A", "G", "scheduler")]
    assert logged[1][3][0]["feature"] == "days_past_due_max_90d"
    assert logged[1][4][0]["line"] == {"from": 2_000_000.0, "to": 100_000.0}
    # same grade again: nothing logged, nothing moved
    again = rate_all(conn, AS_OF, by="scheduler", model=card(-300))
    assert again.changed == [] and again.facilities_moved == 0


def test_a_drawdown_above_the_grades_cap_waits_with_the_reason(conn: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    small, _ = request_drawdown(conn, "fac-2", Decimal("5000.00"), "CNY", 30, "stock", by="sup-1",
                                idempotency_key="k0", now=now)
    assert small["status"] == "approved"  # unrated: no grade cap
    rate_all(conn, AS_OF, by="test", model=card(-300))  # grade G: auto-approval up to 1,000
    waits, _ = request_drawdown(conn, "fac-2", Decimal("5000.00"), "CNY", 30, "stock", by="sup-1",
                                idempotency_key="k1", now=now)
    assert waits["status"] == "pending"
    assert waits["reasons"] == [("amount 5,000.00 is above the auto-approval limit of grade G "
                                "(1,000.00 CNY)")]
    fits, _ = request_drawdown(conn, "fac-2", Decimal("900.00"), "CNY", 30, "stock", by="sup-1",
                               idempotency_key="k2", now=now)
    assert fits["status"] == "approved"
    other, _ = request_drawdown(conn, "fac-1", Decimal("5000.00"), "CNY", 30, "stock", by="sup-1",
                                idempotency_key="k3", now=now)
    assert not any("auto-approval" in r for r in other["reasons"])  # fac-1 has no by_grade


def test_the_daily_scheduler_runs_once_a_day(conn: psycopg.Connection, migrated_db: str) -> None:
    day = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    clock = [day]
    scheduler = RatingScheduler(migrated_db, clock=lambda: clock[0])
    first = scheduler.run_once(conn)
    assert first is not None and first.as_of == AS_OF and first.rated == 3
    assert scheduler.run_once(conn) is None  # today's features are there: nothing to do
    clock[0] += DAY
    assert scheduler.run_once(conn) is not None and scheduler.runs == 2


def test_the_cli_runs_and_shows_ratings(conn: psycopg.Connection, migrated_db: str,
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a group, as in the real CLI

    def cli(*args: str) -> Any:
        for name in list(os.environ):
            if name.startswith("PLEDGEWATCH_"):
                monkeypatch.delenv(name)
        env = {k: v for k, v in environment(tmp_path / "state",
                                            PLEDGEWATCH_DATABASE_URL=migrated_db).items()
               if k.startswith("PLEDGEWATCH_")}
        return CliRunner().invoke(app, list(args), env=env)

    ran = cli("rating", "run", "--as-of", AS_OF.isoformat(), "--by", "ops")
    assert ran.exit_code == 0, ran.output
    assert f"{AS_OF} rated 3 borrowers with expert v1; 3 grade changes" in ran.output
    shown = cli("rating", "show", "sup-1")
    assert shown.exit_code == 0, shown.output
    assert "sup-1 grade " in shown.output
    assert "reasons: ltv_max_90d [0.8, inf) (−50)" in shown.output
    assert "- -> " in shown.output and "by ops" in shown.output
    missing = cli("rating", "show", "nobody")
    assert missing.exit_code == 1 and "nobody: not rated" in missing.output
