"""The officers' ledger and reconciliation pages in headless Chromium (Debian's, driven by
Playwright) against the real app over a socket and a real, migrated PostgreSQL.

The Ledger page shows the latest signed tree head (and hands it over as a file to keep), lists the
entries newest first, and "Verify this event" checks an entry in the browser: the leaf hash from
the entry's canonical text (WebCrypto SHA-256), the RFC 9162 audit path up to the signed root and
the head's Ed25519 signature. An entry whose text is then changed in the database fails there.
Once the log has grown, the head kept earlier is proven to be a prefix of today's (a consistency
proof checked in the browser); a forged head and a head of a rewritten history are not.
The Reconciliation page lists a statement's breaks, shows the lines of a bad upload the server
refused, and flags a lot whose operator stock is far off the pledge.

One database and one server for the module (drawdowns, a repayment, a statement import and a
stock ledger through lending.*, then the ledger drained and signed through ledger.appender, as
the sequencer would); a fresh browser context (session) per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.accounts import create_user
from ledger import store
from ledger.appender import drain
from ledger.canonical import head_message
from ledger.signing import Signer
from ledger.store import SignedHead
from lending import financing, reconciliation, statement_file
from lending.operations import load_portfolio
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

JWT_SECRET = "ledger-test-secret-" + "l" * 40
WAIT_MS = 15_000
PAGE_SIZE = 25  # ledgerpage.js PAGE_SIZE
FLAGGED_LOT = "lot-wheat-1"  # pledged 100; the operator's stock ledger says 60


@dataclass
class Ledger:
    base: str
    database_url: str
    tree_size: int  # of the latest signed head
    root_hash: str
    booked: str  # a drawdown on the statement (twice: a duplicate)
    unbooked: str  # a drawdown the bank never booked
    import_id: int
    breaks: set[tuple[str, str]]  # (kind, reference)


def statement(booked: str, repayment: int, today: str) -> bytes:
    return ("reference,facility_id,amount,currency,direction,value_date\n"
            f"{booked},fac-metal,10000.00,CNY,debit,{today}\n"
            f"{booked},fac-metal,10000.00,CNY,debit,{today}\n"        # booked twice
            f"rp-{repayment},fac-metal,3000.00,CNY,credit,{today}\n"
            f"dd-ghost,fac-metal,5000.00,CNY,debit,{today}\n").encode()  # nothing explains it


@pytest.fixture(scope="module")
def ledger(pg_servers: dict[str, PgServer]) -> Iterator[Ledger]:
    """The example portfolio, fac-metal's live limit (50,000), two drawdowns and a repayment, a
    statement with three breaks, the operator's stock for two lots, wheat prices, all appended to the ledger
    under a signed head; an officer; the app on a free 127.0.0.1 port."""
    pg = pg_servers[DB_KIND]
    url = pg.migrated_database()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        register_devices(conn, [DeviceInfo("wh-t-0001", "acme", "warehouse"),
                                DeviceInfo("rfid-t-0001", "acme", "warehouse"),
                                DeviceInfo("wh-t-0002", "acme", "warehouse"),
                                DeviceInfo("trk-t-0001", "acme", "vehicle")])
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
        conn.execute("INSERT INTO limit_snapshots (facility_id, time, credit_limit, available,"
                     " outstanding, collateral_value, inputs) VALUES ('fac-metal', %s, 50000,"
                     " 50000, 0, 80000, '{}')", (now,))
        drawdowns = []
        # the first matures first: the repayment pays it (an update entry of its own)
        for key, amount, tenor in (("erp-ldg-1", 10_000, 30), ("erp-ldg-2", 4_000, 90)):
            row, created = financing.request_drawdown(conn, "fac-metal", amount, "CNY", tenor,
                                                      "copper cathode", by="sup-metal",
                                                      idempotency_key=key, now=now)
            assert created and row["status"] == "approved", row
            drawdowns.append(str(row["drawdown_id"]))
        paid = financing.repay(conn, "fac-metal", 3_000, now)
        data = statement(drawdowns[0], int(paid["id"]), now.date().isoformat())
        fmt, lines = statement_file.parse_statement(data)
        imported = reconciliation.import_statement(conn, data, fmt, lines,
                                                   source="core-ledger.csv", by="officer", now=now)
        reconciliation.import_stock(conn, [(FLAGGED_LOT, 60.0, now), ("lot-wheat-2", 40.0, now)],
                                    by="operator", now=now)
        # a fortnight of wheat prices: enough entries for a second page
        conn.execute("INSERT INTO prices (commodity, time, price, currency) SELECT 'wheat',"
                     " %s - make_interval(days => g), 2400 + g, 'CNY'"
                     " FROM generate_series(1, 14) g", (now,))
        create_user(conn, "officer", PASSWORD, "officer")
        head = drain(conn, Signer.generate()).head
        assert head is not None and head.tree_size == store.tree_size(conn)
    breaks = {(str(b["kind"]), str(b["reference"])) for b in imported["break_list"]}
    assert breaks == {("duplicate", drawdowns[0]), ("missing_in_platform", "dd-ghost"),
                      ("missing_in_bank", drawdowns[1])}, breaks
    assert head.tree_size > PAGE_SIZE, "the entries need more than one page"
    with dashboard_server(pg, url, "ledger") as base:
        yield Ledger(base, url, head.tree_size, head.root_hash.hex(), drawdowns[0],
                     drawdowns[1], int(imported["id"]), breaks)


def open_page(tab: Any, ledger: Ledger, nav: str) -> None:
    """Sign in as the officer and open a page from the top navigation."""
    sign_in_as_officer(tab, ledger.base, timeout_ms=WAIT_MS)
    tab.click(f"#topnav a[data-nav='{nav}']")


def leaves(tab: Any) -> list[int]:
    return [int(i) for i in tab.eval_on_selector_all(
        "#ledger-table tr.entry-row", "rows => rows.map(r => r.dataset.leaf)")]


def verify(tab: Any, leaf: int) -> Any:
    """Click "Verify this event" on an entry; its verdict once the browser has one."""
    row = tab.locator(f"#ledger-table tr.entry-row[data-leaf='{leaf}']")
    verdict = tab.locator(f"#ledger-table tr.verify-row[data-leaf='{leaf}'] .verdict")
    before = verdict.count() and verdict.inner_text()
    row.locator("button[data-action='verify']").click()
    tab.wait_for_function(
        "([leaf, before]) => { const v = document.querySelector("
        "`#ledger-table tr.verify-row[data-leaf='${leaf}'] .verdict`);"
        " return v && v.innerText !== before; }", arg=[leaf, before or ""], timeout=WAIT_MS)
    return verdict


def test_ledger_page_shows_the_signed_head_and_verifies_an_event_in_the_browser(
        ledger: Ledger, page: tuple[Any, BrowserLog], tmp_path: Path) -> None:
    tab, log = page
    open_page(tab, ledger, "ledger")
    tab.wait_for_selector("#ledger-head", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == "#/ledger"
    assert tab.inner_text("#head-size") == str(ledger.tree_size)
    assert tab.inner_text("#head-root") == ledger.root_hash

    # the head to keep, as a file: what `pledgewatch ledger verify --head` takes
    with tab.expect_download(timeout=WAIT_MS) as download:
        tab.click("#head-download")
    kept_file = tmp_path / "kept-head.json"
    download.value.save_as(str(kept_file))
    kept = json.loads(kept_file.read_text())
    assert (kept["tree_size"], kept["root_hash"]) == (ledger.tree_size, ledger.root_hash)
    assert {"timestamp", "key_id", "public_key", "signature"} <= set(kept)

    # newest first, 25 at a time
    tab.wait_for_selector("#ledger-table tr.entry-row", timeout=WAIT_MS)
    newest = list(range(ledger.tree_size - 1, ledger.tree_size - 1 - PAGE_SIZE, -1))
    assert leaves(tab) == newest
    tab.click("#ledger-older")
    tab.wait_for_function(f"() => document.querySelector('#ledger-table tr.entry-row')"
                          f"?.dataset.leaf === '{ledger.tree_size - 1 - PAGE_SIZE}'",
                          timeout=WAIT_MS)
    tab.click("#ledger-newer")
    tab.wait_for_function(f"() => document.querySelector('#ledger-table tr.entry-row')"
                          f"?.dataset.leaf === '{ledger.tree_size - 1}'", timeout=WAIT_MS)

    # the booked drawdown's entries, newest first: the repayment's update, its insert
    tab.fill("#ledger-key", ledger.booked)
    tab.press("#ledger-key", "Enter")
    tab.wait_for_function(
        "key => { const rows = [...document.querySelectorAll('#ledger-table tr.entry-row')];"
        " return rows.length && rows.every(r => r.dataset.key === key); }",
        arg=ledger.booked, timeout=WAIT_MS)
    mine = leaves(tab)
    with psycopg.connect(ledger.database_url) as conn:
        expected = [e["leaf_index"] for e in store.entries(conn, None, 50, 0, table="drawdowns",
                                                           key=ledger.booked)]
    assert mine == expected and len(mine) == 2, (mine, expected)  # its insert, the repayment's update
    target, other = mine

    verdict = verify(tab, target)
    assert verdict.get_attribute("data-verdict") == "verified", verdict.inner_text()
    assert verdict.inner_text().startswith("✓ verified")
    checks = verdict.inner_text()
    assert ledger.root_hash in checks and str(ledger.tree_size) in checks
    # Debian's Chromium has Ed25519 in WebCrypto: the signature is checked in the browser too
    assert verdict.get_attribute("data-signature") == "valid", checks
    assert "signature verified" in checks

    # change the stored entry's amount behind the log's back: the recomputed leaf hash no longer
    # leads to the signed root
    with psycopg.connect(ledger.database_url, autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE ledger_entries SET entry = replace(entry, '\"amount\":10000.00',"
            " '\"amount\":1000.00') WHERE leaf_index = %s RETURNING entry",
            (target,)).fetchone()
    assert changed is not None and '"amount":1000.00' in changed[0]
    verdict = verify(tab, target)
    assert verdict.get_attribute("data-verdict") == "failed", verdict.inner_text()
    text = verdict.inner_text()
    assert text.startswith("✗ not verified"), text
    assert "its text was changed after it was appended" in text
    assert tab.locator(f"tr.verify-row[data-leaf='{target}'] li[data-check='root'] .check-no"
                       ).count() == 1
    # the untouched entry of the same row still verifies
    assert verify(tab, other).get_attribute("data-verdict") == "verified"

    # the log grows (a drawdown, a new signed head): it still extends the head kept above, which
    # the browser checks with the consistency proof; a kept head with a forged root does not pass
    with psycopg.connect(ledger.database_url, autocommit=True) as conn:
        financing.request_drawdown(conn, "fac-metal", 1_000, "CNY", 30, "freight", by="sup-metal",
                                   idempotency_key="erp-ldg-3", now=datetime.now(UTC))
        grown = drain(conn, Signer.generate()).head
    assert grown is not None and grown.tree_size > ledger.tree_size
    tab.click("#ledger-refresh")
    tab.wait_for_function(f"() => document.querySelector('#head-size')?.textContent"
                          f" === '{grown.tree_size}'", timeout=WAIT_MS)
    kept_verdict = tab.locator("#kept-head-result .verdict")
    tab.set_input_files("#kept-head-file", str(kept_file))
    kept_verdict.wait_for(timeout=WAIT_MS)
    assert kept_verdict.get_attribute("data-verdict") == "verified", kept_verdict.inner_text()
    assert f"extends the kept head of {ledger.tree_size} entries" in kept_verdict.inner_text()
    forged = tmp_path / "forged-head.json"
    forged.write_text(json.dumps({**kept, "root_hash": "00" * 32}))
    tab.set_input_files("#kept-head-file", str(forged))
    tab.wait_for_selector("#kept-head-result .verdict[data-verdict='failed']", timeout=WAIT_MS)
    assert "signature does not verify" in kept_verdict.inner_text()
    # a head of another history, properly signed (as a bank that rewrote its log would): its
    # signature verifies, the consistency proof to today's head does not
    other_log = Signer.generate()
    root = bytes(32)
    rewritten = tmp_path / "rewritten-head.json"
    rewritten.write_text(json.dumps(SignedHead(
        ledger.tree_size, root, kept["timestamp"], other_log.key_id, other_log.public_key,
        other_log.sign(head_message(ledger.tree_size, root, kept["timestamp"]))).to_json()))
    tab.set_input_files("#kept-head-file", str(rewritten))
    tab.wait_for_function("() => document.querySelector('#kept-head-result .verdict')"
                          "?.innerText.includes('does not extend')", timeout=WAIT_MS)
    assert kept_verdict.get_attribute("data-verdict") == "failed"
    assert "the history was rewritten" in kept_verdict.inner_text()
    assert kept_verdict.locator("li[data-check='kept-signature'] .check-yes").count() == 1
    screenshot(tab, "dashboard-ledger.png")
    assert_clean(log)


def test_reconciliation_page_lists_breaks_refuses_a_bad_file_and_flags_goods(
        ledger: Ledger, page: tuple[Any, BrowserLog], tmp_path: Path) -> None:
    tab, log = page
    open_page(tab, ledger, "reconciliation")
    tab.wait_for_selector(f"#imports-table tr[data-import='{ledger.import_id}']", timeout=WAIT_MS)
    assert tab.evaluate("location.hash") == "#/reconciliation"
    summary = tab.inner_text(f"#imports-table tr[data-import='{ledger.import_id}']")
    for text in ("core-ledger.csv", "Duplicate 1", "Missing in platform 1", "Missing in bank 1"):
        assert text in summary, (text, summary)

    # the newest import is open: its breaks, each alerted on its facility
    tab.wait_for_selector("#breaks-table tr.break-row", timeout=WAIT_MS)
    shown = {tuple(b) for b in tab.eval_on_selector_all(
        "#breaks-table tr.break-row", "rows => rows.map(r => [r.dataset.kind, r.dataset.reference])")}
    assert shown == ledger.breaks, shown
    ghost = tab.locator("#breaks-table tr[data-reference='dd-ghost']")
    assert ghost.locator("a.facility-link").get_attribute("href") == "#/facility/fac-metal"
    assert ghost.locator("a.alert-link").count() == 1
    assert "5,000.00 CNY" in ghost.inner_text(), ghost.inner_text()

    # a bad statement: refused with its lines named, nothing stored
    bad = tmp_path / "bad.csv"
    bad.write_text("reference,facility_id,amount,currency,direction,value_date\n"
                   "dd-1,fac-metal,NaN,CNY,debit,2026-11-30\n"
                   "dd-2,fac-metal,10.00,CNY,sideways,2026-11-31\n")
    tab.set_input_files("#statement-file", str(bad))
    tab.click("#statement-upload")
    tab.wait_for_selector("#upload-errors li", timeout=WAIT_MS)
    assert tab.get_attribute("#upload-result", "data-outcome") == "refused-422"
    errors = tab.eval_on_selector_all("#upload-errors li",
                                      "items => items.map(i => [i.dataset.line, i.innerText])")
    assert {line for line, _ in errors} == {"2", "3"}, errors
    assert any("amount" in text and "NaN" in text for line, text in errors if line == "2"), errors
    with psycopg.connect(ledger.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM statement_imports").fetchone() == (1,)

    # goods three ways: the lot the operator counts 40 short is flagged; the other is not
    flagged = tab.locator(f"#goods-table tr.goods-row[data-lot='{FLAGGED_LOT}']")
    flagged.wait_for(timeout=WAIT_MS)
    assert "flagged" in (flagged.get_attribute("class") or "")
    assert flagged.get_attribute("data-flagged") == "operator_vs_pledged"
    assert flagged.locator("td[data-difference='operator_vs_pledged']").inner_text() == "-40"
    fine = tab.locator("#goods-table tr.goods-row[data-lot='lot-wheat-2']")
    assert fine.get_attribute("data-flagged") == ""
    assert tab.locator("#goods-table tr.goods-row[data-lot='lot-copper-1']").count() == 1
    tab.select_option("#goods-facility", "fac-grain")
    tab.wait_for_function("() => document.querySelector('#goods')"
                          ".querySelector('[data-facility]')?.dataset.facility === 'fac-grain'",
                          timeout=WAIT_MS)
    lots = tab.eval_on_selector_all("#goods-table tr.goods-row", "rows => rows.map(r => r.dataset.lot)")
    assert sorted(lots) == [FLAGGED_LOT, "lot-wheat-2"], lots
    screenshot(tab, "dashboard-reconciliation.png")
    assert_clean_but_refusals(log)


def assert_clean_but_refusals(log: BrowserLog) -> None:
    """assert_clean, but the browser's own line for the answered 422 is expected."""
    log.console_errors = [e for e in log.console_errors if "status of 422" not in e]
    assert_clean(log)
