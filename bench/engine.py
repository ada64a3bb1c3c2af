"""`pledgewatch bench engine`: today's lending engine at scale, against its bound.

Builds a synthetic book with COPY in a private database (one load cell and one RFID reader per
lot, 30 recent readings per device, 120 days of daily prices for 3 commodities; a facility's lots
all hold one commodity, so a price touches about a third of the facilities), then measures the
real :class:`lending.engine.LendingEngine` (judging staleness over hours, :data:`BENCH_TRUST`:
the book stands for a live fleet, and a slow run must not let it go stale mid-measurement):

- ``load`` — building the book (COPY, then ANALYZE);
- ``full_pass`` — ``recompute(None)`` on a fresh engine (cold caches);
- ``price_tick`` — a price posted for one commodity (``post_prices``, NOTIFY) to the last of its
  facilities' assessments committed by a running engine (snapshots stored), and how many;
- ``telemetry_p99`` — readings stored by the gateway's writer at a paced rate across the fleet;
  each reading's write (timed as its transaction starts) to the commit of its facility's next
  assessment (which stores a snapshot when the limit moved);
- ``rss_mb`` — this process's peak resident set (engine and bench; the database not included);
- ``engines <n> full_pass <s> s`` — a cold full pass of the book by ``n`` engine processes that
  split it by shard leases (:mod:`lending.shards`), for n = 1 and ``--engines``: the wall time
  from the start of the first to the end of the last (2 cores: two engines can be twice as fast);
- ``ratio`` — the bound over ``price_tick``, the bound measured in the same run: the numpy
  revaluation (:func:`lending.domain.revaluation.revalue`) of the affected facilities' lots plus
  a COPY of one row per affected facility into an unindexed table.
"""

from __future__ import annotations

import bisect
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.scratch import scratch_database
from bench.stats import median, percentile
from lending.domain.assess import Assessment
from lending.domain.model import PricePoint
from lending.domain.quantity import TrustPolicy
from lending.domain.revaluation import PortfolioArrays, revalue
from lending.engine import LendingEngine, start_engine_thread
from lending.operations import post_prices
from schema.migrate import apply_all
from schema.timescale import TimeSeriesOptions
from telemetry.contract.payload import Accepted, Reading
from telemetry.writer import Batch, write_batch

TENANT = "bench"
COMMODITIES = ("c0", "c1", "c2")
UNITS = 1000.0  # declared units per lot
UNIT_KG = 20.0
PRICE = 4000.0  # per t
READINGS_PER_DEVICE = 30
READING_SPACING_S = 10.0
PRICE_DAYS = 120
ADVANCE_RATE = 0.6
OUTSTANDING = 100_000.0
LINE = 1e9  # never binds: a price moves every limit
BATCH_EVERY_S = 0.05  # the writer's pace: one batch each 50 ms (500 readings at 10,000/s)
DRAIN_TIMEOUT_S = 300.0
# The book's devices stand for live ones that report every few seconds; its readings are written
# once, before the passes. A run on a slow or busy machine (a 10,000-facility cold pass can take
# minutes) must not let them all go stale mid-run and turn the measurement into a storm of stale
# alerts and trust decay that a live fleet never sees: the bench's engines judge staleness over
# hours, not the default 5 minutes (the rest of the trust policy is the default).
BENCH_TRUST = TrustPolicy(stale_after=timedelta(hours=2), worthless_after=timedelta(hours=3))


@dataclass(frozen=True)
class Book:
    facilities: list[str]
    facility_commodity: list[int]  # index into COMMODITIES
    lots_per_facility: int
    device_facility: dict[str, str]
    devices: list[str]
    last_price: dict[str, float]

    def lot_ids(self, f: int) -> list[str]:
        return [f"L{f:07d}-{k}" for k in range(self.lots_per_facility)]


