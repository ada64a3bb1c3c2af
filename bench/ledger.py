"""`pledgewatch bench ledger`: what the verifiable ledger costs.

On a scratch database (embedded, or a new database on the given server, dropped afterwards),
migrated, with two tables of the same shape: ``bench_events``, captured by the ledger's trigger
(``pw_ledger_attach``, as migration 0014 attaches the real tables), and ``bench_plain``, with no
trigger.

* ``plain_insert``: ``writers`` threads, each on its own connection, insert one event per
  transaction into ``bench_plain`` for ``seconds``: events committed per second.
* ``ledger_append``: the same writers insert into ``bench_events`` for ``seconds`` while the
  sequencer (its own process, as in production: :func:`ledger.appender.run`) appends what they
  commit and signs a head every 1,000 entries; the rate is events *in the log* per second, from
  the first insert until the log holds every committed event.
* ``inclusion_proof``: the log is then grown to ``entries`` entries (drawdown-like canonical
  entries appended in bulk through :func:`ledger.appender.append_records`), a head is signed, and
  ``proofs`` inclusion proofs of random entries against that head are served as the API serves
  them (the stored subtree hashes, one query, folded) and verified: p50/p99 of serving.
* ``verify``: the whole log read from the database, every leaf hash recomputed and checked
  against the stored one, the root recomputed at every signed head and each signature checked.

Prints ``ledger_append per_s N``, ``plain_insert per_s N``, ``inclusion_proof p50 X ms p99 Y ms``,
``verify entries N seconds S`` and last ``ratio <ledger_append / plain_insert>`` (targets: ratio
>= 0.5, proof p99 < 5 ms, 1,000,000 entries verified in < 10 s). Progress goes to stderr. Exit 1
when a proof or the verification fails.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives import serialization

from bench.scratch import scratch_database
from bench.stats import percentile
from ledger import merkle, store, verify
from ledger.appender import HeadPolicy, Record, append_records, drain, run
from ledger.canonical import Number, entry_text
from ledger.signing import Signer
from schema.migrate import apply_all
from schema.timescale import TimeSeriesOptions

EVENTS_SQL = """
CREATE TABLE {name} (
    id          bigserial PRIMARY KEY,
    facility_id text NOT NULL,
    amount      numeric(20, 2) NOT NULL,
    kind        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Options:
    writers: int = 8
    seconds: float = 10.0
    entries: int = 1_000_000
    proofs: int = 2000
    seed: int = 0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write(url: str, table: str, writers: int, seconds: float, seed: int) -> int:
    """``writers`` threads insert one event per transaction for ``seconds``; events committed."""
    counts = [0] * writers
    deadline = time.monotonic() + seconds
    errors: list[BaseException] = []
    sql = f"INSERT INTO {table} (facility_id, amount, kind) VALUES (%s, %s, 'drawdown')"

    def writer(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    conn.execute(sql, (f"fac-{rng.randrange(1000):04d}",
                                       f"{rng.randrange(1, 10**7)}.{rng.randrange(100):02d}"),
                                 prepare=True)
                    counts[n] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts)


def _sequencer(url: str, pem: bytes, stop: Any) -> None:
    key = serialization.load_pem_private_key(pem, password=None)
    run(url, Signer(key), HeadPolicy(every_entries=1000, every_seconds=1.0), stop,  # type: ignore[arg-type]
        poll_s=0.01)


def _pem(signer: Signer) -> bytes:
    return signer.private_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())


