"""The officers' pages beyond the portfolio and the facility, in headless Chromium (Debian's,
driven by Playwright) against the real app over a socket and a real, migrated PostgreSQL: the
Alerts page reaches every alert past its first page and its filters narrow the list, the Map page
draws the offline base map (country and province outlines from npm packages, served by the app)
under a geofence and a vehicle's last position, and the log-in page shows neither the Sign out
button nor the live badge until someone has signed in.

One database and one server for the module; a fresh browser context (session) per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.accounts import create_user
from lending.domain.alerts import Alert, AlertType, Severity
from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from lending.store import insert_alert
from pledgewatch.http import create_app
from pledgewatch.serve import HttpServer
from pledgewatch.settings import Settings
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import register_devices
from tests.e2e.conftest import DB_KIND
from tests.e2e.demo_process import ROOT
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, BrowserLog
from tests.support import PgServer

pytestmark = pytest.mark.e2e

PORTFOLIO = Path(__file__).parents[1] / "data" / "portfolio.yaml"
PASSWORD = "correct horse battery staple"
JWT_SECRET = "pages-test-secret-" + "p" * 40
PAGE_SIZE = 50  # alertspage.js PAGE_SIZE
VEHICLE, VEHICLE_LOT = "trk-t-0001", "lot-copper-1"  # fac-metal's truck, geofence 31-32 N 121-122 E
ROWS = "#alerts-table > tbody > tr"
MAP_WAIT_MS = 20_000
ARTIFACTS = ROOT / "artifacts"  # dashboard-alerts.png, dashboard-map.png


@dataclass
class Served:
    base: str
    database_url: str
    active: dict[int, tuple[str, str, str]]  # id -> (facility, severity, type), open ones
    resolved: list[int]


def raise_alerts(conn: psycopg.Connection, now: datetime) -> tuple[dict[int, Any], list[int]]:
    """60 open alerts (more than a page): 48 warnings on fac-grain's lots, 12 critical geofence
    exits of fac-metal's truck; and 3 resolved infos."""
    plan = ([("fac-grain", f"lot-wheat-{1 + i % 2}", Severity.WARNING,
              AlertType.SENSOR_STALE if i % 2 else AlertType.SENSOR_OFFLINE) for i in range(48)]
            + [("fac-metal", VEHICLE_LOT, Severity.CRITICAL, AlertType.GEOFENCE_EXIT)] * 12)
    active: dict[int, Any] = {}
    for n, (facility, lot, severity, kind) in enumerate(plan):
        alert_id = insert_alert(conn, Alert(
            key=f"pages:{n}", type=kind, severity=severity, facility_id=facility, lot_id=lot,
            message=f"test alert {n} on {lot}", evidence={"n": n},
            raised_at=now - timedelta(minutes=len(plan) - n), auto_resolve=False))
        assert alert_id is not None
        active[alert_id] = (facility, str(severity), str(kind))
    resolved = []
    for n in range(3):
        alert_id = insert_alert(conn, Alert(
            key=f"pages:resolved:{n}", type=AlertType.SALES_COLLAPSE, severity=Severity.INFO,
            facility_id="fac-grain", lot_id=None, message=f"resolved {n}", evidence={},
            raised_at=now - timedelta(hours=2), auto_resolve=False))
        assert alert_id is not None
        conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = 'officer',"
                     " comment = 'checked' WHERE id = %s", (now, alert_id))
        resolved.append(alert_id)
    return active, resolved


@pytest.fixture(scope="module")
def served(pg_servers: dict[str, PgServer]) -> Iterator[Served]:
    """The example portfolio, the truck's last GPS fix inside its geofence, 63 alerts and an
    officer, in a database of its own; the app on a free 127.0.0.1 port."""
    pg = pg_servers[DB_KIND]
    url = pg.migrated_database()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        register_devices(conn, [DeviceInfo("wh-t-0001", "acme", "warehouse"),
                                DeviceInfo("rfid-t-0001", "acme", "warehouse"),
                                DeviceInfo("wh-t-0002", "acme", "warehouse"),
                                DeviceInfo(VEHICLE, "acme", "vehicle")])
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
                " VALUES (%s, %s, %s, %s, 1, %s, now())",
                [(now - timedelta(seconds=30), VEHICLE, "lat", 31.52, 1),
                 (now - timedelta(seconds=30), VEHICLE, "lon", 121.48, 1)])
        active, resolved = raise_alerts(conn, now)
        create_user(conn, "officer", PASSWORD, "officer")
    with dashboard_server(pg, url, "pages") as base:
        yield Served(base, url, active, resolved)


@contextmanager
def dashboard_server(pg: PgServer, url: str, name: str) -> Iterator[str]:
    """The app over the database ``url`` on a free 127.0.0.1 port (notifier off), yielding its
    base URL; the database is dropped afterwards."""
    state = Path(tempfile.mkdtemp(prefix=f"pw-{name}-"))
    settings = Settings.model_validate({"state_dir": state / "state", "jwt_secret": JWT_SECRET,
                                        "notifier_enabled": False})
    http = HttpServer(create_app(url, settings=settings), "127.0.0.1", 0, fallback=False).start()
    try:
        yield http.url
    finally:
        http.stop()
        pg.drop(url)


