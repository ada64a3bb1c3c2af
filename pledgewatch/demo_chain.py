"""The demo's supply chain: the core steelworks' programme line, payables its tier-1 supplier posts
and the steelworks confirms, vouchers passed down to tier-2 and tier-3 suppliers and financed, a
drawdown against a live limit, and, once the line is used up, the steelworks paying the oldest
payable. Runs as a thread beside the fleet so vouchers keep moving on the dashboard."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from lending import financing
from lending.engine import utcnow
from lending.operations import LendingError, insert_receivable
from pledgewatch.demo_portfolio import CORE

log = logging.getLogger(__name__)

PROGRAMME = "steel-chain"
TIER1, TIER2, TIER3 = "sup-ore-trading", "sup-scrap-metals", "sup-grain-coop"
LINE = Decimal(3_000_000)
PAYABLE = Decimal(600_000)


@dataclass
class ChainStats:
    confirmed: int = 0
    transferred: int = 0
    financed: int = 0
    paid: int = 0
    drawdowns: int = 0


class ChainActivity:
    """Every ``every_s`` seconds one step of the chain's life (see the module)."""

    def __init__(self, database_url: str, every_s: float = 15.0) -> None:
        self.database_url, self.every_s = database_url, every_s
        self.stats = ChainStats()
        self._round = 0

    def setup(self, conn: psycopg.Connection, now: datetime) -> None:
        if not financing.list_programmes(conn, CORE):
            financing.create_programme(conn, PROGRAMME, CORE, "CNY", LINE, 0.8, "officer", now)

    def step(self, conn: psycopg.Connection, now: datetime) -> None:
        """Tier 1 invoices the steelworks, which confirms; tier 1 passes 40 % to tier 2, tier 2
        passes a quarter of that to tier 3, who finances it. When the line is full the steelworks
        pays its oldest payable (the bank is repaid, holders get the rest)."""
        self._round += 1
        used = Decimal(financing.get_programme(conn, PROGRAMME, None)["used"])
        if used + PAYABLE > LINE:
            oldest = conn.execute(
                "SELECT v.voucher_id, v.amount FROM vouchers v WHERE v.programme_id = %s AND"
                " v.parent_id IS NULL AND NOT EXISTS (SELECT 1 FROM voucher_payments p WHERE"
                " p.root_id = v.voucher_id) ORDER BY v.created_at LIMIT 1", (PROGRAMME,)).fetchone()
            if oldest is not None:
                financing.pay_payable(conn, oldest[0], oldest[1], payer_scope=CORE,
                                      by=f"{CORE} treasury", now=now)
                self.stats.paid += 1
            return
        receivable_id = f"ar-demo-{uuid.uuid4().hex[:10]}"
        insert_receivable(conn, receivable_id, f"fac-{TIER1}", "Yangtze Steelworks Group",
                          float(PAYABLE), now + timedelta(days=60), verified=False,
                          posted_by=f"{TIER1} ERP", now=now, debtor_id=CORE)
        root = financing.confirm_receivable(conn, receivable_id, debtor_scope=CORE,
                                            by=f"{CORE} ERP", now=now)
        self.stats.confirmed += 1
        tier2 = financing.transfer_voucher(conn, root["voucher_id"], TIER2, PAYABLE * 4 / 10,
                                           holder=TIER1, by=f"{TIER1} ERP", now=now)
        tier3 = financing.transfer_voucher(conn, tier2["voucher_id"], TIER3,
                                           Decimal(tier2["amount"]) / 4, holder=TIER2,
                                           by=f"{TIER2} ERP", now=now)
        self.stats.transferred += 2
        financing.finance_voucher(conn, tier3["voucher_id"], holder=TIER3, by=f"{TIER3} ERP",
                                  now=now)
        self.stats.financed += 1
        if self._round % 2:
            row, _ = financing.request_drawdown(
                conn, f"fac-{TIER3}", 20_000, "CNY", 30, "buy seed grain", by=f"{TIER3} ERP",
                idempotency_key=f"demo-{receivable_id}", now=now)
            self.stats.drawdowns += 1
            log.info("demo drawdown %s: %s", row["drawdown_id"], row["status"])

    def run(self, stop: threading.Event) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                self.setup(conn, utcnow())
                while not stop.is_set():
                    try:
                        self.step(conn, utcnow())
                    except LendingError as exc:  # e.g. the line is full: try again later
                        log.info("demo chain: %s", exc)
                    stop.wait(self.every_s)
        except psycopg.OperationalError as exc:
            log.warning("demo chain stopped: %s", exc)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="demo-chain", daemon=True)
        thread.start()
        return thread
