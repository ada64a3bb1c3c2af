"""The lending engine: recompute facilities when their signals change, and persist the result.

What triggers a recompute, all through PostgreSQL LISTEN/NOTIFY so that any number of gateways
and engines can share one database:

- ``pw_ingest`` — sent by the gateway's writer in the transaction that stores readings, with
  the ids of the devices that had new data: the facilities whose lots those devices watch;
- ``pw_lending`` — sent by whatever changes the portfolio (prices, releases, repayments,
  receivables, sales): the facility ids named, or ``*`` for all;
- ``pw_prices`` — sent with posted prices (the earliest time per commodity), so the engine's
  price cache re-reads a back-filled history;
- the passing of time: a deadline queue. After each facility's assessment the engine computes
  its next deadline (:func:`next_deadline`: a sensor going stale or losing trust, an open alert's
  cure deadline, a door or release window closing, a receivable ageing out, a sales day closing)
  and keeps a heap of (deadline, facility); every ``tick_s`` seconds it recomputes only the
  facilities whose deadline is due. A slow safety full pass (every ``full_pass_s`` seconds,
  default 4 min) recomputes the whole book so nothing can be forgotten.

Each round takes every notification pending (not one per loop; for at most ``DRAIN_S`` under a
steady stream) and unions their ids into one
recompute; a due tick adds the due facilities to that targeted work, never widening it to all.
Senders split long id lists over several notifications (each under PostgreSQL's 8000-byte
payload limit); ``*`` means that everything really changed (a portfolio load).

Several engines split the book when started with the same shard count (:mod:`lending.shards`):
each assesses only the facilities of the shards it holds by lease, polls its leases every
``lease_poll_s`` and assesses at once the facilities of a shard it takes over.

Incremental work: the engine keeps each lot's observation (:class:`lending.store.ObservationCache`)
and lot phase (verification and the lot rules, :class:`lending.domain.assess.LotResult`) and each
facility's latest snapshot (:class:`lending.store.SnapshotCache`). A price tick or a device that
spoke recomputes only what changed: a lot whose readings, status, release orders and inspection
are as they were, whose rules were all clear and whose readings are not stale keeps its lot phase
(:func:`lending.domain.assess.reusable`, which refuses anything a rule reads against the clock),
and the facility is revalued and its rules run on it. While it follows notices the series cache
reads only the devices named since it last read them (every write of readings or status
notifies); a (re)connection and each safety pass read every device again. The snapshots of a
chunk that moved are written with one COPY.

A facility is recomputed under a transaction-level advisory lock, so two engines never write
the same facility's snapshot at once; the alerts' unique index keeps one open alert per key.
"""

from __future__ import annotations

import gc
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from lending.domain.assess import Assessment, FacilityInputs, LotResult, assess, assess_many
from lending.domain.quantity import TrustPolicy
from lending.domain.rules import RulePolicy
from lending.domain.sales import last_closed_day
from lending.metrics import EngineMetrics
from lending.shards import ShardLeases, shard_of
from lending.store import (
    LENDING_CHANNEL,
    PRICES_CHANNEL,
    ObservationCache,
    PriceCache,
    SeriesCache,
    SnapshotCache,
    all_facilities,
    facilities_for_devices,
    load_inputs,
    persist_all,
)
from telemetry.writer import INGEST_CHANNEL

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CHUNK = 500  # facilities loaded and written per transaction
STALE_STEP = timedelta(seconds=60)  # while a lot's trust decays with staleness: recompute this often
DOOR_WINDOW = timedelta(hours=2)  # lending.store.load_inputs' door window (an opening counts this long)
SLACK = timedelta(seconds=1)  # a deadline is visited just after it, where the rules' ">" holds
DRAIN_S = 1.0  # how long a round keeps taking pending notifications before it does the work
DRAIN_GAP_S = 0.05  # ... and how long a quiet socket is given before the round ends
FULL_PASS_S = 240.0  # the safety full pass: within the PledgewatchEngineStuck alert (300 s)


def utcnow() -> datetime:
    return datetime.now(UTC)


def settle_heap() -> None:
    """After a full pass: collect, then move what survives (the caches of readings, observations
    and lot phases: millions of objects at 10,000 facilities) out of the cyclic collector's
    reach (``gc.freeze``), so a young collection after a burst of telemetry or a price tick does
    not grow into a full one walking the whole book (a pause of seconds); they are still freed
    by reference counting when a cache lets go of them."""
    gc.collect()
    gc.freeze()


@dataclass
class EngineStats:
    cycles: int = 0
    assessed: int = 0
    snapshots: int = 0
    alerts_raised: int = 0
    failed: int = 0
    last_cycle_s: float = 0.0


