"""The series cache's per-sensor store (lending.store._Series) knows a reading by a binary search
of its rows instead of a set of keys held beside them: on random streams of batches (late data,
readings delivered again, the same key twice in a batch, event flags beyond the window) it keeps
and returns exactly what the set-of-keys version did."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from lending.store import _Row, _Series

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class KeyedSeries:
    """The earlier implementation: a set of the kept rows' dedupe keys."""

    def __init__(self, limit: int, events: bool = False) -> None:
        self.limit, self.events = limit, events
        self.rows: list[_Row] = []
        self.keys: set[tuple[datetime, int, int]] = set()

    def merge(self, new: Iterable[_Row]) -> list[_Row]:
        fresh: list[_Row] = []
        for row in new:
            key = (row[0], row[1], row[2])
            if key not in self.keys:
                self.keys.add(key)
                fresh.append(row)
        if not fresh:
            return fresh
        fresh.sort()
        if self.rows and fresh[0] < self.rows[-1]:
            self.rows = sorted(self.rows + fresh)
        else:
            self.rows.extend(fresh)
        if len(self.rows) > self.limit:
            older, newest = self.rows[:-self.limit], self.rows[-self.limit:]
            flags = [r for r in older if r[3]][-self.limit:] if self.events else []
            kept = {(r[0], r[1], r[2]) for r in flags}
            for old in older:
                if (old[0], old[1], old[2]) not in kept:
                    self.keys.discard((old[0], old[1], old[2]))
            self.rows = flags + newest
        return fresh


def _row(rng: random.Random, i: int, events: bool) -> _Row:
    t = T0 + timedelta(seconds=5 * i + rng.choice([0, 0, 0, 1]))
    boot = rng.choice([1, 1, 1, 2])
    value = float(rng.random() < 0.2) if events else round(rng.gauss(1000.0, 3.0), 1)
    return (t, boot, i, value, t + timedelta(seconds=rng.uniform(0, 30)))


@pytest.mark.parametrize("events", [False, True])
def test_binary_search_dedupe_keeps_what_the_key_set_kept(events: bool) -> None:
    for seed in range(150):
        rng = random.Random(seed)
        limit = rng.choice([3, 10, 40])
        fast, slow = _Series(limit, events, archive=rng.choice([0, 50])), KeyedSeries(limit, events)
        sent: list[_Row] = []
        i = 0
        for _ in range(rng.randint(1, 25)):
            batch = []
            for _ in range(rng.randint(0, 15)):
                if sent and rng.random() < 0.3:  # delivered again (the arrival overlap)
                    batch.append(rng.choice(sent))
                elif sent and rng.random() < 0.1:  # same time and boot, another sequence number
                    t, boot, seq, value, received = rng.choice(sent)
                    batch.append((t, boot, seq + 10_000 * rng.randint(1, 3), value, received))
                elif rng.random() < 0.15:  # late: older than what is held
                    batch.append(_row(rng, rng.randint(0, max(0, i - 1)), events))
                else:
                    i += 1
                    batch.append(_row(rng, i, events))
            if batch and rng.random() < 0.2:
                batch.append(batch[0])  # twice in one batch
            sent += batch
            assert fast.merge(list(batch)) == slow.merge(list(batch))
            assert fast.rows == slow.rows
            assert fast.pairs() == [(r[0], r[3]) for r in slow.rows]
            assert fast.received() == [r[4] for r in slow.rows]
