"""Capability probe and time-series features: TimescaleDB when the extension exists, plain
PostgreSQL otherwise.

The queries in :mod:`telemetry.queries` run unchanged on both (``date_bin``, ``DISTINCT ON``);
only storage features differ. Migration 0002 applies them with the :class:`TimeSeriesOptions` that
:func:`schema.migrate.apply_all` was given (the composition layer builds them from its settings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HOURLY_SELECT = """
    SELECT {bucket} AS bucket, device_id, metric,
           min(value) AS min, max(value) AS max, avg(value) AS avg,
           {last} AS last, count(*) AS count
      FROM readings
     GROUP BY 1, device_id, metric
"""


@dataclass(frozen=True)
class TimeSeriesOptions:
    """What migration 0002 sets up when TimescaleDB is there (``PLEDGEWATCH_TIMESCALE_*``)."""

    use_timescaledb: bool = True
    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retention: str = "400 days"


_OPTIONS: ContextVar[TimeSeriesOptions | None] = ContextVar("time_series_options", default=None)


@contextmanager
def time_series_options(options: TimeSeriesOptions) -> Iterator[None]:
    """Migrations run inside this block apply ``options``."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


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


def apply_time_series_features(conn: Any) -> None:
    """Run once by migration 0002 (outside a transaction)."""
    options = _OPTIONS.get() or TimeSeriesOptions()
    if options.use_timescaledb and timescaledb_available(conn):
        _apply_timescaledb(conn, options.chunk_interval, options.compress_after, options.retention)
    else:
        _apply_plain(conn)


def _apply_plain(conn: Any) -> None:
    log.info("timescaledb extension not available: readings stay a plain PostgreSQL table")
    sql = HOURLY_SELECT.format(
        bucket="date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01')",
        last="(array_agg(value ORDER BY time DESC))[1]",
    )
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE VIEW readings_hourly AS {sql}")


def _apply_timescaledb(conn: Any, chunk: str, compress_after: str, retention: str) -> None:
    log.info("timescaledb available: hypertable (chunk %s), compression after %s, retention %s",
             chunk, compress_after, retention)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        cur.execute(
            "SELECT create_hypertable('readings', by_range('time', %s::interval),"
            " migrate_data => true, if_not_exists => true)",
            (chunk,),
        )
        cur.execute(
            "ALTER TABLE readings SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'device_id, metric',"
            " timescaledb.compress_orderby = 'time DESC')"
        )
        cur.execute(
            "SELECT add_compression_policy('readings', %s::interval, if_not_exists => true)",
            (compress_after,),
        )
        cur.execute(
            "SELECT add_retention_policy('readings', %s::interval, if_not_exists => true)",
            (retention,),
        )
        sql = HOURLY_SELECT.format(
            bucket="time_bucket('1 hour', time)", last="last(value, time)"
        )
        cur.execute(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly"
            f" WITH (timescaledb.continuous) AS {sql} WITH NO DATA"
        )
        cur.execute(
            "SELECT add_continuous_aggregate_policy('readings_hourly',"
            " start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',"
            " schedule_interval => INTERVAL '15 minutes', if_not_exists => true)"
        )
