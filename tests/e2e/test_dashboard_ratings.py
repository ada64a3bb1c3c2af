"""The officers' credit-rating pages in headless Chromium (Debian's, driven by Playwright) against the
real app over a socket and a real, migrated PostgreSQL: the Ratings page lists the newest rating of
every borrower with its grade and top reason codes and filters by grade; a borrower's rating detail
shows the reason codes (feature and bin), the grade history and the grade change (previous → new,
who ran it, the terms it moved); the facility page links its borrower's grade to that detail.

One database and one server for the module. The ratings are made by rating.service.rate_all with
the expert card, as the daily run makes them: a first run two days ago rates the example portfolio,
then fac-metal's LTV passes 0.8 and three critical alerts are raised, and yesterday's run drops
sup-metal from E to G and moves fac-metal to the terms of grade G."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from api.accounts import create_user
from lending.domain.alerts import Alert, AlertType, Severity
from lending.domain.limits import LimitSnapshot, LotLine
from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from lending.store import insert_alert, save_snapshot
from rating.features import day_end
from rating.service import borrower_rating, latest_ratings, rate_all
from tests.e2e import test_dashboard_pages as pages
from tests.e2e.conftest import DB_KIND
from tests.e2e.test_dashboard_browser import BrowserLog
from tests.e2e.test_dashboard_pages import (
    PASSWORD,
    PORTFOLIO,
    assert_clean,
    dashboard_server,
    screenshot,
    sign_in_as_officer,
)
from tests.support import PgServer

pytestmark = pytest.mark.e2e

# The pages module's fixtures: one Chromium for this module, a fresh context (no session) per test.
browser = pages.browser
page = pages.page

JWT_SECRET = "ratings-test-secret-" + "r" * 40
WAIT_MS = 15_000
BORROWER = "sup-metal"
# fac-metal's product maps every grade to terms: a change of grade moves its advance rate and line
BY_GRADE = {g: {"advance_rate": rate, "line_cap": cap, "auto_approve_max": 50_000}
            for g, rate, cap in zip("ABCDEFG", (0.7, 0.68, 0.65, 0.6, 0.5, 0.4, 0.3),
                                    (400_000, 350_000, 300_000, 250_000, 200_000, 150_000,
                                     100_000), strict=True)}


@dataclass
class Rated:
    base: str
    grades: dict[str, str]  # borrower -> newest grade
    change: dict[str, Any]  # sup-metal's change of grade (newest first in the API)
    reasons: list[dict[str, Any]]  # sup-metal's current reason codes


def metal_snapshot(t: datetime) -> LimitSnapshot:
    """fac-metal's limit at `t` as the engine saves it: 101,200 drawn against 110,000 of copper
    (its price fallen), LTV 0.92."""
    value = 110_000.0
    lot = LotLine("lot-copper-1", "copper-cathode", 10, 10, 10, 1.0, {}, value / 10, 1.0,
                  t.isoformat(), 0.0, 0.0, value, 0.65, value * 0.65)
    return LimitSnapshot("fac-metal", t, "CNY", 300_000, 101_200, 0, value, value, value * 0.65,
                         0, 0, 0, value * 0.65, value * 0.65, value * 0.65 - 101_200,
                         101_200 / value, 0.7, 0.85, (lot,), "borrowing base")


@pytest.fixture(scope="module")
def rated(pg_servers: dict[str, PgServer]) -> Iterator[Rated]:
    """The example portfolio rated twice by the expert card, sup-metal's grade falling between the
    runs; an officer; the app on a free 127.0.0.1 port."""
    pg = pg_servers[DB_KIND]
    url = pg.migrated_database()
    now = datetime.now(UTC)
    first, second = now.date() - timedelta(days=2), now.date() - timedelta(days=1)
    with psycopg.connect(url, autocommit=True) as conn:
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
        conn.execute("UPDATE facilities SET terms = terms || %s WHERE facility_id = 'fac-metal'",
                     (Jsonb({"by_grade": BY_GRADE}),))
        assert rate_all(conn, first, by="scheduler").rated == 3
        # the day after the first run: fac-metal's LTV at 0.92 and three critical alerts
        t = day_end(first) + timedelta(hours=2)
        save_snapshot(conn, metal_snapshot(t), ["LTV 92% above the liquidation line"])
        for n in range(3):
            insert_alert(conn, Alert(
                key=f"ratings:{n}", type=AlertType.GEOFENCE_EXIT, severity=Severity.CRITICAL,
                facility_id="fac-metal", lot_id="lot-copper-1", message=f"left the geofence {n}",
                evidence={}, raised_at=t + timedelta(minutes=n), auto_resolve=False))
        run = rate_all(conn, second, by="officer-ops")
        assert [c["borrower_id"] for c in run.changed] == [BORROWER], run.changed
        grades = {r["borrower_id"]: r["grade"] for r in latest_ratings(conn)}
        got = borrower_rating(conn, BORROWER)
        assert got is not None
        change = got["grade_changes"][0]
        assert change["previous_grade"] != change["grade"] and change["previous_grade"]
        assert change["facilities"], "the change moved fac-metal's terms"
        create_user(conn, "officer", PASSWORD, "officer")
    with dashboard_server(pg, url, "ratings") as base:
        yield Rated(base, grades, change, got["current"]["reasons"])


def sign_in(tab: Any, rated: Rated) -> None:
    sign_in_as_officer(tab, rated.base, timeout_ms=WAIT_MS)


def rows(tab: Any) -> dict[str, str]:
    return dict(tab.eval_on_selector_all(
        "#ratings-table tr.rating-row", "rows => rows.map(r => [r.dataset.borrower, r.dataset.grade])"))


def test_ratings_list_detail_and_the_facility_badge(
        rated: Rated, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    sign_in(tab, rated)
    tab.click("#topnav a[data-nav='ratings']")
    tab.wait_for_selector("#ratings-table tr.rating-row", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == "#/ratings"

    # every borrower's newest grade, with its top reason codes
    assert rows(tab) == rated.grades, rows(tab)
    assert len(set(rated.grades.values())) > 1, rated.grades  # the filter below narrows the list
    metal = tab.locator(f"#ratings-table tr[data-borrower='{BORROWER}']")
    assert "Metal Trader Ltd" in metal.inner_text()
    assert metal.locator(".grade-badge").inner_text() == rated.change["grade"]
    assert metal.locator("li.reason").count() == 3
    top = rated.reasons[0]
    assert metal.locator("li.reason").first.get_attribute("data-feature") == top["feature"]
    assert top["bin"] in metal.locator("li.reason").first.inner_text()
    screenshot(tab, "dashboard-ratings.png")

    # the grade filter: only sup-metal's grade, in the hash too
    tab.select_option("#filter-grade", rated.change["grade"])
    want = {b: g for b, g in rated.grades.items() if g == rated.change["grade"]}
    tab.wait_for_function(
        "n => document.querySelectorAll('#ratings-table tr.rating-row').length === n "
        "&& location.hash.includes('grade=')", arg=len(want), timeout=WAIT_MS)
    assert rows(tab) == want

    # a click opens the borrower's rating: grade, reason codes, history and the change of grade
    metal = tab.locator(f"#ratings-table tr[data-borrower='{BORROWER}']")
    metal.locator("td.score").click()
    tab.wait_for_selector("#changes-table tr.change-row", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == f"#/ratings/{BORROWER}"
    assert tab.inner_text("#rating-grade") == rated.change["grade"]
    assert tab.inner_text("h1") == "Metal Trader Ltd"
    shown_reasons = tab.eval_on_selector_all(
        "#reason-table tr.reason-row", "rows => rows.map(r => [r.dataset.feature,"
        " r.querySelector('td.bin').textContent])")
    assert shown_reasons == [[r["feature"], r["bin"]] for r in rated.reasons], shown_reasons
    history = tab.eval_on_selector_all("#history-table tr.history-row",
                                       "rows => rows.map(r => r.dataset.grade)")
    assert history == [rated.change["grade"], rated.change["previous_grade"]], history
    assert tab.locator("#rating-chart").get_attribute("width") is not None  # Chart.js drew it

    changes = tab.eval_on_selector_all(
        "#changes-table tr.change-row", "rows => rows.map(r => [r.dataset.previous, r.dataset.grade])")
    assert changes == [[rated.change["previous_grade"], rated.change["grade"]],
                       ["", rated.change["previous_grade"]]], changes
    newest = tab.locator("#changes-table tr.change-row").first
    move = newest.locator("td.grade-move").inner_text()
    assert f"{rated.change['previous_grade']} → {rated.change['grade']}" in " ".join(move.split())
    assert "officer-ops" in newest.locator("td.changed-by").inner_text()
    terms = newest.locator("td.terms-cell").inner_text()
    moved = rated.change["facilities"][0]
    rate = moved["advance_rate"]
    assert "fac-metal" in terms and f"{rate['from']:.0%} → {rate['to']:.0%}" in terms, terms
    assert f"{moved['line']['from']:,.0f} → {moved['line']['to']:,.0f}" in terms, terms
    reasons = newest.locator("li.reason")
    assert [reasons.nth(i).get_attribute("data-feature") for i in range(reasons.count())] == [
        r["feature"] for r in rated.change["reasons"]]
    screenshot(tab, "dashboard-rating-detail.png")

    # the facility page shows the borrower's grade, a link back to this detail
    tab.evaluate("location.hash = '#/facility/fac-metal'")
    badge = tab.locator("#facility-grade a.grade-badge")
    badge.wait_for(timeout=WAIT_MS)
    assert badge.inner_text() == rated.change["grade"]
    assert badge.get_attribute("href") == f"#/ratings/{BORROWER}"
    badge.click()
    tab.wait_for_selector("#changes-table tr.change-row", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == f"#/ratings/{BORROWER}"
    assert_clean(log)
