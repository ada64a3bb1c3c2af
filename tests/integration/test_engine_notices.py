"""Engine notices that scale, against a real PostgreSQL: a price post over thousands of
facilities arrives as ids split over several notifications (never ``*``), every pending notice is
taken into one round, and the timer recomputes only the facilities whose deadline is due."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bench.engine import COMMODITIES, build_book
from lending.domain.model import PricePoint
from lending.engine import DRAIN_S, LendingEngine, start_engine_thread
from lending.operations import post_prices
from lending.store import LENDING_CHANNEL, notify_lending
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.once_per_run
def test_a_price_post_over_2000_facilities_arrives_as_ids_never_a_star(migrated_db: str) -> None:
    now = datetime.now(UTC)
    book = build_book(migrated_db, 6_300, 1, now, readings_per_device=0)
    expected = {fid for fid, c in zip(book.facilities, book.facility_commodity, strict=True) if c == 0}
    assert len(expected) > 2_000
    with psycopg.connect(migrated_db, autocommit=True) as listener:
        listener.execute(f"LISTEN {LENDING_CHANNEL}")
        with psycopg.connect(migrated_db) as conn:
            named = post_prices(conn, [PricePoint(COMMODITIES[0], now, 3_000.0)])
        payloads = [n.payload for n in listener.notifies(timeout=2.0)
                    if n.channel == LENDING_CHANNEL]
    assert named == expected
    assert len(payloads) > 1 and "*" not in payloads
    assert all(len(p.encode()) < 8000 for p in payloads), [len(p) for p in payloads]
    ids = [i for p in payloads for i in p.split(",")]
    assert sorted(ids) == sorted(expected)  # every id once, nothing else


@pytest.mark.once_per_run
def test_hostile_ids_are_split_by_bytes_and_an_empty_list_sends_nothing(migrated_db: str) -> None:
    wide = [f"设施-{i:05d}-" + "é" * 40 for i in range(400)]  # multi-byte: ~100 bytes each
    with psycopg.connect(migrated_db, autocommit=True) as listener:
        listener.execute(f"LISTEN {LENDING_CHANNEL}")
        with psycopg.connect(migrated_db) as conn:
            notify_lending(conn, [*wide, "", ""])
            notify_lending(conn, [])
        payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    assert sorted(i for p in payloads for i in p.split(",")) == sorted(wide)


@pytest.mark.once_per_run
def test_pending_notices_are_all_taken_into_one_round(migrated_db: str) -> None:
    engine = LendingEngine(migrated_db)
    named = [f"F{i:07d}" for i in range(40)]
    try:
        with psycopg.connect(migrated_db, autocommit=True) as listener:
            listener.execute(f"LISTEN {LENDING_CHANNEL}")
            for fid in named:  # 40 transactions, 40 notifications
                with psycopg.connect(migrated_db) as conn:
                    notify_lending(conn, [fid])
            notices = engine.take_notices(listener, 1.0)
            assert notices.count == 40 and notices.facilities == set(named)
            assert not notices.everything and notices.first_at is not None
            assert engine.take_notices(listener, 0.0).count == 0  # nothing left behind
    finally:
        engine.close()


@pytest.mark.once_per_run
def test_a_steady_stream_of_notices_does_not_keep_a_round_from_its_work(migrated_db: str) -> None:
    """Under telemetry something is always pending; a round still ends within DRAIN_S of its
    first notice (draining until nothing was pending hung the engine)."""
    engine = LendingEngine(migrated_db)
    stop = threading.Event()

    def stream() -> None:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                notify_lending(conn, [f"S{i:07d}"])
                i += 1
                stop.wait(0.002)

    sender = threading.Thread(target=stream, daemon=True)
    try:
        with psycopg.connect(migrated_db, autocommit=True) as listener:
            listener.execute(f"LISTEN {LENDING_CHANNEL}")
            sender.start()
            rounds = []
            for _ in range(3):
                started = time.monotonic()
                notices = engine.take_notices(listener, 1.0)
                rounds.append((time.monotonic() - started, notices.count))
        assert all(count > 0 for _, count in rounds), rounds
        assert all(seconds < DRAIN_S + 1.0 for seconds, _ in rounds), rounds
    finally:
        stop.set()
        sender.join(5)
        engine.close()


@pytest.fixture
def half_silent_book(migrated_db: str) -> Iterator[tuple[str, set[str]]]:
    """20 facilities; only the even ones have readings (so only they have a staleness deadline)."""
    book = build_book(migrated_db, 20, 1, datetime.now(UTC), readings_per_device=12)
    heard = {fid for i, fid in enumerate(book.facilities) if i % 2 == 0}
    silent = [d for d, fid in book.device_facility.items() if fid not in heard]
    with psycopg.connect(migrated_db) as conn:
        conn.execute("DELETE FROM readings WHERE device_id = ANY(%s)", (silent,))
        conn.execute("DELETE FROM device_status WHERE device_id = ANY(%s)", (silent,))
    yield migrated_db, heard


@pytest.mark.once_per_run
def test_a_tick_recomputes_only_what_is_due_and_nothing_when_nothing_is(
        half_silent_book: tuple[str, set[str]]) -> None:
    url, heard = half_silent_book
    clock = [datetime.now(UTC)]
    engine = LendingEngine(url, tick_s=0.1, clock=lambda: clock[0])
    stop = threading.Event()
    thread = start_engine_thread(engine, stop)
    try:
        cycles, assessed = engine.stats.cycles, engine.stats.assessed
        stop.wait(1.0)  # ten ticks, nothing due
        assert (engine.stats.cycles, engine.stats.assessed) == (cycles, assessed)
        clock[0] += timedelta(minutes=6)  # the heard lots' readings are now stale
        assert wait_until(lambda: engine.stats.assessed >= assessed + len(heard), timeout=10)
        stop.wait(0.5)
        assert engine.stats.assessed == assessed + len(heard)  # not the silent ones, not twice
        with psycopg.connect(url) as conn:
            stale = {r[0] for r in conn.execute(
                "SELECT facility_id FROM alerts WHERE type = 'sensor_stale' AND status = 'open'")}
        assert stale == heard
        due = engine.deadlines.next()  # rescheduled: trust keeps decaying, a step later
        assert due is not None and clock[0] < due <= clock[0] + timedelta(seconds=62)
    finally:
        stop.set()
        thread.join(10)
        engine.close()

