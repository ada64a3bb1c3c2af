"""The lending engine: recompute facilities when their signals change, and persist the result.

What triggers a recompute, all through PostgreSQL LISTEN/NOTIFY so that any number of gateways
and engines can share one database:

- ``pw_ingest`` — sent by the gateway's writer in the transaction that stores readings, with
  the ids of the devices that had new data: the facilities whose lots those devices watch;
- ``pw_lending`` — sent by whatever changes the portfolio (prices, releases, repayments,
  receivables, sales): the facility ids named, or ``*`` for all;
- ``pw_prices`` — sent with posted prices (the earliest time per commodity), so the engine's
  price cache re-reads a back-filled history;
- the passing of time (staleness, cure deadlines): every facility each ``tick_s`` seconds.

A facility is recomputed under a transaction-level advisory lock, so two engines never write
the same facility's snapshot at once; the alerts' unique index keeps one open alert per key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from lending.domain.assess import Assessment, assess
from lending.domain.quantity import TrustPolicy
from lending.domain.rules import RulePolicy
from lending.metrics import EngineMetrics
from lending.store import (
    LENDING_CHANNEL,
    PRICES_CHANNEL,
    PriceCache,
    SeriesCache,
    all_facilities,
    facilities_for_devices,
    load_inputs,
    persist,
)
from telemetry.writer import INGEST_CHANNEL

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CHUNK = 500  # facilities loaded and written per transaction


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class EngineStats:
    cycles: int = 0
    assessed: int = 0
    snapshots: int = 0
    alerts_raised: int = 0
    failed: int = 0
    last_cycle_s: float = 0.0


class LendingEngine:
    """Recomputes facilities; :meth:`run` follows the notifications until stopped."""

    def __init__(self, database_url: str, *, policy: RulePolicy | None = None,
                 trust: TrustPolicy | None = None, tick_s: float = 15.0,
                 clock: Clock = utcnow, metrics: EngineMetrics | None = None) -> None:
        self.database_url = database_url
        self.policy = policy or RulePolicy()
        self.trust = trust or TrustPolicy()
        self.tick_s = tick_s
        self.clock = clock
        self.cache = SeriesCache()
        self.prices = PriceCache()
        self.stats = EngineStats()
        self.metrics = metrics or EngineMetrics()
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def recompute(self, facility_ids: Iterable[str] | None = None,
                  devices: Iterable[str] = ()) -> list[Assessment]:
        """Assess the facilities named (and those watching ``devices``); None means all."""
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
        if facility_ids is None:
            self.metrics.last_pass.set(time.time())
            self.metrics.pass_seconds.set(self.stats.last_cycle_s)
        return results

    def _recompute_chunk(self, conn: psycopg.Connection, ids: list[str]) -> list[Assessment]:
        results = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pw_facility:' || id))"
                         " FROM unnest(%s::text[]) AS f(id) ORDER BY id", (ids,))
            now = self.clock()
            loaded = load_inputs(conn, ids, now, self.cache, self.prices, policy=self.policy)
            for fid in ids:
                inputs = loaded.inputs.get(fid)
                if inputs is None:
                    continue
                try:
                    assessment = assess(inputs, now, self.policy, self.trust)
                except Exception:
                    log.exception("lending engine: cannot assess facility %s; skipped", fid)
                    self.stats.failed += 1
                    self.metrics.failed.inc()
                    continue
                raised = persist(conn, assessment)
                if assessment.limit_changed is not None:
                    self.stats.snapshots += 1
                self.stats.alerts_raised += len(raised)
                results.append(assessment)
        return results

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Listen and recompute until ``stop`` is set; reconnects with backoff on errors."""
        delay = 0.2
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as listener:
                    listener.execute(f"LISTEN {INGEST_CHANNEL}")
                    listener.execute(f"LISTEN {LENDING_CHANNEL}")
                    listener.execute(f"LISTEN {PRICES_CHANNEL}")
                    self.recompute(None)
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
        self.close()

    def _follow(self, listener: psycopg.Connection, stop: threading.Event) -> None:
        next_tick = time.monotonic() + self.tick_s
        while not stop.is_set():
            wait = max(0.0, min(next_tick - time.monotonic(), 0.5))
            devices: set[str] = set()
            facilities: set[str] = set()
            everything = False
            noticed: float | None = None
            for note in listener.notifies(timeout=wait, stop_after=1):
                noticed = noticed or time.monotonic()
                if note.channel == INGEST_CHANNEL:
                    devices.update(filter(None, note.payload.split(",")))
                elif note.channel == PRICES_CHANNEL:
                    self._rewind_prices(note.payload)
                elif note.payload == "*":
                    everything = True
                else:
                    facilities.update(filter(None, note.payload.split(",")))
            if time.monotonic() >= next_tick:
                everything = True
                next_tick = time.monotonic() + self.tick_s
            if everything:
                self.recompute(None)
            elif devices or facilities:
                self.recompute(facilities, devices)
            # notice -> its assessment done; 0 once an idle wait passed with nothing to do
            self.metrics.lag.set(0 if noticed is None else time.monotonic() - noticed)


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