def _local_midnight_utc(day: date, utc_offset_hours: float) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=utc_offset_hours)


def next_deadline(inputs: FacilityInputs, assessment: Assessment, now: datetime,
                  policy: RulePolicy, trust: TrustPolicy) -> datetime | None:
    """When time alone, with no new data, may next change this facility's assessment (None:
    never): the earliest future one of its lots going stale (``stale_after``; then every
    ``STALE_STEP`` while trust decays, until ``worthless_after``), a door or release window
    closing, an open or just-raised alert's cure deadline, a receivable ageing past the
    eligible days, the next sales day closing. Pure: values in, a value out."""
    candidates: list[datetime] = []
    for lot in inputs.lots:
        verified = assessment.verified.get(lot.id)
        if verified is None or verified.stale_s is None:
            continue
        newest = now - timedelta(seconds=verified.stale_s)
        candidates += [newest + trust.stale_after, newest + trust.worthless_after,
                       newest + DOOR_WINDOW, newest + policy.release_match_window]
        if trust.stale_after < now - newest < trust.worthless_after:
            candidates.append(now + STALE_STEP)
    alerts = list(inputs.latest_alerts.values()) + [e.alert for e in assessment.alert_events]
    candidates += [a.cure_deadline for a in alerts if a.active and a.cure_deadline is not None]
    days = timedelta(days=inputs.facility.terms.receivable_max_days_past_due)
    candidates += [r.due + days for r in inputs.receivables if not r.paid]
    if inputs.sales:
        closed = last_closed_day(now, policy.utc_offset_hours, policy.sales_close_grace)
        candidates.append(_local_midnight_utc(closed + timedelta(days=2), policy.utc_offset_hours)
                          + policy.sales_close_grace + policy.sales_settle)
    due = [c for c in candidates if c >= now]
    return min(due) + SLACK if due else None


@dataclass
class Notices:
    """What the notifications pending at one moment asked for, unioned."""

    devices: set[str] = field(default_factory=set)
    facilities: set[str] = field(default_factory=set)
    everything: bool = False
    count: int = 0
    first_at: float | None = None  # time.monotonic() of the first one


