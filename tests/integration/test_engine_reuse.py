"""The engine's incremental work against a real PostgreSQL: an engine that reuses unchanged lots'
observations and lot phases and its cached snapshots assesses exactly what a fresh engine
assesses; the snapshots it stores with COPY are the rows :func:`save_snapshot` stores; while it
follows notices it reads only the devices named since it last read them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bench.engine import COMMODITIES, build_book
from lending.domain.assess import Assessment
from lending.domain.model import PricePoint
from lending.engine import LendingEngine
from lending.operations import post_prices
from lending.store import save_snapshot, save_snapshots

pytestmark = pytest.mark.integration


def _by_id(results: list[Assessment]) -> dict[str, Assessment]:
    return {a.snapshot.facility_id: a for a in results}


def _executed_release(url: str, lot: str, now: datetime) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO release_orders (release_id, lot_id, quantity, status,"
                     " requested_at, approved_at, executed_at) VALUES ('R-1', %s, 50, 'executed',"
                     " %s, %s, %s)", (lot, now - timedelta(minutes=9), now - timedelta(minutes=8),
                                      now - timedelta(minutes=7)))


def test_a_warm_engine_assesses_what_a_fresh_one_does(migrated_db: str) -> None:
    now = datetime.now(UTC)
    book = build_book(migrated_db, 30, 3, now)
    released = book.lot_ids(4)[1]
    _executed_release(migrated_db, released, now)
    t0 = now + timedelta(seconds=5)
    warm = LendingEngine(migrated_db, clock=lambda: t0)
    try:
        first = _by_id(warm.recompute(None))
        assert len(first) == 30
        with psycopg.connect(migrated_db) as conn:  # a price moves a third of the book
            affected = post_prices(conn, [PricePoint(COMMODITIES[0], t0, 3_000.0, "CNY")])
        warm.prices.rewind(COMMODITIES[0], t0)
        t1 = t0 + timedelta(minutes=2)
        warm.clock = lambda: t1
        again = _by_id(warm.recompute(None))
        reused = {lot for fid in again for lot, r in again[fid].lots.items()
                  if r.findings is first[fid].lots[lot].findings}
        assert len(reused) > 60 and released not in reused  # a release: recomputed
        fresh = LendingEngine(migrated_db, clock=lambda: t1)
        try:
            other = _by_id(fresh.recompute(None))
        finally:
            fresh.close()
    finally:
        warm.close()
    assert set(again) == set(other)
    for fid, a in again.items():
        b = other[fid]
        assert a.snapshot == b.snapshot, fid
        assert a.verified == b.verified, fid
        # the lots' findings (the facility's read the alerts the warm engine raised at t1)
        assert [(f.key, f.signal, f.severity, f.evidence) for f in a.findings if f.lot_id] == [
            (f.key, f.signal, f.severity, f.evidence) for f in b.findings if f.lot_id], fid
        if fid in affected:
            assert a.limit_changed is not None  # the warm engine stored it; the fresh one found it


def test_copied_snapshots_are_the_rows_inserted_one_by_one(migrated_db: str) -> None:
    now = datetime.now(UTC)
    book = build_book(migrated_db, 3, 2, now)
    engine = LendingEngine(migrated_db, clock=lambda: now)
    try:
        results = engine.recompute(book.facilities)
    finally:
        engine.close()
    snapshots = [replace(a.snapshot, time=now + timedelta(minutes=1)) for a in results]
    columns = ("facility_id, time, credit_limit, available, outstanding, collateral_value,"
               " trusted_collateral_value, ltv, reasons, inputs")
    with psycopg.connect(migrated_db) as conn:
        for snapshot in snapshots:
            save_snapshot(conn, snapshot, ["one by one"])
        one = conn.execute(f"SELECT {columns} FROM limit_snapshots WHERE time = %s"
                           " ORDER BY facility_id", (snapshots[0].time,)).fetchall()
        later = [replace(s, time=now + timedelta(minutes=2)) for s in snapshots]
        save_snapshots(conn, [(s, ["one by one"]) for s in later])
        copied = conn.execute(f"SELECT {columns} FROM limit_snapshots WHERE time = %s"
                              " ORDER BY facility_id", (later[0].time,)).fetchall()
        conn.rollback()
    assert len(one) == 3
    strip = [(r[0], *r[2:8], r[8], {**r[9], "time": None}) for r in one]
    assert [(r[0], *r[2:8], r[8], {**r[9], "time": None}) for r in copied] == strip


def test_following_notices_reads_only_the_devices_named(migrated_db: str) -> None:
    now = datetime.now(UTC)
    book = build_book(migrated_db, 2, 1, now)
    device = book.devices[0]
    engine = LendingEngine(migrated_db)
    try:
        engine.cache.follow()
        engine.recompute(None)
        newest = engine.cache.get(device, "weight_kg")[-1][0]
        with psycopg.connect(migrated_db) as conn:  # stored without a notice
            conn.execute("INSERT INTO readings (time, device_id, metric, value, boot, seq,"
                         " received_at) VALUES (%s, %s, 'weight_kg', 15000, 1, 999, %s)",
                         (newest + timedelta(seconds=1), device, datetime.now(UTC)))
        engine.recompute(None)
        assert engine.cache.get(device, "weight_kg")[-1][0] == newest  # not read: not named
        engine.cache.dirty([device])
        engine.recompute(None)
        assert engine.cache.get(device, "weight_kg")[-1][0] == newest + timedelta(seconds=1)
        engine.cache.unfollow()  # not following: every device is read on every refresh
        assert engine.cache.clean is None
    finally:
        engine.close()