def build_book(url: str, facilities: int, lots_per_facility: int, now: datetime,
               seed: int = 0, readings_per_device: int = READINGS_PER_DEVICE) -> Book:
    """COPY a synthetic book into the migrated database at ``url``."""
    rng = np.random.default_rng(seed)
    fids = [f"F{f:07d}" for f in range(facilities)]
    fcom = [f % len(COMMODITIES) for f in range(facilities)]
    book_devices: dict[str, str] = {}
    device_list: list[str] = []
    last_price: dict[str, float] = {}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY commodities (name, unit, unit_kg, liquidation_days) FROM STDIN") as cp:
            for c in COMMODITIES:
                cp.write_row((c, "t", 1000.0, 10.0))
        with cur.copy("COPY prices (commodity, time, price, currency) FROM STDIN") as cp:
            for c in COMMODITIES:
                walk = PRICE * np.exp(np.cumsum(rng.normal(0.0, 0.01, PRICE_DAYS)))
                for d in range(PRICE_DAYS):
                    cp.write_row((c, now - timedelta(days=PRICE_DAYS - d), float(walk[d]), "CNY"))
                last_price[c] = float(walk[-1])
        with cur.copy("COPY borrowers (borrower_id, tenant, name, role) FROM STDIN") as cp:
            for f in range(facilities):
                cp.write_row((f"B{f:07d}", TENANT, f"Borrower {f}", "independent"))
        with cur.copy("COPY facilities (facility_id, borrower_id, currency, line, outstanding,"
                      " terms) FROM STDIN") as cp:
            for f, fid in enumerate(fids):
                cp.write_row((fid, f"B{f:07d}", "CNY", LINE, OUTSTANDING,
                              f'{{"advance_rate": {ADVANCE_RATE}}}'))
        book = Book(fids, fcom, lots_per_facility, book_devices, device_list, last_price)
        with cur.copy("COPY lots (lot_id, facility_id, commodity, declared_quantity,"
                      " unit_weight_kg, registration_no, business_hours) FROM STDIN") as cp:
            for f, fid in enumerate(fids):
                for lot in book.lot_ids(f):
                    cp.write_row((lot, fid, COMMODITIES[fcom[f]], UNITS, UNIT_KG, f"REG-{lot}",
                                  "[0,24)"))
        for f, fid in enumerate(fids):
            for lot in book.lot_ids(f):
                for device in (f"lc-{lot}", f"rf-{lot}"):
                    book_devices[device] = fid
                    device_list.append(device)
        with cur.copy("COPY lot_sensors (device_id, lot_id) FROM STDIN") as sensors:
            for device in device_list:
                sensors.write_row((device, device[3:]))
        with cur.copy("COPY devices (device_id, tenant, kind) FROM STDIN") as devs:
            for device in device_list:
                devs.write_row((device, TENANT, "warehouse"))
        end = now - timedelta(seconds=2)
        times = [end - timedelta(seconds=READING_SPACING_S * (readings_per_device - 1 - i))
                 for i in range(readings_per_device)]
        noise = rng.normal(0.0, 2.0, READINGS_PER_DEVICE * 7).tolist()
        with cur.copy("COPY readings (time, device_id, metric, value, boot, seq, received_at)"
                      " FROM STDIN") as cp:
            for n, device in enumerate(device_list):
                weight = device.startswith("lc-")
                for i, t in enumerate(times):
                    value = (UNITS * UNIT_KG + noise[(n + i * 7) % len(noise)]) if weight else UNITS
                    cp.write_row((t, device, "weight_kg" if weight else "rfid_count", value, 1, i, t))
        if readings_per_device:  # as the writer leaves it: online, heard at the newest reading
            with cur.copy("COPY device_status (device_id, tenant, online, last_seen, changed_at,"
                          " last_heard) FROM STDIN") as cp:
                for device in device_list:
                    cp.write_row((device, TENANT, True, end, times[0], end))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return book