class DeadlineQueue:
    """(deadline, facility) in a heap; a facility's newer deadline supersedes its older entry
    (lazy deletion), so scheduling is O(log n) and popping what is due touches only that."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, facility_id: str, deadline: datetime | None) -> None:
        with self._lock:
            if deadline is None:
                self._due.pop(facility_id, None)
                return
            self._due[facility_id] = deadline
            heapq.heappush(self._heap, (deadline, facility_id))
            if len(self._heap) > 2 * len(self._due) + 1024:  # drop superseded entries
                self._heap = [(d, f) for f, d in self._due.items()]
                heapq.heapify(self._heap)

    def pop_due(self, now: datetime) -> set[str]:
        """The facilities whose deadline is at or before ``now`` (taken off the queue)."""
        due: set[str] = set()
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                deadline, fid = heapq.heappop(self._heap)
                if self._due.get(fid) == deadline:
                    del self._due[fid]
                    due.add(fid)
        return due

    def next(self) -> datetime | None:
        with self._lock:
            while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)
            return self._heap[0][0] if self._heap else None


class LendingEngine:
    """Recomputes facilities; :meth:`run` follows the notifications until stopped."""

    def __init__(self, database_url: str, *, policy: RulePolicy | None = None,
                 trust: TrustPolicy | None = None, tick_s: float = 15.0,
                 clock: Clock = utcnow, metrics: EngineMetrics | None = None,
                 full_pass_s: float = FULL_PASS_S, shards: int = 1,
                 lease_poll_s: float = 1.0) -> None:
        if not (tick_s > 0 and full_pass_s > 0 and lease_poll_s > 0):
            raise ValueError(f"tick_s, full_pass_s and lease_poll_s must be positive, got "
                             f"{tick_s!r}, {full_pass_s!r} and {lease_poll_s!r}")
        self.database_url = database_url
        self.policy = policy or RulePolicy()
        self.trust = trust or TrustPolicy()
        self.tick_s = tick_s
        self.full_pass_s = full_pass_s
        self.deadlines = DeadlineQueue()
        self.clock = clock
        self.cache = SeriesCache()
        self.prices = PriceCache()
        # what an unchanged lot needs not recompute: its observation, its lot phase (reused by
        # lending.domain.assess where nothing it reads has changed), its latest snapshot
        self.observations = ObservationCache()
        self.lot_results: dict[str, LotResult] = {}
        self.snapshots = SnapshotCache()
        self.stats = EngineStats()
        self.metrics = metrics or EngineMetrics()
        self._conn: psycopg.Connection | None = None
        # several engines split the book by shard leases (lending.shards); one shard: no leases
        self.leases = ShardLeases(database_url, shards) if shards > 1 else None
        self.lease_poll_s = lease_poll_s

    def owns(self, facility_id: str) -> bool:
        """Whether this engine assesses the facility (always, with one shard)."""
        return self.leases is None or self.leases.owns(facility_id)

    def rebalance(self) -> None:
        """Poll the shard leases; assess at once the facilities of any shard newly held (a dead
        or new peer's share changed hands)."""
        if self.leases is None:
            return
        gained = self.leases.poll()
        self.metrics.shards.set(len(self.leases.held))
        if gained:
            log.info("lending engine: now holds shards %s", sorted(self.leases.held))
            self.recompute(None, shards=gained)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url)
        return self._conn

    def close(self) -> None:
        if self.leases is not None:
            self.leases.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def recompute(self, facility_ids: Iterable[str] | None = None,
                  devices: Iterable[str] = (), *,
                  shards: set[int] | None = None) -> list[Assessment]:
        """Assess the facilities named (and those watching ``devices``); None means all — of the
        shards this engine holds (of ``shards`` only, when given)."""
        started = time.perf_counter()
        conn = self._connection()
        results: list[Assessment] = []
        try:
            with conn.transaction():
                if facility_ids is None:
                    ids = all_facilities(conn)
                else:
                    ids = set(facility_ids)
                    device_list = sorted(set(devices))
                    if device_list:
                        ids |= facilities_for_devices(conn, device_list)
            if self.leases is not None:
                wanted = self.leases.held if shards is None else shards & self.leases.held
                ids = {fid for fid in ids if shard_of(fid, self.leases.shards) in wanted}
            ordered = sorted(ids)
            for start in range(0, len(ordered), CHUNK):
                results.extend(self._recompute_chunk(conn, ordered[start:start + CHUNK]))
        except BaseException:
            conn.rollback()
            raise
        self.stats.cycles += 1
        self.stats.assessed += len(results)
        self.stats.last_cycle_s = time.perf_counter() - started
        self.metrics.assessed.inc(len(results))
        if facility_ids is None and shards is None:
            self.metrics.last_pass.set(time.time())
            self.metrics.pass_seconds.set(self.stats.last_cycle_s)
        return results

    def _recompute_chunk(self, conn: psycopg.Connection, ids: list[str]) -> list[Assessment]:
        results = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pw_facility:' || id))"
                         " FROM unnest(%s::text[]) AS f(id) ORDER BY id", (ids,))
            now = self.clock()
            loaded = load_inputs(conn, ids, now, self.cache, self.prices, policy=self.policy,
                                 observations=self.observations, snapshots=self.snapshots)
            present = []
            for fid in ids:
                if fid in loaded.inputs:
                    present.append(loaded.inputs[fid])
                else:  # gone from the book
                    self.deadlines.schedule(fid, None)
            for inputs, assessment in zip(present, self._assess(present, now), strict=True):
                if assessment is None:
                    continue
                self.lot_results.update(assessment.lots)
                self.deadlines.schedule(inputs.facility.id, next_deadline(
                    inputs, assessment, now, self.policy, self.trust))
                results.append(assessment)
            raised = persist_all(conn, results)  # the snapshots that moved in one COPY
            self.snapshots.remember(conn, [a.snapshot for a in results
                                           if a.limit_changed is not None])
            for assessment, ids_raised in zip(results, raised, strict=True):
                if assessment.limit_changed is not None:
                    self.stats.snapshots += 1
                self.stats.alerts_raised += len(ids_raised)
        return results

    def _assess(self, batch: list[FacilityInputs], now: datetime) -> list[Assessment | None]:
        """The chunk's assessments in one vectorised value pass (:func:`assess_many`); should
        one facility fail, each is assessed on its own, and those that fail are skipped
        (None)."""
        try:
            return list(assess_many(batch, now, self.policy, self.trust, self.lot_results))
        except Exception:  # found below, facility by facility
            log.debug("lending engine: a chunk failed as one; assessing it facility by facility",
                      exc_info=True)
        out: list[Assessment | None] = []
        for inputs in batch:
            try:
                out.append(assess(inputs, now, self.policy, self.trust, self.lot_results))
            except Exception:
                log.exception("lending engine: cannot assess facility %s; skipped",
                              inputs.facility.id)
                self.stats.failed += 1
                self.metrics.failed.inc()
                out.append(None)
        return out

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Listen and recompute until ``stop`` is set; reconnects with backoff on errors."""
        delay = 0.2
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as listener:
                    listener.execute(f"LISTEN {INGEST_CHANNEL}")
                    listener.execute(f"LISTEN {LENDING_CHANNEL}")
                    listener.execute(f"LISTEN {PRICES_CHANNEL}")
                    self.cache.follow()  # notices name every device with new data from here on
                    if self.leases is not None:
                        self.leases.poll()  # this engine's share before its first pass
                    self.recompute(None)
                    settle_heap()
                    if ready is not None:
                        ready.set()
                    delay = 0.2
                    self._follow(listener, stop)
            except psycopg.Error as error:
                self.close()
                log.warning("lending engine: database unavailable (%s); retrying in %.1fs",
                            str(error).strip().splitlines()[0] if str(error) else error, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.cache.unfollow()  # notices may be missed until listening again
        self.close()

    def take_notices(self, listener: psycopg.Connection, timeout: float) -> Notices:
        """Wait up to ``timeout`` s for a notification, then take every one pending, unioned
        (price notices rewind the price cache as they come)."""
        notices = Notices()
        wait = timeout
        drain_until: float | None = None
        while True:
            taken = 0
            for note in listener.notifies(timeout=wait,
                                          stop_after=None if drain_until is not None else 1):
                taken += 1
                notices.count += 1
                notices.first_at = notices.first_at or time.monotonic()
                if note.channel == INGEST_CHANNEL:
                    named = [d for d in note.payload.split(",") if d]
                    notices.devices.update(named)
                    self.cache.dirty(named)
                elif note.channel == PRICES_CHANNEL:
                    self._rewind_prices(note.payload)
                elif note.payload == "*":
                    notices.everything = True
                else:
                    notices.facilities.update(filter(None, note.payload.split(",")))
            if not taken:
                return notices
            # something came: drain what else is pending, without waiting, but for at most
            # DRAIN_S — under a steady stream something is always pending, and draining until
            # nothing is would never get to the work (the earlier hang)
            drain_until = drain_until or time.monotonic() + DRAIN_S
            if time.monotonic() >= drain_until:
                return notices
            # a notification already sent may still be on its way to the socket (a loaded
            # machine): it counts as pending for a short gap, not only what is buffered now
            wait = min(DRAIN_GAP_S, max(0.0, drain_until - time.monotonic()))

    def _follow(self, listener: psycopg.Connection, stop: threading.Event) -> None:
        next_tick = time.monotonic() + self.tick_s
        next_full = time.monotonic() + self.full_pass_s
        next_poll = time.monotonic() + self.lease_poll_s
        while not stop.is_set():
            if time.monotonic() >= next_poll:
                self.rebalance()
                next_poll = time.monotonic() + self.lease_poll_s
            wait = max(0.0, min(next_tick - time.monotonic(), next_poll - time.monotonic(), 0.5))
            notices = self.take_notices(listener, wait)
            everything = notices.everything
            facilities = notices.facilities
            if time.monotonic() >= next_full:  # the safety pass
                everything = True
                next_full = time.monotonic() + self.full_pass_s
                self.cache.follow()  # reads every device again: nothing can be forgotten
            if time.monotonic() >= next_tick:  # only what is due, beside the targeted work
                next_tick = time.monotonic() + self.tick_s
                if not everything:
                    facilities |= self.deadlines.pop_due(self.clock())
            if everything:
                self.recompute(None)
                settle_heap()
            elif notices.devices or facilities:
                self.recompute(facilities, notices.devices)
            # notice -> its assessment done; 0 once an idle wait passed with nothing to do
            self.metrics.lag.set(0 if notices.first_at is None
                                 else time.monotonic() - notices.first_at)

    def _rewind_prices(self, payload: str) -> None:
        try:
            posted = {c: datetime.fromisoformat(t) for c, t in json.loads(payload).items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("lending engine: ignoring a malformed %s payload", PRICES_CHANNEL)
            return
        if "*" in posted:
            for commodity in list(self.prices.newest):
                self.prices.rewind(commodity, posted["*"])
        for commodity, since in posted.items():
            self.prices.rewind(commodity, since)


def start_engine_thread(engine: LendingEngine, stop: threading.Event,
                        timeout: float = 30.0) -> threading.Thread:
    """Run ``engine`` in a daemon thread; returns once it has done its first full pass."""
    ready = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop, ready), name="lending-engine",
                              daemon=True)
    thread.start()
    if not ready.wait(timeout):
        log.warning("lending engine not ready after %.0fs; it keeps retrying", timeout)
    return thread
