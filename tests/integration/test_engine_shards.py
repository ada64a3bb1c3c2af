"""Several lending engines split the book by shard leases, against a real PostgreSQL: each holds
its fair share, assesses only its own facilities, and a SIGKILLed engine's shards are taken over
(and their facilities assessed) by the survivor within the lease poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bench.engine import build_book
from lending.engine import LendingEngine, start_engine_thread
from lending.shards import ShardLeases, shard_of
from tests.support import wait_until

pytestmark = pytest.mark.integration

SHARDS = 8


def test_facilities_spread_over_every_shard_and_stay_put() -> None:
    ids = [f"F{i:07d}" for i in range(4_000)]
    counts = [0] * SHARDS
    for fid in ids:
        counts[shard_of(fid, SHARDS)] += 1
    assert min(counts) > 0.8 * len(ids) / SHARDS, counts  # no shard starved
    assert [shard_of(f, SHARDS) for f in ids[:50]] == [shard_of(f, SHARDS) for f in ids[:50]]
    assert {shard_of(f, 1) for f in ids} == {0}


@pytest.mark.parametrize("shards", [0, 1, -3, 1025])
def test_out_of_range_shard_counts_are_refused(shards: int) -> None:
    with pytest.raises(ValueError, match="shards must be"):
        ShardLeases("postgresql://unused", shards)


@pytest.mark.once_per_run
def test_two_engines_split_the_book_and_never_assess_the_same_facility(
        migrated_db: str) -> None:
    book = build_book(migrated_db, 60, 1, datetime.now(UTC), readings_per_device=3)
    a = LendingEngine(migrated_db, shards=SHARDS, lease_poll_s=0.1)
    b = LendingEngine(migrated_db, shards=SHARDS, lease_poll_s=0.1)
    assert a.leases is not None and b.leases is not None
    try:
        a.rebalance()
        assert a.leases.held == set(range(SHARDS))  # alone: everything
        b.rebalance()  # b joins: a's surplus is not free yet
        a.rebalance()  # a sees two members and hands back half
        b.rebalance()
        assert len(a.leases.held) == len(b.leases.held) == SHARDS // 2
        assert a.leases.held.isdisjoint(b.leases.held)
        done_a = {x.snapshot.facility_id for x in a.recompute(None)}
        done_b = {x.snapshot.facility_id for x in b.recompute(None)}
        assert done_a.isdisjoint(done_b)
        assert done_a | done_b == set(book.facilities)
        assert {shard_of(f, SHARDS) for f in done_a} <= a.leases.held
        # targeted work is filtered too: b asked for a's facility does nothing
        assert b.recompute(sorted(done_a)[:3]) == []
    finally:
        a.close()
        b.close()


def _engine_process(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update({"PLEDGEWATCH_DATABASE_URL": url, "PLEDGEWATCH_ENGINE_SHARDS": str(SHARDS),
                "PLEDGEWATCH_ENGINE_LEASE_POLL_S": "0.2"})
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pledgewatch", "engine", "--tick", "60"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.once_per_run
def test_a_sigkilled_engines_shards_are_taken_over_and_assessed(migrated_db: str,
                                                                  tmp_path: Path) -> None:
    book = build_book(migrated_db, 60, 1, datetime.now(UTC), readings_per_device=3)
    survivor = LendingEngine(migrated_db, shards=SHARDS, lease_poll_s=0.2, tick_s=60)
    leases = survivor.leases
    assert leases is not None
    stop = threading.Event()
    thread = start_engine_thread(survivor, stop)
    peer = _engine_process(migrated_db, tmp_path / "peer.log")
    try:
        assert wait_until(lambda: len(leases.held) == SHARDS // 2, timeout=30), (
            leases.held, (tmp_path / "peer.log").read_text())
        theirs = {f for f in book.facilities if not survivor.owns(f)}
        assert theirs
        with psycopg.connect(migrated_db) as conn:
            conn.execute("DELETE FROM limit_snapshots WHERE facility_id = ANY(%s)",
                         (sorted(theirs),))
        peer.send_signal(signal.SIGKILL)
        peer.wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: len(leases.held) == SHARDS, timeout=10)
        taken_s = time.monotonic() - killed

        def reassessed() -> bool:
            with psycopg.connect(migrated_db) as conn:
                row = conn.execute("SELECT count(DISTINCT facility_id) FROM limit_snapshots"
                                   " WHERE facility_id = ANY(%s)", (sorted(theirs),)).fetchone()
            return row is not None and row[0] == len(theirs)

        assert wait_until(reassessed, timeout=20)
        assert taken_s < 5.0, taken_s  # poll 0.2 s: the locks go when the session ends
    finally:
        stop.set()
        thread.join(10)
        survivor.close()
        if peer.poll() is None:
            peer.kill()
