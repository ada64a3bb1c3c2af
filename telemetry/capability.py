"""Capability probe: TimescaleDB when the extension exists, plain PostgreSQL otherwise.

The queries in :mod:`telemetry.queries` run unchanged on both (``date_bin``, ``DISTINCT ON``);
only storage features differ.
"""

from __future__ import annotations

import logging
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
    from pledgewatch.settings import load_settings

    settings = load_settings()
    if settings.use_timescaledb and timescaledb_available(conn):
        _apply_timescaledb(conn, settings.timescale_chunk_interval,
                           settings.timescale_compress_after, settings.timescale_retention)
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
