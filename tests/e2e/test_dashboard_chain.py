"""The officers' supply-chain pages in headless Chromium (Debian's, driven by Playwright) against the
real app over a socket and a real, migrated PostgreSQL: the Supply chain page draws a programme's
chain from the core enterprise down (a payable confirmed to tier 1, passed to tier 2 and tier 3,
financed on the way; another one paid), shows a tier-3 voucher's path back to the confirmation and
the receivables proven or contradicted by telemetry; the Drawdowns page approves a waiting
drawdown (the database says so) and shows the refusal of one past the available limit in its row.

One database and one server for the module (set up through lending.financing and
lending.operations, as the API would); a fresh browser context (session) per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.accounts import create_user
from lending import financing
from lending.operations import insert_receivable, load_portfolio
from lending.portfolio_file import read_portfolio
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import register_devices
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

JWT_SECRET = "chain-test-secret-" + "c" * 40
CORE, TIER1, TIER2, TIER3 = "core-mill", "sup-metal", "sup-grain", "sup-wire"
PROGRAMME = "mill-chain"
WAIT_MS = 15_000
LIVE_MS = 8_000  # under drawdownspage.js POLL_MS: a live event, not the poll, refreshed it


@dataclass
class Chain:
    base: str
    database_url: str
    root: str  # ar-chain-1's voucher: 100,000 confirmed to TIER1, unpaid
    tier2: str  # 40,000 passed by TIER1 to TIER2 (then split)
    kept1: str  # 60,000 kept by TIER1
    tier3: str  # 15,000 passed by TIER2 to TIER3, financed (12,000)
    kept2: str  # 25,000 kept by TIER2, financed (20,000)
    paid_root: str  # ar-chain-2's voucher: 20,000 confirmed to TIER2 and paid
    trades: dict[str, str]  # receivable id -> trade_status
    overdue: str  # approved 40 days ago for 30 days
    approvable: str  # 20,000 waiting for the open critical alert; fits the limit
    over_limit: str  # 80,000 waiting: past the available limit


def evidence(verified: bool, shipped: datetime) -> tuple[dict[str, Any], list[str]]:
    """What the delivery judge stores (lending.domain.delivery), shortened."""
    if verified:
        arrived = shipped + timedelta(hours=3)
        return ({"arrival": {"entered_at": arrived.isoformat(), "stop_minutes": 42.0},
                 "departure": {"left_seller_at": (shipped + timedelta(minutes=20)).isoformat()},
                 "never_left": False,
                 "releases": [{"id": "rel-copper-7", "quantity": 5.0,
                               "executed_at": shipped.isoformat()}],
                 "matched_releases": ["rel-copper-7"], "released_quantity": 5.0,
                 "seller": {"samples": 40, "before": 10.0, "after": 5.0, "drop": 5.0},
                 "buyer": {"samples": 30, "before": 100.0, "after": 105.0, "rise": 5.0},
                 "checks": {"arrived_and_stopped": True, "left_seller": True,
                            "release_matched": True, "seller_fell": True, "buyer_rose": True,
                            "track_plausible": True}},
                [f"arrived_and_stopped: entered the buyer's geofence at {arrived.isoformat()}",
                 "release_matched: rel-copper-7 (5 units)", "seller_fell: by 5.0 units",
                 "buyer_rose: by 5.0 units"])
    return ({"arrival": None, "departure": None, "never_left": True, "releases": [],
             "matched_releases": [], "released_quantity": None,
             "seller": {"samples": 40, "before": 10.0, "after": 10.0, "drop": 0.0},
             "buyer": {"samples": 0},
             "checks": {"arrived_and_stopped": False, "left_seller": False,
                        "release_matched": False, "seller_fell": False, "buyer_rose": False,
                        "track_plausible": True}},
            ["never_left: the vehicle stayed inside the seller's site geofence",
             "goods_never_moved: no release executed and the seller's lot did not fall"])


def build_chain(conn: psycopg.Connection, now: datetime) -> dict[str, str]:
    """A programme for core-mill; ar-chain-1 (100,000) confirmed to TIER1, 40,000 of it passed to
    TIER2, 15,000 of that to TIER3; TIER3 and TIER2's kept part financed at 80 %; ar-chain-2
    (20,000) confirmed to TIER2 and paid."""
    financing.create_programme(conn, PROGRAMME, CORE, "CNY", 1_000_000, 0.8, "officer", now)
    due = now + timedelta(days=60)
    insert_receivable(conn, "ar-chain-1", "fac-metal", "Example Flour Mill Group", 100_000, due,
                      verified=False, posted_by=TIER1, debtor_id=CORE)
    root = financing.confirm_receivable(conn, "ar-chain-1", debtor_scope=CORE, by="core-erp",
                                        now=now)["voucher_id"]
    tier2 = financing.transfer_voucher(conn, root, TIER2, 40_000, holder=TIER1, by="metal-erp",
                                       now=now + timedelta(minutes=1))["voucher_id"]
    tier3 = financing.transfer_voucher(conn, tier2, TIER3, 15_000, holder=TIER2, by="grain-erp",
                                       now=now + timedelta(minutes=2))["voucher_id"]
    rows = conn.execute("SELECT voucher_id, parent_id, holder_id FROM vouchers WHERE root_id = %s",
                        (root,)).fetchall()
    kept1 = next(v for v, parent, holder in rows if parent == root and holder == TIER1)
    kept2 = next(v for v, parent, holder in rows if parent == tier2 and holder == TIER2)
    financing.finance_voucher(conn, tier3, holder=TIER3, by="wire-erp", now=now)
    financing.finance_voucher(conn, kept2, holder=TIER2, by="grain-erp", now=now)

    insert_receivable(conn, "ar-chain-2", "fac-grain", "Example Flour Mill Group", 20_000,
                      now + timedelta(days=30), verified=False, posted_by=TIER2, debtor_id=CORE)
    paid_root = financing.confirm_receivable(conn, "ar-chain-2", debtor_scope=CORE,
                                             by="core-erp", now=now)["voucher_id"]
    financing.pay_payable(conn, paid_root, 20_000, payer_scope=CORE, by="core-erp", now=now)
    return {"root": root, "tier2": tier2, "kept1": kept1, "tier3": tier3, "kept2": kept2,
            "paid_root": paid_root}


def post_shipments(conn: psycopg.Connection, now: datetime) -> dict[str, str]:
    """Three receivables of TIER1 on TIER2 naming a shipment of copper: proven, contradicted (a
    critical fictitious-trade alert on fac-metal) and not judged yet."""
    shipped = now - timedelta(hours=6)
    shipment = {"vehicle": "trk-t-0001", "seller_lot_id": "lot-copper-1", "quantity": 5.0,
                "buyer_lot_id": "lot-wheat-1", "shipped_at": shipped.isoformat()}
    statuses = {"ar-ship-ok": "verified", "ar-ship-fake": "contradicted", "ar-ship-wait": "pending"}
    for receivable, status in statuses.items():
        insert_receivable(conn, receivable, "fac-metal", "Grain Supplier Ltd", 35_000,
                          now + timedelta(days=45), verified=False, posted_by=TIER1,
                          debtor_id=TIER2, shipment=shipment)
        if status != "pending":
            found, reasons = evidence(status == "verified", shipped)
            financing.record_trade_verdict(conn, receivable, status, found, reasons, now)
    return statuses


def request(conn: psycopg.Connection, amount: float, tenor: int, key: str, now: datetime,
            purpose: str) -> dict[str, Any]:
    row, created = financing.request_drawdown(conn, "fac-metal", amount, "CNY", tenor, purpose,
                                              by=TIER1, idempotency_key=key, now=now)
    assert created
    return row


@pytest.fixture(scope="module")
def chain(pg_servers: dict[str, PgServer]) -> Iterator[Chain]:
    """The example portfolio plus a tier-3 supplier, fac-metal's live limit (50,000), a chain of
    vouchers, three shipments and four drawdowns; an officer; the app on a free 127.0.0.1 port."""
    pg = pg_servers[DB_KIND]
    url = pg.migrated_database()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        register_devices(conn, [DeviceInfo("wh-t-0001", "acme", "warehouse"),
                                DeviceInfo("rfid-t-0001", "acme", "warehouse"),
                                DeviceInfo("wh-t-0002", "acme", "warehouse"),
                                DeviceInfo("trk-t-0001", "acme", "vehicle")])
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
        conn.execute("INSERT INTO borrowers (borrower_id, tenant, name, role, core_id)"
                     " VALUES (%s, 'acme', 'Wire Works Co', 'supplier', %s)", (TIER3, CORE))
        conn.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                     " outstanding, collateral_value, inputs) VALUES ('fac-metal', %s, 50000,"
                     " 50000, 0, 80000, '{}')", (now,))
        overdue = request(conn, 10_000, 30, "erp-overdue-1", now - timedelta(days=40),
                          "copper for the March order")
        assert overdue["status"] == "approved", overdue
        vouchers = build_chain(conn, now)
        trades = post_shipments(conn, now)
        approvable = request(conn, 20_000, 90, "erp-wait-1", now, "buy copper cathode")
        over_limit = request(conn, 80_000, 180, "erp-wait-2", now, "new rolling line")
        assert approvable["status"] == over_limit["status"] == "pending"
        assert approvable["reasons"] == ["open critical alert on the facility: fictitious_trade"]
        assert any("exceeds the available limit" in r for r in over_limit["reasons"])
        create_user(conn, "officer", PASSWORD, "officer")
    with dashboard_server(pg, url, "chain") as base:
        yield Chain(base, url, trades=trades, overdue=overdue["drawdown_id"],
                    approvable=approvable["drawdown_id"], over_limit=over_limit["drawdown_id"],
                    **vouchers)


def open_page(tab: Any, chain: Chain, nav: str) -> None:
    """Sign in as the officer and open a page from the top navigation."""
    sign_in_as_officer(tab, chain.base, timeout_ms=WAIT_MS)
    tab.click(f"#topnav a[data-nav='{nav}']")


def assert_clean_but_refusals(log: BrowserLog) -> None:
    """assert_clean, but the browser's own line for the answered 409 is expected."""
    log.console_errors = [e for e in log.console_errors if "status of 409" not in e]
    assert_clean(log)