def measure_append(url: str, signer: Signer, options: Options) -> tuple[float, float]:
    """(ledger append per second, plain insert per second)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("bench_events", "bench_plain"):
            conn.execute(EVENTS_SQL.format(name=name))
        conn.execute("SELECT pw_ledger_attach('bench_events', '{r}.id::text',"
                     " 'ARRAY[{r}.facility_id]')")
        drain(conn, signer)
        base = store.tree_size(conn)
    started = time.perf_counter()
    plain = _write(url, "bench_plain", options.writers, options.seconds, options.seed)
    plain_rate = plain / (time.perf_counter() - started)
    progress(f"plain: {plain:,} events in {time.perf_counter() - started:.1f} s")

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_sequencer, args=(url, _pem(signer), stop), daemon=True)
    proc.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:  # the sequencer is up: it signs
            while proc.is_alive() and store.latest_head(conn) is None:
                conn.execute("INSERT INTO bench_events (facility_id, amount, kind)"
                             " VALUES ('warm-up', 1, 'warm-up')")
                time.sleep(0.05)
            drained = store.tree_size(conn)
        while True:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM ledger_outbox").fetchone()
            if row is None or row[0] == 0:
                break
            time.sleep(0.05)
        started = time.perf_counter()
        events = _write(url, "bench_events", options.writers, options.seconds, options.seed + 1)
        with psycopg.connect(url, autocommit=True) as conn:
            while store.tree_size(conn) < drained + events:
                if not proc.is_alive():
                    raise RuntimeError("the sequencer died")
                time.sleep(0.002)
            elapsed = time.perf_counter() - started
            behind = conn.execute("SELECT count(*) FROM ledger_outbox").fetchone()
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    progress(f"ledger: {events:,} events in the log {elapsed:.2f} s after the first insert "
             f"(outbox then: {behind[0] if behind else '?'}; entries before: {base:,})")
    return events / elapsed, plain_rate


def bulk_records(count: int, start: int, seed: int) -> Iterator[Record]:
    rng = random.Random(seed)
    for i in range(start, start + count):
        borrower = f"sup-{rng.randrange(10_000):05d}"
        row = {"drawdown_id": f"dd-{i:09d}", "facility_id": f"fac-{borrower[4:]}",
               "amount": Number(f"{rng.randrange(1, 10**7)}.{rng.randrange(100):02d}"),
               "currency": "CNY", "status": "approved", "tenor_days": Number("90"),
               "requested_at": f"2026-03-01T08:{i // 60 % 60:02d}:{i % 60:02d}.000000+00:00"}
        yield Record("drawdowns", "insert", row["drawdown_id"], [borrower],
                     entry_text("drawdowns", "insert", str(row["drawdown_id"]), [borrower],
                                str(row["requested_at"]), row))


def grow(url: str, signer: Signer, entries: int, seed: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        size = store.tree_size(conn)
        started = time.perf_counter()
        chunk = 100_000
        while size < entries:
            n = min(chunk, entries - size)
            last = append_records(conn, signer if size + n >= entries else None,
                                  bulk_records(n, size, seed + size))
            size = last.tree_size
            progress(f"log: {size:,} entries ({time.perf_counter() - started:.0f} s)")
        if store.latest_head(conn) is None or store.latest_head(conn).tree_size != size:  # type: ignore[union-attr]
            drain(conn, signer)
        conn.execute("VACUUM ANALYZE ledger_nodes")
        conn.execute("VACUUM ANALYZE ledger_entries")


def measure_proofs(url: str, count: int, seed: int) -> list[float]:
    """Serving times (ms) of ``count`` inclusion proofs of random entries; each is verified."""
    rng = random.Random(seed)
    times: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        head = store.latest_head(conn)
        assert head is not None
        for _ in range(50):  # warm the connection and the prepared plan
            store.inclusion_proof(conn, rng.randrange(head.tree_size), head.tree_size)
        for _ in range(count):
            index = rng.randrange(head.tree_size)
            t0 = time.perf_counter()
            path = store.inclusion_proof(conn, index, head.tree_size)
            times.append((time.perf_counter() - t0) * 1000)
            leaf = store.leaf_hash_at(conn, index)
            assert leaf is not None
            merkle.verify_inclusion(leaf, index, head.tree_size, path, head.root_hash)
    return times


def run_ledger_bench(options: Options, *, database_url: str | None,
                     time_series: TimeSeriesOptions | None, workdir: Path | None,
                     out: Callable[[str], Any] = print) -> int:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-ldg-")))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        url = stack.enter_context(scratch_database(database_url, workdir, "pw_bench_ledger"))
        apply_all(url, time_series)
        progress(f"scratch database migrated in {time.perf_counter() - started:.1f} s")
        signer = Signer.generate()

        append_rate, plain_rate = measure_append(url, signer, options)
        out(f"ledger_append per_s {append_rate:.0f}")
        out(f"plain_insert per_s {plain_rate:.0f}")

        grow(url, signer, options.entries, options.seed)
        try:
            times = measure_proofs(url, options.proofs, options.seed)
        except (merkle.ProofError, AssertionError) as exc:
            progress(f"an inclusion proof failed: {exc!r}")
            return 1
        out(f"inclusion_proof p50 {percentile(times, 50):.2f} ms "
            f"p99 {percentile(times, 99):.2f} ms")

        with psycopg.connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            report = verify.check_database(conn)
            verify_s = time.perf_counter() - t0
        out(f"verify entries {report.entries} seconds {verify_s:.2f}")
        if not report.ok:
            progress("verification failed: " + "; ".join(report.problems[:5]))
            return 1
        progress(f"verified {report.entries:,} entries and {report.heads} signed heads")
        out(f"ratio {append_rate / plain_rate:.2f}")
    return 0
