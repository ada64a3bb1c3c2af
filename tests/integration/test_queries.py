"""Read queries against a real store: bucketed series and the hourly rollup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telemetry.queries import bucketed_series, latest_readings
from tests.support import BrokerUnderTest, Stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def insert(stack: Stack, device: str, metric: str, rows: list[tuple[datetime, float, int]]) -> None:
    with stack.connect() as conn:
        conn.cursor().executemany(
            "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
            " VALUES (%s, %s, %s, %s, 1, %s, %s)",
            [(t, device, metric, v, seq, t) for t, v, seq in rows],
        )


@pytest.fixture
def broker(brokers: dict[str, BrokerUnderTest]) -> BrokerUnderTest:
    """These queries never touch MQTT: one broker kind is enough."""
    return brokers["embedded-mqtt"]


def test_bucketed_series_min_max_avg_count(stack: Stack) -> None:
    stack.register("wh-1", "wh-2")
    insert(stack, "wh-1", "weight_kg", [
        (T0 + timedelta(minutes=1), 100.0, 1), (T0 + timedelta(minutes=14), 300.0, 2),
        (T0 + timedelta(minutes=16), 50.0, 3), (T0 + timedelta(minutes=61), 7.0, 4),
    ])
    insert(stack, "wh-2", "weight_kg", [(T0 + timedelta(minutes=2), 9999.0, 1)])
    insert(stack, "wh-1", "temp_c", [(T0 + timedelta(minutes=3), -5.0, 1)])
    with stack.connect() as conn:
        series = bucketed_series(conn, "wh-1", "weight_kg", T0, T0 + timedelta(hours=1),
                                 timedelta(minutes=15))
    assert [(b.bucket, b.min, b.max, b.avg, b.count) for b in series] == [
        (T0, 100.0, 300.0, 200.0, 2),
        (T0 + timedelta(minutes=15), 50.0, 50.0, 50.0, 1),
    ]


def test_hourly_rollup_has_last_value_per_device_metric_hour(stack: Stack) -> None:
    stack.register("wh-1")
    insert(stack, "wh-1", "weight_kg", [
        (T0 + timedelta(minutes=50), 10.0, 2), (T0 + timedelta(minutes=5), 30.0, 1),
        (T0 + timedelta(minutes=70), 4.0, 3),
    ])
    with stack.connect() as conn:
        conn.execute("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname ="
                     " 'timescaledb') THEN CALL refresh_continuous_aggregate('readings_hourly',"
                     " NULL, NULL); END IF; END $$")
        rows = conn.execute(
            "SELECT bucket, min, max, avg, last, count FROM readings_hourly"
            " WHERE device_id = 'wh-1' ORDER BY bucket").fetchall()
    assert rows == [(T0, 10.0, 30.0, 20.0, 10.0, 2),
                    (T0 + timedelta(hours=1), 4.0, 4.0, 4.0, 4.0, 1)]


def test_latest_readings_scoped_to_a_tenant(stack: Stack) -> None:
    stack.register("wh-1")
    insert(stack, "wh-1", "temp_c", [(T0, 1.0, 1), (T0 + timedelta(seconds=1), 2.0, 2)])
    with stack.connect() as conn:
        mine = latest_readings(conn, stack.tenant)
        theirs = latest_readings(conn, "someone-else")
    assert [(r.device_id, r.metric, r.value) for r in mine] == [("wh-1", "temp_c", 2.0)]
    assert theirs == []