def voucher(tab: Any, voucher_id: str) -> Any:
    return tab.locator(f"#chain-{PROGRAMME} tr.voucher-row[data-voucher='{voucher_id}']")


def test_chain_page_shows_the_tiers_what_was_financed_and_a_vouchers_path(
        chain: Chain, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    open_page(tab, chain, "chain")
    tab.wait_for_selector(f"#chain-{PROGRAMME} tr.voucher-row", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == "#/chain"

    # the programme line: 100,000 used (the paid payable no longer counts), 32,000 financed
    kpis = tab.inner_text(f"#chain-{PROGRAMME} .programme-kpis")
    for text in ("1,000,000", "100,000", "900,000 room", "32,000", "80%"):
        assert text in kpis, (text, kpis)
    assert "Example Flour Mill Group" in tab.inner_text(f"#chain-{PROGRAMME} .chain-core")

    # the unpaid payable's tree, from tier 1 down to tier 3, in order
    tree = tab.eval_on_selector_all(
        f"#chain-{PROGRAMME} tbody.payable[data-root='{chain.root}'] tr.voucher-row",
        "rows => rows.map(r => [r.dataset.voucher, r.dataset.tier, r.dataset.holder,"
        " r.dataset.status])")
    assert tree == [
        [chain.root, "1", TIER1, "spent"], [chain.tier2, "2", TIER2, "spent"],
        [chain.tier3, "3", TIER3, "financed"], [chain.kept2, "2", TIER2, "financed"],
        [chain.kept1, "1", TIER1, "active"]], tree
    assert voucher(tab, chain.root).get_attribute("data-payable") == "unpaid"
    assert "100,000" in voucher(tab, chain.root).locator("td.amount").inner_text()
    tier3 = voucher(tab, chain.tier3)
    assert "Wire Works Co" in tier3.inner_text()
    assert tier3.locator("td.amount").inner_text() == "15,000"
    assert tier3.locator("td.financed").inner_text().startswith("12,000")
    assert voucher(tab, chain.kept2).locator("td.financed").inner_text().startswith("20,000")
    assert voucher(tab, chain.kept1).locator("td.financed").inner_text() == "—"
    # the other payable was paid at maturity: settled
    assert voucher(tab, chain.paid_root).get_attribute("data-payable") == "paid"
    assert voucher(tab, chain.paid_root).get_attribute("data-status") == "settled"

    # a click on the tier-3 voucher: its path back to the core enterprise's confirmation
    tier3.click()
    path = tab.locator(f".voucher-path[data-voucher='{chain.tier3}']")
    path.wait_for(timeout=WAIT_MS)
    steps = tab.eval_on_selector_all(
        f".voucher-path[data-voucher='{chain.tier3}'] li.path-step",
        "items => items.map(i => [i.dataset.voucher, i.dataset.holder, i.dataset.tier])")
    assert steps == [[chain.root, TIER1, "1"], [chain.tier2, TIER2, "2"],
                     [chain.tier3, TIER3, "3"]], steps
    confirmation = path.locator("li.path-confirmation").inner_text()
    assert "Example Flour Mill Group" in confirmation and "ar-chain-1" in confirmation
    assert "core-erp" in confirmation
    tier3.click()  # and closed again
    path.wait_for(state="detached", timeout=WAIT_MS)

    # receivables that name a shipment: proven, pending and contradicted, with the evidence
    tab.wait_for_selector("#trade-table tr.trade-row", timeout=WAIT_MS)
    shown = dict(tab.eval_on_selector_all(
        "#trade-table tr.trade-row", "rows => rows.map(r => [r.dataset.receivable, r.dataset.tradeStatus])"))
    assert shown == chain.trades, shown
    proven = tab.locator("#trade-table tr[data-receivable='ar-ship-ok']")
    assert "rel-copper-7" in proven.locator("td.evidence-release").inner_text()
    assert "stopped 42 min" in proven.locator("td.evidence-arrival").inner_text()
    assert "5" in proven.locator("td.evidence-seller").inner_text()
    fake = tab.locator("#trade-table tr[data-receivable='ar-ship-fake']")
    assert "never left the seller" in fake.inner_text() and "goods_never_moved" in fake.inner_text()
    assert "not judged yet" in tab.inner_text("#trade-table tr[data-receivable='ar-ship-wait']")
    assert tab.evaluate("document.querySelector('#trade-table tbody tr').dataset.tradeStatus") \
        == "contradicted", "contradicted first"
    voucher(tab, chain.tier3).click()
    path.wait_for(timeout=WAIT_MS)
    screenshot(tab, "dashboard-chain.png")
    assert_clean(log)


def test_drawdown_queue_approves_and_shows_a_refusal_in_its_row(
        chain: Chain, page: tuple[Any, BrowserLog]) -> None:
    tab, log = page
    open_page(tab, chain, "drawdowns")
    tab.wait_for_selector("#pending-table tr.drawdown-row", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == "#/drawdowns"
    pending = tab.eval_on_selector_all("#pending-table tr.drawdown-row",
                                       "rows => rows.map(r => r.dataset.drawdown)")
    assert sorted(pending) == sorted([chain.approvable, chain.over_limit])
    ok = tab.locator(f"#pending-table tr[data-drawdown='{chain.approvable}']")
    over = tab.locator(f"#pending-table tr[data-drawdown='{chain.over_limit}']")
    assert "open critical alert on the facility: fictitious_trade" in ok.inner_text()
    assert "buy copper cathode" in ok.inner_text() and "90 d" in ok.inner_text()
    assert "Metal Trader Ltd" in ok.inner_text() and "20,000" in ok.inner_text()
    assert "exceeds the available limit 40,000.00 CNY" in over.inner_text()
    overdue = tab.locator(f"#overdue-table tr[data-drawdown='{chain.overdue}']")
    assert "10,000" in overdue.inner_text() and "10 d overdue" in overdue.inner_text()

    # Approve with a comment: off the queue, into the decisions; the database agrees
    ok.locator("input.dd-comment").fill("alert checked: the truck is in the yard")
    ok.locator("button[data-action='approve']").click()
    tab.wait_for_selector(f"#decided-table tr[data-drawdown='{chain.approvable}'][data-status='approved']",
                          timeout=WAIT_MS)
    ok.wait_for(state="detached", timeout=WAIT_MS)
    assert "approved" in tab.inner_text("#drawdown-notice")
    with psycopg.connect(chain.database_url) as conn:
        row = conn.execute("SELECT status, decided_by, comment FROM drawdowns WHERE drawdown_id = %s",
                           (chain.approvable,)).fetchone()
    assert row == ("approved", "officer", "alert checked: the truck is in the yard"), row

    # The one past the limit is refused (409): the reason shows in its row, it stays pending
    over.locator("button[data-action='approve']").click()
    refusal = over.locator(".row-error")
    refusal.wait_for(timeout=WAIT_MS)
    assert "Refused: amount 80,000.00 exceeds the available limit 20,000.00 CNY" in refusal.inner_text()
    assert tab.locator("#pending-table tr.drawdown-row").count() == 1
    with psycopg.connect(chain.database_url) as conn:
        status = conn.execute("SELECT status FROM drawdowns WHERE drawdown_id = %s",
                              (chain.over_limit,)).fetchone()
    assert status == ("pending",)
    screenshot(tab, "dashboard-drawdowns.png")

    # A new request waits (the alert is still open); the engine's next limit event over the live
    # stream brings it into the queue, well before the page's 15 s poll would.
    tab.wait_for_selector("#live[data-state='live']", timeout=WAIT_MS)
    with psycopg.connect(chain.database_url, autocommit=True) as conn:
        late = request(conn, 5_000, 30, "erp-wait-3", datetime.now(UTC), "freight")
        conn.execute("SELECT pg_notify('pw_limits', %s)", (json.dumps({
            "facility_id": "fac-metal", "limit": 50_000, "available": 20_000, "ltv": 0.4}),))
    tab.wait_for_selector(f"#pending-table tr[data-drawdown='{late['drawdown_id']}']",
                          timeout=LIVE_MS)
    assert_clean_but_refusals(log)