def sign_in_as_officer(tab: Any, base: str, ready: str = "#portfolio-table",
                       timeout_ms: int = 15_000) -> None:
    """Sign in as the officer and wait for the portfolio (``ready``)."""
    tab.goto(f"{base}/dashboard/")
    tab.fill("#username", "officer")
    tab.fill("#password", PASSWORD)
    tab.click("form.login-card button[type=submit]")
    tab.wait_for_selector(ready, timeout=timeout_ms)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, BrowserLog]]:
    """A fresh context (no session) with every request and error logged."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB",
                                  timezone_id="UTC")
    log = BrowserLog()
    try:
        tab = context.new_page()
        tab.on("request", lambda request: log.requests.append(request.url))
        tab.on("console", lambda msg: log.console_errors.append(
            f"{msg.text} @ {msg.location.get('url')}") if msg.type == "error" else None)
        tab.on("pageerror", lambda error: log.page_errors.append(str(error)))
        yield tab, log
    finally:
        context.close()


def sign_in(tab: Any, served: Served) -> None:
    sign_in_as_officer(tab, served.base, "#portfolio-table tr[data-facility='fac-metal']")


def row_count_becomes(tab: Any, n: int) -> None:
    tab.wait_for_function(f"() => document.querySelectorAll({ROWS!r}).length === {n}",
                          timeout=10_000)


def shown(tab: Any, attribute: str) -> list[str]:
    return [str(v) for v in tab.eval_on_selector_all(
        ROWS, f"rows => rows.map(r => r.getAttribute('data-{attribute}'))")]


def screenshot(tab: Any, name: str) -> None:
    tab.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / name), full_page=True)


def assert_clean(log: BrowserLog) -> None:
    assert log.outside() == [], f"requests left 127.0.0.1: {log.outside()}"
    assert log.page_errors == [], log.page_errors
    assert log.console_errors == [], log.console_errors


def test_login_page_hides_sign_out_and_the_live_badge_until_signed_in(
        served: Served, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    tab.goto(f"{served.base}/dashboard/")
    tab.wait_for_selector("#username", state="visible")
    for hidden in ("#logout", "#live", "#topnav"):
        assert tab.locator(hidden).is_hidden(), f"{hidden} shows on the log-in page"

    sign_in(tab, served)
    for visible in ("#logout", "#live", "#topnav a[data-nav='alerts']", "#topnav a[data-nav='map']"):
        tab.wait_for_selector(visible, state="visible", timeout=5_000)

    tab.click("#logout")
    tab.wait_for_selector("#username", state="visible")
    assert tab.locator("#logout").is_hidden() and tab.locator("#live").is_hidden()
    assert_clean(log)


def test_alerts_page_reaches_every_alert_and_filters_narrow_the_list(
        served: Served, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    sign_in(tab, served)
    tab.click("#topnav a[data-nav='alerts']")

    # The first page, then "Load more" until every active alert is there: the portfolio's 60.
    tab.wait_for_selector(ROWS, timeout=10_000)
    row_count_becomes(tab, PAGE_SIZE)
    assert len(served.active) > PAGE_SIZE
    tab.locator("#load-more").click()
    row_count_becomes(tab, len(served.active))
    assert {int(i) for i in shown(tab, "alert-id")} == set(served.active)
    assert tab.locator("#load-more").is_hidden()
    assert "all shown" in tab.inner_text("#alerts-shown")

    # Severity: only the 12 critical geofence exits of fac-metal's truck.
    critical = {i for i, (_, severity, _) in served.active.items() if severity == "critical"}
    tab.select_option("#filter-severity", "critical")
    row_count_becomes(tab, len(critical))
    assert {int(i) for i in shown(tab, "alert-id")} == critical
    assert set(shown(tab, "severity")) == {"critical"}
    assert "severity=critical" in tab.evaluate("location.hash")
    screenshot(tab, "dashboard-alerts.png")

    # Facility (severity cleared): fac-grain's 48 warnings, one page, nothing more to load.
    tab.select_option("#filter-severity", "")
    tab.wait_for_selector("#filter-facility option[value='fac-grain']", state="attached")
    tab.select_option("#filter-facility", "fac-grain")
    grain = {i for i, (facility, _, _) in served.active.items() if facility == "fac-grain"}
    row_count_becomes(tab, len(grain))
    assert set(shown(tab, "facility")) == {"fac-grain"}
    assert tab.locator("#load-more").is_hidden()

    # Type and status: the resolved ones are there too, behind their filter.
    tab.wait_for_selector("#filter-type option[value='sensor_stale']", state="attached")
    tab.select_option("#filter-type", "sensor_stale")
    row_count_becomes(tab, sum(1 for _, _, kind in served.active.values() if kind == "sensor_stale"))
    tab.click("#clear-filters")
    row_count_becomes(tab, PAGE_SIZE)
    tab.select_option("#filter-status", "resolved")
    row_count_becomes(tab, len(served.resolved))
    assert {int(i) for i in shown(tab, "alert-id")} == set(served.resolved)

    # Acknowledge from the page, as on the facility page: the row changes in place.
    tab.select_option("#filter-status", "open")
    tab.select_option("#filter-facility", "fac-metal")
    row_count_becomes(tab, len(critical))
    first = tab.locator(ROWS).first
    alert_id = int(first.get_attribute("data-alert-id"))
    first.locator("button[data-action='acknowledge']").click()
    # the open filter drops it; under any status it shows as acknowledged
    row_count_becomes(tab, len(critical) - 1)
    tab.select_option("#filter-status", "any")
    tab.wait_for_selector(f"tr[data-alert-id='{alert_id}'][data-status='acknowledged']",
                          timeout=10_000)
    # Resolve another with the officer's comment (a critical alert needs one).
    other = max(critical - {alert_id})
    resolving = tab.locator(f"tr[data-alert-id='{other}']")
    resolving.locator("button[data-action='resolve']").click()
    resolving.locator("form.resolve-form textarea").fill("seal checked on site, truck back in")
    resolving.locator("form.resolve-form button[type=submit]").click()
    tab.wait_for_selector(f"tr[data-alert-id='{other}'][data-status='resolved']", timeout=10_000)
    assert "seal checked on site" in tab.inner_text(f"tr[data-alert-id='{other}']")
    with psycopg.connect(served.database_url) as conn:
        rows = conn.execute("SELECT id, status, acknowledged_by, resolved_by, comment FROM alerts"
                            " WHERE id = ANY(%s) ORDER BY id", ([alert_id, other],)).fetchall()
    assert sorted(rows) == sorted([
        (alert_id, "acknowledged", "officer", None, None),
        (other, "resolved", None, "officer", "seal checked on site, truck back in")]), rows
    served.active.pop(other)

    # Each row links to its facility.
    tab.click(f"tr[data-alert-id='{alert_id}'] a.facility-link")
    tab.wait_for_selector(f"#alert-timeline li[data-alert-id='{alert_id}']", timeout=10_000)
    assert tab.evaluate("location.hash") == "#/facility/fac-metal"
    assert_clean(log)


def test_map_page_draws_the_base_map_under_sites_and_vehicles(
        served: Served, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    sign_in(tab, served)
    tab.click("#topnav a[data-nav='map']")
    tab.wait_for_selector("#portfolio-map[data-basemap='drawn']", timeout=MAP_WAIT_MS)
    tab.wait_for_selector("#portfolio-map path.pw-vehicle", timeout=10_000)

    outlines = tab.evaluate("""() => {
        const pane = document.querySelector('#portfolio-map .leaflet-basemap-pane');
        const drawn = (cls) => [...pane.querySelectorAll(`path.${cls}`)]
            .filter(p => (p.getAttribute('d') || '').length > 10).length;
        return {borders: pane.querySelectorAll('path.pw-border').length,
                provinces: pane.querySelectorAll('path.pw-province').length,
                coast: drawn('pw-coast'), land: drawn('pw-land'), provincesDrawn: drawn('pw-province')};
    }""")
    # every outline is there; those around the truck (Shanghai's coast, land, provinces) are drawn
    assert outlines["borders"] > 0 and outlines["provinces"] >= 31, outlines
    assert outlines["coast"] > 0 and outlines["land"] > 0 and outlines["provincesDrawn"] > 0, outlines

    # The truck's last fix, amber (its lot has active alerts), and its site's geofence.
    vehicles = tab.locator("#portfolio-map path.pw-vehicle")
    assert vehicles.count() == 1
    assert "pw-marker-alert" in (vehicles.first.get_attribute("class") or "")
    assert tab.locator("#portfolio-map path.pw-geofence").count() == 1
    row = tab.locator(f"#vehicle-table tr[data-vehicle='{VEHICLE}']")
    assert "31.5200, 121.4800" in row.inner_text() and "active alert" in row.inner_text()
    # The overlays are above the base map: the marker is the element at its own centre.
    assert tab.evaluate("""() => {
        const marker = document.querySelector('#portfolio-map path.pw-vehicle');
        const box = marker.getBoundingClientRect();
        return document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2) === marker;
    }""")

    screenshot(tab, "dashboard-map.png")

    # The facility page's map gets the same base layer.
    vehicles.first.click(force=True)
    tab.wait_for_selector("#collateral-map[data-basemap='drawn']", timeout=MAP_WAIT_MS)
    assert tab.evaluate("location.hash") == "#/facility/fac-metal"
    assert tab.locator("#collateral-map .leaflet-basemap-pane path.pw-border").count() > 0
    assert tab.locator("#collateral-map path.pw-vehicle").count() == 1
    assert_clean(log)
