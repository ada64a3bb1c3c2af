"""Read queries that run unchanged on TimescaleDB and plain PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from telemetry.contract.catalogue import CATALOGUE
from telemetry.contract.payload import DeviceInfo


@dataclass(frozen=True, slots=True)
class LatestReading:
    device_id: str
    metric: str
    time: datetime
    value: float
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Bucket:
    bucket: datetime
    min: float
    max: float
    avg: float
    count: int


def latest_readings(conn: psycopg.Connection, tenant: str | None = None) -> list[LatestReading]:
    """The latest value of every metric of every device (of one tenant, when given).

    One index probe per (device, metric): a backward scan of the readings key
    ``(device_id, metric, time, boot, seq)``, so the cost does not grow with history.
    """
    sql = """
        SELECT d.device_id, m.metric, r.time, r.value, r.received_at
          FROM devices d
         CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
         CROSS JOIN LATERAL (
                SELECT time, value, received_at FROM readings r
                 WHERE r.device_id = d.device_id AND r.metric = m.metric
                 ORDER BY time DESC, boot DESC, seq DESC LIMIT 1) r
         WHERE (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
         ORDER BY d.device_id, m.metric
    """
    params = {"tenant": tenant, "metrics": sorted(CATALOGUE)}
    with conn.cursor(row_factory=class_row(LatestReading)) as cur:
        return cur.execute(sql, params).fetchall()


def bucketed_series(
    conn: psycopg.Connection,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
) -> list[Bucket]:
    """min/max/avg/count of one device's metric per ``bucket`` between ``start`` and ``end``."""
    sql = """
        SELECT date_bin(%(bucket)s, time, TIMESTAMPTZ '2000-01-01') AS bucket,
               min(value) AS min, max(value) AS max, avg(value) AS avg, count(*) AS count
          FROM readings
         WHERE device_id = %(device)s AND metric = %(metric)s
           AND time >= %(start)s AND time < %(end)s
         GROUP BY 1 ORDER BY 1
    """
    params = {"bucket": bucket, "device": device_id, "metric": metric, "start": start, "end": end}
    with conn.cursor(row_factory=class_row(Bucket)) as cur:
        return cur.execute(sql, params).fetchall()


def load_devices(conn: psycopg.Connection) -> dict[str, DeviceInfo]:
    rows = conn.execute("SELECT device_id, tenant, kind, enabled FROM devices").fetchall()
    return {r[0]: DeviceInfo(r[0], r[1], r[2], r[3]) for r in rows}


def register_devices(conn: psycopg.Connection, devices: list[DeviceInfo]) -> int:
    """Upsert devices (used by the simulator and the demo); returns how many were new."""
    with conn.transaction(), conn.cursor() as cur:
        before = cur.execute("SELECT count(*) FROM devices").fetchone()
        cur.executemany(
            "INSERT INTO devices (device_id, tenant, kind, enabled) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = EXCLUDED.kind",
            [(d.device_id, d.tenant, d.kind, d.enabled) for d in devices],
        )
        after = cur.execute("SELECT count(*) FROM devices").fetchone()
    return int(after[0]) - int(before[0]) if before and after else 0


def mark_stale_offline(conn: psycopg.Connection, silent_for: timedelta) -> list[str]:
    """Devices silent longer than ``silent_for`` go offline; returns their ids. A device heard
    from (``last_heard``: messages refused for what they say) is not silent."""
    rows = conn.execute(
        "UPDATE device_status SET online = false, changed_at = now()"
        " WHERE online AND greatest(last_seen, last_heard) < now() - %s RETURNING device_id",
        (silent_for,),
    ).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM dead_letters),"
        " (SELECT count(*) FROM devices), (SELECT count(*) FROM device_status WHERE online)"
    ).fetchone()
    assert row is not None
    return {"readings": row[0], "dead_letters": row[1], "devices": row[2], "online": row[3]}


def device_overview(conn: psycopg.Connection, tenant: str | None = None) -> list[dict[str, Any]]:
    """Each device with its status and the latest value of each of its metrics."""
    devices = conn.execute(
        "SELECT d.device_id, d.tenant, d.kind, s.online, s.last_seen"
        "  FROM devices d LEFT JOIN device_status s USING (device_id)"
        " WHERE (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)"
        " ORDER BY d.device_id",
        {"tenant": tenant},
    ).fetchall()
    out: dict[str, dict[str, Any]] = {
        d[0]: {"device_id": d[0], "tenant": d[1], "kind": d[2], "online": d[3],
               "last_seen": d[4], "readings": {}}
        for d in devices
    }
    for r in latest_readings(conn, tenant):
        if r.device_id in out:
            out[r.device_id]["readings"][r.metric] = {"value": r.value, "time": r.time}
    return list(out.values())