class TimedEngine(LendingEngine):
    """The real engine, recording when each chunk of facilities started and committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunks: list[tuple[float, float, list[str]]] = []
        self._chunks_lock = threading.Lock()

    def _recompute_chunk(self, conn: psycopg.Connection, ids: list[str]) -> list[Assessment]:
        started = time.monotonic()
        out = super()._recompute_chunk(conn, ids)  # committed when it returns
        with self._chunks_lock:
            self.chunks.append((started, time.monotonic(), ids))
        return out

    def chunks_since(self, since: float) -> list[tuple[float, float, list[str]]]:
        with self._chunks_lock:
            return [c for c in self.chunks if c[0] >= since]


def _wait_covered(engine: TimedEngine, since: float | dict[str, float], wanted: set[str],
                  timeout: float) -> float | None:
    """monotonic() when every facility in ``wanted`` was committed by a chunk started after
    ``since`` (one time for all, or each facility's own); None on timeout."""
    after = since if isinstance(since, dict) else dict.fromkeys(wanted, since)
    earliest = min(after.values(), default=0.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done: set[str] = set()
        last = earliest
        for start, end, ids in engine.chunks_since(earliest):
            hit = {fid for fid in wanted.intersection(ids) if start >= after[fid]}
            if hit:
                done |= hit
                last = max(last, end)
        if done >= wanted:
            return last
        time.sleep(0.005)
    return None


def measure_bound(book: Book, url: str, commodity: int, price: float) -> float:
    """ms: numpy revaluation of the affected facilities' lots + COPY of one row per facility
    into an unindexed table."""
    affected = [f for f, c in enumerate(book.facility_commodity) if c == commodity]
    n, k = len(affected), book.lots_per_facility
    unit_price = np.array([book.last_price[c] * UNIT_KG / 1000.0 for c in COMMODITIES])
    unit_price[commodity] = price * UNIT_KG / 1000.0
    arrays = PortfolioArrays(
        lot_facility=np.repeat(np.arange(n, dtype=np.intp), k),
        lot_commodity=np.full(n * k, commodity, dtype=np.intp),
        lot_quantity=np.full(n * k, UNITS), lot_trust=np.ones(n * k),
        lot_advance_rate=np.full(n * k, ADVANCE_RATE),
        commodity_price=unit_price, commodity_haircut=np.full(len(COMMODITIES), 0.1),
        facility_line=np.full(n, LINE), facility_outstanding=np.full(n, OUTSTANDING),
        facility_receivables=np.zeros(n), facility_ar_rate=np.full(n, 0.8),
        facility_reserves=np.zeros(n), facility_warning_ltv=np.full(n, 0.7),
        facility_liquidation_ltv=np.full(n, 0.85), facility_value_floor=np.zeros(n))
    arrays.validate()
    fids = [book.facilities[f] for f in affected]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE bound_sink (facility_id text, time timestamptz,"
                     " credit_limit double precision, available double precision,"
                     " ltv double precision)")
        conn.commit()
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            result = revalue(arrays)
            now = datetime.now(UTC)
            with conn.cursor() as cur, cur.copy("COPY bound_sink FROM STDIN") as cp:
                for fid, lim, avail, ltv in zip(fids, result.limit.tolist(),
                                                result.available.tolist(), result.ltv.tolist(),
                                                strict=True):
                    cp.write_row((fid, now, lim, avail, ltv))
            conn.commit()
            runs.append((time.perf_counter() - started) * 1e3)
    return median(runs)


def rss_mb() -> int:
    """Peak resident set of this process (VmHWM), MB; 0 where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _paced_writer(url: str, devices: list[str], rate: float, seconds: float, seed: int,
                  results: Any) -> None:
    """In a process of its own (as the gateway's writer is): readings at ``rate``/s through
    :func:`write_batch`; puts [(commit monotonic time, [device ids])], and the count, on
    ``results``. CLOCK_MONOTONIC is one clock for every process of the machine."""
    rng = np.random.default_rng(seed + 7)
    per_batch = max(1, round(rate * BATCH_EVERY_S))
    again = per_batch > len(devices)  # a small fleet: a device more than once a batch
    seq: dict[str, int] = defaultdict(lambda: READINGS_PER_DEVICE)
    commits: list[tuple[float, list[str]]] = []
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        tick = started
        while time.monotonic() - started < seconds:
            picks = rng.choice(len(devices), size=per_batch, replace=again).tolist()
            now = datetime.now(UTC)
            accepted = []
            for i in picks:
                device = devices[i]
                seq[device] += 1
                weight = device.startswith("lc-")
                value = UNITS * UNIT_KG + float(rng.normal(0.0, 2.0)) if weight else UNITS
                accepted.append(Accepted(device, TENANT, 1, seq[device], now, now, (
                    Reading("weight_kg" if weight else "rfid_count", value),)))
            # timed as the transaction starts: listeners get the NOTIFY at commit, which can be
            # before write_batch returns, and an assessment begun in between would not count
            # (the bench waited forever); latencies include the write itself (milliseconds)
            began = time.monotonic()
            write_batch(conn, Batch(accepted=accepted))
            commits.append((began, [devices[i] for i in picks]))
            tick += BATCH_EVERY_S
            pause = tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    results.put((started, time.monotonic(), commits))


def _telemetry(url: str, book: Book, engine: TimedEngine, rate: float, seconds: float,
               seed: int) -> tuple[list[float], int, float]:
    """Paced readings through the writer (another process); returns per-reading latencies (ms),
    the readings not followed within the drain timeout, and the rate achieved."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    writer = context.Process(target=_paced_writer, name="bench-engine-writer",
                             args=(url, book.devices, rate, seconds, seed, results))
    writer.start()
    try:
        started, ended, raw = results.get(timeout=seconds + DRAIN_TIMEOUT_S)
    finally:
        writer.join(30)
    commits: list[tuple[float, dict[str, int]]] = []
    for committed, devices in raw:
        per_facility: dict[str, int] = defaultdict(int)
        for device in devices:
            per_facility[book.device_facility[device]] += 1
        commits.append((committed, per_facility))
    sent = sum(len(d) for _, d in raw)
    last_commit: dict[str, float] = {}  # each facility's newest reading's commit
    for committed, per_facility in commits:
        for fid in per_facility:
            last_commit[fid] = committed
    _wait_covered(engine, last_commit, set(last_commit), DRAIN_TIMEOUT_S)
    by_facility: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for start, end, ids in engine.chunks_since(started):
        for fid in ids:
            by_facility[fid].append((start, end))
    latencies: list[float] = []
    missing = 0
    for committed, per_facility in commits:
        for fid, count in per_facility.items():
            runs = by_facility.get(fid, [])
            at = bisect.bisect_left(runs, (committed, 0.0))
            if at < len(runs):
                latencies.extend([(runs[at][1] - committed) * 1e3] * count)
            else:
                missing += count
    elapsed = ended - started
    return latencies, missing, sent / elapsed if elapsed > 0 else 0.0


SHARDS = 16  # the shard count of the engines comparison


def _sharded_engine(url: str, shards: int, engines: int, ready: Any, go: Any,
                    results: Any) -> None:
    """In a process of its own: an engine that waits to hold its share of the shards, then does
    one cold full pass of them; puts (started, ended, assessed) monotonic times on ``results``."""
    engine = LendingEngine(url, shards=shards, lease_poll_s=0.05, trust=BENCH_TRUST)
    try:
        deadline = time.monotonic() + 60.0
        while engine.leases is not None and time.monotonic() < deadline:
            engine.leases.poll()  # only the leases: the pass below is the one timed
            if len(engine.leases.held) == shards // engines:
                break
            time.sleep(0.05)
        ready.put(sorted(engine.leases.held) if engine.leases is not None else [])
        go.wait(120)
        started = time.monotonic()
        assessed = len(engine.recompute(None))
        results.put((started, time.monotonic(), assessed))
    finally:
        engine.close()


def sharded_full_pass(url: str, engines: int, shards: int = SHARDS) -> tuple[float, int]:
    """Seconds for ``engines`` processes (sharing ``shards`` leases; 1: no leases) to do one cold
    full pass of the book between them, and the facilities they assessed."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    procs = [context.Process(target=_sharded_engine, name=f"bench-engine-{i}",
                             args=(url, shards if engines > 1 else 1, engines, ready, go, results))
             for i in range(engines)]
    for proc in procs:
        proc.start()
    try:
        held = [ready.get(timeout=120) for _ in procs]
        if engines > 1 and sorted(s for h in held for s in h) != list(range(shards)):
            raise RuntimeError(f"the engines did not split the shards: {held}")
        go.set()
        runs = [results.get(timeout=DRAIN_TIMEOUT_S * 4) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return (max(r[1] for r in runs) - min(r[0] for r in runs), sum(r[2] for r in runs))


def run_engine(url: str, *, facilities: int, lots_per_facility: int, rate: float = 10_000.0,
               seconds: float = 5.0, seed: int = 0, engines: int = 2,
               out: Callable[[str], Any] = print,
               err: Callable[[str], Any] | None = None) -> dict[str, float]:
    """Every figure against the migrated, empty database at ``url``; lines on ``out``."""
    def note(text: str) -> None:
        (err or (lambda s: print(s, file=sys.stderr, flush=True)))(f"bench engine: {text}")

    now = datetime.now(UTC)
    started = time.perf_counter()
    book = build_book(url, facilities, lots_per_facility, now, seed)
    load_s = time.perf_counter() - started
    out(f"load {load_s:.2f} s")
    note(f"{facilities:,} facilities × {lots_per_facility} lots, {len(book.devices):,} devices,"
         f" {len(book.devices) * READINGS_PER_DEVICE:,} readings")

    engine = TimedEngine(url, tick_s=15.0, full_pass_s=3600.0, trust=BENCH_TRUST)
    stop = threading.Event()
    thread: threading.Thread | None = None
    try:
        started = time.perf_counter()
        assessed = len(engine.recompute(None))
        full_s = time.perf_counter() - started
        out(f"full_pass {full_s:.2f} s")
        if assessed != facilities:
            note(f"the full pass assessed {assessed} of {facilities} facilities")
        started = time.perf_counter()
        thread = start_engine_thread(engine, stop, timeout=DRAIN_TIMEOUT_S)
        warm_s = time.perf_counter() - started  # its first (warm) full pass

        commodity = 0
        price = book.last_price[COMMODITIES[commodity]] * 0.9
        affected = {book.facilities[f] for f, c in enumerate(book.facility_commodity)
                    if c == commodity}
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT coalesce(max(id), 0) FROM limit_snapshots").fetchone()
            posted = time.monotonic()
            named = post_prices(conn, [PricePoint(COMMODITIES[commodity], datetime.now(UTC),
                                                  price, "CNY")])
        done = _wait_covered(engine, posted, affected, DRAIN_TIMEOUT_S)
        tick_ms = float("inf") if done is None else (done - posted) * 1e3
        out(f"price_tick {tick_ms:.0f} ms {len(affected)} facilities")
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(DISTINCT facility_id) FROM limit_snapshots"
                                  " WHERE id > %s", (before[0] if before else 0,)).fetchone()
        if named != affected or stored is None or stored[0] < len(affected):
            note(f"price tick: {len(named)} named, {stored[0] if stored else 0} snapshots"
                 f" stored, {len(affected)} expected")

        latencies, missing, achieved = _telemetry(url, book, engine, rate, seconds, seed)
        p99 = percentile(latencies, 99) if not missing else float("inf")
        out(f"telemetry_p99 {p99:.0f} ms")
        out(f"rss_mb {rss_mb()}")
        stop.set()  # the comparison below has the machine to itself
        thread.join(30)
        thread = None
        for n in sorted({1, engines}):
            pass_s, done_n = sharded_full_pass(url, n)
            out(f"engines {n} full_pass {pass_s:.2f} s")
            if done_n != facilities:
                note(f"{n} engine(s) assessed {done_n} of {facilities} facilities")
        bound_ms = measure_bound(book, url, commodity, price)
        out(f"(warm full pass {warm_s:.2f} s; telemetry {len(latencies) + missing:,} readings at"
            f" {achieved:,.0f}/s offered, p50 {percentile(latencies, 50):.0f} ms, {missing}"
            f" not followed within {DRAIN_TIMEOUT_S:.0f} s; bound {bound_ms:.1f} ms)")
        ratio = bound_ms / tick_ms if tick_ms > 0 else float("inf")
        out(f"ratio {ratio:.4f}")
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        engine.close()
    return {"load_s": load_s, "full_pass_s": full_s, "price_tick_ms": tick_ms,
            "telemetry_p99_ms": p99, "bound_ms": bound_ms, "ratio": ratio}


def run_engine_bench(*, facilities: int, lots_per_facility: int, rate: float, seconds: float,
                     database_url: str | None, options: TimeSeriesOptions | None,
                     workdir: Path | None, seed: int = 0, engines: int = 2,
                     out: Callable[[str], Any] = print) -> int:
    """The command: a scratch database, migrated, then :func:`run_engine`."""
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-")))
        url = stack.enter_context(scratch_database(database_url, workdir, "pw_bench_engine"))
        apply_all(url, options)
        run_engine(url, facilities=facilities, lots_per_facility=lots_per_facility, rate=rate,
                   seconds=seconds, seed=seed, engines=engines, out=out)
    return 0


__all__: Sequence[str] = ("build_book", "run_engine", "run_engine_bench")
