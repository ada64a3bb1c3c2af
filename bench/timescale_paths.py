"""The TimescaleDB path measured on a real TimescaleDB: ``python -m bench.timescale_paths
--database-url postgresql://…`` (a server with the extension preloaded; two scratch databases are
created on it and dropped).

Two databases side by side, migrated by the project: ``shipped`` as migration 0002 sets it up
(no default ``(time DESC)`` index, compression ordered by ``time, boot, seq``), and ``before``
with the earlier choices put back (the default index, compression ordered by time only). Prints:

- ``write_batch <shipped ms> ms before <ms> ms ratio <before / shipped>`` — the gateway writer's
  ``write_batch`` of 1,000 readings, median over alternating rounds;
- ``latest_compressed <shipped ms> ms before <ms> ms`` — the "latest value" lookup
  (:func:`telemetry.queries.latest_readings`) per (device, metric) once every chunk is compressed;
- ``hourly_newest_hour <present|missing>`` — readings of the last minutes in ``readings_hourly``
  before any refresh materialised them (real-time aggregate);
- ``hourly_late <aggregated>/<stored> readings`` — readings dated 5 days back, stored after a
  refresh, then the refresh policy's job run once more: how many the aggregate counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.scratch import scratch_database
from schema.migrate import apply_all
from schema.timescale import TimeSeriesOptions
from telemetry.contract.payload import Accepted, Reading
from telemetry.queries import latest_readings
from telemetry.writer import Batch, write_batch

TENANT = "tsbench"
DEVICES = 200
BATCH = 1_000
ROUNDS = 8
BATCHES_PER_ROUND = 10
HISTORY_DAYS = 3
HISTORY_STEP_S = 60


def _register(url: str) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
            "COPY devices (device_id, tenant, kind) FROM STDIN") as cp:
        for d in range(DEVICES):
            cp.write_row((f"dev-{d:04d}", TENANT, "warehouse"))


def _put_back_the_earlier_choices(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE INDEX readings_time_idx ON readings (time DESC)")
        conn.execute("ALTER TABLE readings SET (timescaledb.compress_orderby = 'time DESC')")


def _batches(start_seq: int) -> Iterator[Batch]:
    seq = start_seq
    while True:
        now = datetime.now(UTC)
        accepted = []
        for i in range(BATCH // 2):
            seq += 1
            device = f"dev-{i % DEVICES:04d}"
            accepted.append(Accepted(device, TENANT, 1, seq, now, now, (
                Reading("weight_kg", 20_000.0 + i), Reading("temperature_c", 4.0))))
        yield Batch(accepted=accepted)


def _write_ms(conn: psycopg.Connection, batches: Iterator[Batch], n: int) -> list[float]:
    out = []
    for _ in range(n):
        batch = next(batches)
        started = time.perf_counter()
        write_batch(conn, batch)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def _history(url: str) -> None:
    """HISTORY_DAYS of one reading a minute per device and metric, ending an hour ago."""
    end = datetime.now(UTC) - timedelta(hours=1)
    steps = HISTORY_DAYS * 86_400 // HISTORY_STEP_S
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
            "COPY readings (time, device_id, metric, value, boot, seq, received_at)"
            " FROM STDIN") as cp:
        for d in range(DEVICES):
            for s in range(steps):
                t = end - timedelta(seconds=HISTORY_STEP_S * (steps - s))
                for metric, value in (("weight_kg", 20_000.0 + s), ("temperature_c", 4.0)):
                    cp.write_row((t, f"dev-{d:04d}", metric, value, 0, s, t))


def _compress_all(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT compress_chunk(c, if_not_compressed => true)"
                            " FROM show_chunks('readings') c").fetchall()
    return len(rows)


def _lookup_ms(url: str, runs: int = 15) -> float:
    """ms per (device, metric) of the latest-value lookup over the tenant's devices."""
    with psycopg.connect(url) as conn:
        latest_readings(conn, TENANT)  # warm the plan and the cache
        times = []
        pairs = 1
        for _ in range(runs):
            started = time.perf_counter()
            pairs = max(1, len(latest_readings(conn, TENANT)))
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times) / pairs


