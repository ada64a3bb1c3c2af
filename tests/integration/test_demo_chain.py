"""The demo's supply chain on a real database: payables confirmed by the steelworks, vouchers down
to tier 3, financing, and the steelworks paying once the programme line is full; every root's
vouchers sum to it."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from firmware_sim.device_models import make_fleet
from lending.operations import load_portfolio
from pledgewatch.demo import OPERATOR, assign_demo_operator
from pledgewatch.demo_chain import PROGRAMME, TIER1, TIER2, TIER3, ChainActivity
from pledgewatch.demo_portfolio import demo_portfolio

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]


def test_the_demo_chain_moves_vouchers_down_to_tier_3_and_settles_when_the_line_is_full(
        migrated_db: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_portfolio(conn, demo_portfolio(make_fleet(12, tenant="demo"), now), now)
        chain = ChainActivity(migrated_db)
        chain.setup(conn, now)
        chain.setup(conn, now)  # a restarted demo keeps its programme
        for _ in range(6):
            chain.step(conn, now)
        assert (chain.stats.confirmed, chain.stats.transferred, chain.stats.financed,
                chain.stats.paid) == (5, 10, 5, 1)
        holders: dict[str, int] = dict(conn.execute(
            "SELECT holder_id, count(*) FROM vouchers WHERE status IN ('active', 'financed')"
            " GROUP BY holder_id").fetchall())
        assert holders == {TIER1: 4, TIER2: 4, TIER3: 4}, "the paid root's leaves are settled"
        depth = conn.execute(
            "WITH RECURSIVE up AS (SELECT voucher_id, parent_id, 1 AS tier FROM vouchers"
            " WHERE parent_id IS NULL UNION ALL SELECT v.voucher_id, v.parent_id, up.tier + 1"
            " FROM vouchers v JOIN up ON v.parent_id = up.voucher_id)"
            " SELECT max(tier) FROM up").fetchone()
        assert depth == (3,)
        unbalanced = conn.execute(
            "SELECT r.voucher_id FROM vouchers r WHERE r.parent_id IS NULL AND r.amount <>"
            " (SELECT sum(l.amount) FROM vouchers l WHERE l.root_id = r.voucher_id"
            " AND l.status IN ('active', 'financed', 'settled'))").fetchall()
        assert unbalanced == []
        payouts = conn.execute("SELECT payouts FROM voucher_payments").fetchone()
        assert payouts is not None
        assert {p["payee"] for p in payouts[0]} == {"bank", TIER1, TIER2, TIER3}
        used = conn.execute("SELECT count(*) FROM programmes WHERE programme_id = %s",
                            (PROGRAMME,)).fetchone()
        assert used == (1,)
        assert conn.execute("SELECT count(*) FROM drawdowns WHERE purpose = 'buy seed grain'"
                            ).fetchone() == (3,)


def test_the_demos_warehouse_operator_stores_every_warehouse_lot(migrated_db: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        portfolio = demo_portfolio(make_fleet(12, tenant="demo"), now)
        load_portfolio(conn, portfolio, now)
        stored = assign_demo_operator(conn, portfolio)
        assert assign_demo_operator(conn, portfolio) == stored  # a restarted demo: the same
        rows: dict[str, str | None] = dict(conn.execute(
            "SELECT lot_id, operator_id FROM lots").fetchall())
    warehouse = {lot.id for lot in portfolio.lots if lot.vehicle is None}
    assert stored == len(warehouse) > 0
    assert {lot for lot, op in rows.items() if op == OPERATOR[0]} == warehouse
    assert all(op is None for lot, op in rows.items() if lot not in warehouse)
