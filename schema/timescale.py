"""Capability probe and time-series features: TimescaleDB when the extension can be used, plain
PostgreSQL otherwise.

The queries in :mod:`telemetry.queries` run unchanged on both (``date_bin``, ``DISTINCT ON``);
only storage features differ. Migration 0002 applies them with the :class:`TimeSeriesOptions` that
:func:`schema.migrate.apply_all` was given (the composition layer builds them from its settings).

Before 0002 runs, :func:`plan_time_series` decides on a throw-away connection whether TimescaleDB
can be used: an extension that is installed but not preloaded ends the connection that tries to
create it (a FATAL error), so the attempt must never be made on the migration's own connection.
Not installed, not preloaded, or not allowed to the role: plain PostgreSQL with a warning. Any
other failure is a :class:`TimescaleSetupError` (one line).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

log = logging.getLogger(__name__)

HOURLY_SELECT = """
    SELECT {bucket} AS bucket, device_id, metric,
           min(value) AS min, max(value) AS max, avg(value) AS avg,
           {last} AS last, count(*) AS count
      FROM readings
     GROUP BY 1, device_id, metric
"""

# Compression groups a chunk's rows per (device, metric) and orders them like the "latest value"
# lookup in telemetry/queries.py (WHERE device_id = ? AND metric = ? ORDER BY time DESC, boot DESC,
# seq DESC LIMIT 1): the newest row is the first of its segment, no whole segment is decompressed
# and sorted. Together they cover the dedupe key (device_id, metric, time, boot, seq).
SEGMENT_BY = ("device_id", "metric")
ORDER_BY = ("time DESC", "boot DESC", "seq DESC")

BUCKET = timedelta(hours=1)  # readings_hourly
REFRESH_EVERY = timedelta(minutes=15)
REFRESH_END_OFFSET = timedelta(hours=1)  # newer buckets are aggregated at query time (real time)
# Beyond the accepted lateness: the late reading's own bucket, the refresh window's alignment to
# buckets, a refresh that runs late and a gateway that retried the write for a while.
REFRESH_SLACK = timedelta(days=1)
DEFAULT_LATE_WINDOW = timedelta(days=7)  # the gateway's default PLEDGEWATCH_MAX_PAST_AGE_S

PLAIN = ("readings stay a plain PostgreSQL table (no hypertable, compression, retention or "
         "continuous aggregate)")
NOT_INSTALLED = f"TimescaleDB is not installed on this server: {PLAIN}"
NOT_PRELOADED = ("TimescaleDB is installed but not preloaded (add timescaledb to "
                 f"shared_preload_libraries and restart PostgreSQL): {PLAIN}")
NOT_ALLOWED = ("this database role may not create the timescaledb extension (a superuser can run "
               f"CREATE EXTENSION timescaledb in this database once): {PLAIN}")


@dataclass(frozen=True)
class TimeSeriesOptions:
    """What migration 0002 sets up when TimescaleDB is there (``PLEDGEWATCH_TIMESCALE_*``)."""

    use_timescaledb: bool = True
    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retention: str = "400 days"
    # How late a reading may arrive and still be stored (the gateway's max past age): the hourly
    # aggregate's refresh window reaches this far back, plus REFRESH_SLACK.
    late_window: timedelta = DEFAULT_LATE_WINDOW


@dataclass(frozen=True)
class TimeSeriesPlan:
    """What 0002 will do: TimescaleDB or plain PostgreSQL, and why not TimescaleDB."""

    options: TimeSeriesOptions
    use_timescaledb: bool
    warning: str | None = None


class TimescaleSetupError(RuntimeError):
    """TimescaleDB is there but cannot be used, for a reason that is not a plain fallback."""


_PLAN: ContextVar[TimeSeriesPlan | None] = ContextVar("time_series_plan", default=None)


@contextmanager
def time_series_plan(plan: TimeSeriesPlan | None) -> Iterator[None]:
    """Migrations run inside this block follow ``plan`` (None: decide on their own connection)."""
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


@dataclass(frozen=True)
class Capabilities:
    timescaledb: str | None  # installed extension version, or None
    server_version: int

    @property
    def backend(self) -> str:
        return f"TimescaleDB {self.timescaledb}" if self.timescaledb else "plain PostgreSQL"


def probe(conn: Any) -> Capabilities:
    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cur.fetchone()
        cur.execute("SHOW server_version_num")
        version = int(cur.fetchone()[0])
    return Capabilities(row[0] if row else None, version)


def timescaledb_available(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cur.fetchone() is not None


def _one_line(text: str) -> str:
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def fallback_reason(sqlstate: str | None, message: str) -> str | None:
    """Why ``CREATE EXTENSION timescaledb`` failed, when that means plain PostgreSQL; None when the
    failure is something else (to be reported, not hidden)."""
    if "must be preloaded" in message:  # TimescaleDB's loader, a FATAL error without a code
        return NOT_PRELOADED
    if sqlstate == "42501":  # insufficient_privilege: not a superuser, extension not trusted
        return NOT_ALLOWED
    return None


def plan_time_series(database_url: str, options: TimeSeriesOptions) -> TimeSeriesPlan:
    """Decide on connections of its own whether migration 0002 can use TimescaleDB. The extension
    is created for real by 0002; here it is created in a transaction that is rolled back."""
    if not options.use_timescaledb:
        return TimeSeriesPlan(options, False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if probe(conn).timescaledb is not None:
            return TimeSeriesPlan(options, True)
        if not timescaledb_available(conn):
            return TimeSeriesPlan(options, False, NOT_INSTALLED)
    trial = psycopg.connect(database_url)
    try:
        trial.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        reason = fallback_reason(exc.sqlstate, str(exc))
        if reason is None:
            raise TimescaleSetupError(
                f"TimescaleDB cannot be set up: {_one_line(str(exc))}") from None
        return TimeSeriesPlan(options, False, reason)
    finally:
        trial.close()  # never committed; a FATAL has closed it already
    return TimeSeriesPlan(options, True)


def refresh_window(options: TimeSeriesOptions) -> tuple[timedelta, timedelta]:
    """(start_offset, end_offset) of the hourly aggregate's refresh policy: far enough back that a
    reading accepted ``late_window`` late is re-aggregated by the next refresh."""
    if options.late_window <= timedelta(0):
        raise ValueError(f"late_window must be positive, got {options.late_window}")
    return options.late_window + REFRESH_SLACK, REFRESH_END_OFFSET


Statement = tuple[str, tuple[Any, ...] | None]


def timescaledb_statements(options: TimeSeriesOptions) -> list[Statement]:
    """The SQL of the TimescaleDB path, in order; every setting is a parameter, never SQL text."""
    start_offset, end_offset = refresh_window(options)
    hourly = HOURLY_SELECT.format(bucket="time_bucket(INTERVAL '1 hour', time)",
                                  last="last(value, time)")
    # No default (time DESC) index: no query uses it and it costs 25-30 % per write batch; the
    # dedupe key and readings_arrival lead with device_id, which every query filters on.
    hypertable = ("SELECT create_hypertable('readings', by_range('time', %s::interval),"
                  " create_default_indexes => false, migrate_data => true, if_not_exists => true)")
    compression = ("ALTER TABLE readings SET (timescaledb.compress,"
                   f" timescaledb.compress_segmentby = '{', '.join(SEGMENT_BY)}',"
                   f" timescaledb.compress_orderby = '{', '.join(ORDER_BY)}')")
    # Real time: the buckets not materialised yet (the last hour and more) are aggregated at query
    # time, so readings_hourly never misses the newest hour.
    aggregate = ("CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly WITH"
                 " (timescaledb.continuous, timescaledb.materialized_only = false)"
                 f" AS {hourly} WITH NO DATA")
    refresh = ("SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => %s,"
               " end_offset => %s, schedule_interval => %s, if_not_exists => true)")
    return [
        ("CREATE EXTENSION IF NOT EXISTS timescaledb", None),
        (hypertable, (options.chunk_interval,)),
        (compression, None),
        ("SELECT add_compression_policy('readings', %s::interval, if_not_exists => true)",
         (options.compress_after,)),
        ("SELECT add_retention_policy('readings', %s::interval, if_not_exists => true)",
         (options.retention,)),
        (aggregate, None),
        (refresh, (start_offset, end_offset, REFRESH_EVERY)),
    ]


def plain_statements() -> list[Statement]:
    sql = HOURLY_SELECT.format(
        bucket="date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01')",
        last="(array_agg(value ORDER BY time DESC))[1]",
    )
    return [(f"CREATE OR REPLACE VIEW readings_hourly AS {sql}", None)]


def apply_time_series_features(conn: Any) -> None:
    """Run once by migration 0002 (outside a transaction)."""
    plan = _PLAN.get()
    if plan is None:  # run outside apply_all (e.g. yoyo's own CLI): the extension's presence decides
        options = TimeSeriesOptions()
        plan = TimeSeriesPlan(options, timescaledb_available(conn))
    if plan.use_timescaledb:
        o = plan.options
        log.info("timescaledb: hypertable (chunk %s), compression after %s, retention %s",
                 o.chunk_interval, o.compress_after, o.retention)
        statements = timescaledb_statements(o)
    else:
        log.info("readings stay a plain PostgreSQL table")
        statements = plain_statements()
    with conn.cursor() as cur:
        for sql, params in statements:
            cur.execute(sql, params)
