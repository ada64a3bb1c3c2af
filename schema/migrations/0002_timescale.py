"""Capability step: with the timescaledb extension, readings become a hypertable with compression,
retention and an hourly real-time continuous aggregate; without it (not installed, not preloaded,
or not allowed to the role: :func:`schema.timescale.plan_time_series` decides before this runs), a
plain view serves the same rollup.

Both paths define ``readings_hourly (bucket, device_id, metric, min, max, avg, last, count)``.
"""

from typing import Any

from yoyo import step

from schema.timescale import apply_time_series_features

__depends__ = {"0001_ingestion"}
__transactional__ = False


def apply(conn: Any) -> None:
    apply_time_series_features(conn)


def rollback(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("DROP VIEW IF EXISTS readings_hourly")
        cur.execute("DROP MATERIALIZED VIEW IF EXISTS readings_hourly")


steps = [step(apply, rollback)]