def _newest_hour_present(url: str) -> bool:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        write_batch(conn, Batch(accepted=[Accepted("dev-0000", TENANT, 9, 1, now, now,
                                                   (Reading("weight_kg", 1.0),))]))
        row = conn.execute("SELECT count(*) FROM readings_hourly WHERE device_id = 'dev-0000'"
                           " AND bucket >= date_trunc('hour', %s::timestamptz)",
                           (now,)).fetchone()
    return bool(row and row[0])


def _late_aggregated(url: str) -> tuple[int, int]:
    """(readings the aggregate counts, readings stored) for an hour 5 days back, filled after a
    refresh and then refreshed by the policy's own job."""
    hour = (datetime.now(UTC) - timedelta(days=5)).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        job = conn.execute("SELECT job_id FROM timescaledb_information.jobs"
                           " WHERE hypertable_name = 'readings_hourly'"
                           " AND proc_name = 'policy_refresh_continuous_aggregate'").fetchone()
        if job is None:
            raise RuntimeError("no refresh policy on readings_hourly")
        conn.execute("CALL run_job(%s)", (job[0],))
        late = [Accepted("dev-0001", TENANT, 7, i + 1, hour + timedelta(minutes=i),
                         datetime.now(UTC), (Reading("weight_kg", 5.0),)) for i in range(30)]
        write_batch(conn, Batch(accepted=late))
        conn.execute("CALL run_job(%s)", (job[0],))
        row = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM readings_hourly WHERE device_id = 'dev-0001'"
            " AND metric = 'weight_kg' AND bucket = %s", (hour,)).fetchone()
    return (int(row[0]) if row else 0), len(late)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timescale_paths",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True,
                        help="a server with TimescaleDB preloaded (scratch databases go there)")
    args = parser.parse_args(argv)
    options = TimeSeriesOptions()
    with ExitStack() as stack:
        shipped = stack.enter_context(scratch_database(args.database_url, Path("."), "pw_ts_new"))
        before = stack.enter_context(scratch_database(args.database_url, Path("."), "pw_ts_old"))
        for url in (shipped, before):
            apply_all(url, options, on_warning=lambda text: print(f"warning: {text}",
                                                                  file=sys.stderr))
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM timescaledb_information.hypertables"
                                   " WHERE hypertable_name = 'readings'").fetchone()
            if not row or not row[0]:
                print("error: readings is not a hypertable (is TimescaleDB preloaded?)",
                      file=sys.stderr)
                return 2
            _register(url)
        _put_back_the_earlier_choices(before)

        times: dict[str, list[float]] = {shipped: [], before: []}
        with psycopg.connect(shipped) as a, psycopg.connect(before) as b:
            streams = {shipped: _batches(0), before: _batches(0)}
            for _ in range(ROUNDS):  # alternate, so the machine's noise falls on both
                for url, conn in ((shipped, a), (before, b)):
                    times[url] += _write_ms(conn, streams[url], BATCHES_PER_ROUND)
        new_ms, old_ms = statistics.median(times[shipped]), statistics.median(times[before])
        print(f"write_batch {new_ms:.2f} ms before {old_ms:.2f} ms ratio {old_ms / new_ms:.2f}",
              flush=True)

        for url in (shipped, before):
            _history(url)
            _compress_all(url)
        print(f"latest_compressed {_lookup_ms(shipped):.3f} ms before {_lookup_ms(before):.3f} ms",
              flush=True)
        print(f"hourly_newest_hour {'present' if _newest_hour_present(shipped) else 'missing'}",
              flush=True)
        counted, stored = _late_aggregated(shipped)
        print(f"hourly_late {counted}/{stored} readings", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
