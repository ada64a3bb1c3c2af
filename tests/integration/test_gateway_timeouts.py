"""A locked table or a stuck statement: the writer's lock_timeout / statement_timeout fail the
batch, which is retried and never acknowledged before its commit; the gateway says so (a WARNING
with how long it has been stalled, a metric by kind); its memory stays within the MQTT 5 Receive
Maximum; and once the lock goes every message is stored exactly once.

The lock is real (``LOCK TABLE readings IN ACCESS EXCLUSIVE MODE`` from another connection), over a
real Mosquitto and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from gateway.consumer import Gateway
from gateway.writer_process import (
    CANCELED,
    LOCK_TIMEOUT,
    STATEMENT_TIMEOUT,
    UNAVAILABLE,
    DbTimeouts,
    error_kind,
)
from pledgewatch.broker.mosquitto import mosquitto_binary
from tests.support import (
    BrokerUnderTest,
    PgServer,
    Publisher,
    Stack,
    device_messages,
    running_gateway,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.once_per_run,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Debian's mosquitto"),
]


@pytest.fixture
def mqtt5_stack(pg: PgServer, brokers: dict[str, BrokerUnderTest]) -> Iterator[Stack]:
    """Mosquitto over MQTT 5 (the Receive Maximum is an MQTT 5 property)."""
    url = pg.migrated_database()
    yield Stack(pg, url, brokers["mosquitto"])
    pg.drop(url)


@contextmanager
def table_locked(stack: Stack) -> Iterator[None]:
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def distinct_messages(stack: Stack) -> int:
    with stack.connect() as conn:
        row = conn.execute("SELECT count(DISTINCT (device_id, boot, seq)) FROM readings").fetchone()
    return int(row[0]) if row else 0


def kind_count(gw: Gateway, kind: str) -> float:
    return sample(gw, "pledgewatch_gateway_db_errors_total", kind=kind)


def sample(gw: Gateway, name: str, **labels: str) -> float:
    """A metric as /metrics shows it."""
    value = gw.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_a_locked_table_times_out_is_logged_counted_and_bounded_then_stored_once(
        mqtt5_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack = mqtt5_stack
    stack.register("wh-1", "wh-2")
    messages = device_messages(stack.tenant, ["wh-1", "wh-2"], per_device=500)  # 1,000
    receive_maximum = 200
    config = stack.gateway_config(receive_maximum=receive_maximum, lock_timeout_s=0.3,
                                  statement_timeout_s=5)
    caplog.set_level(logging.WARNING, logger="gateway.consumer")
    with running_gateway(stack, config) as gw, Publisher(stack.broker.target) as pub:
        with table_locked(stack):
            pub.publish(messages)  # the broker holds what it may not send yet
            assert wait_until(lambda: kind_count(gw, LOCK_TIMEOUT) >= 1, timeout=10)
            # the broker stops at the Receive Maximum: everything unacknowledged in memory
            assert wait_until(lambda: gw.inbox_depth() + gw.in_hand == receive_maximum, 5), (
                gw.inbox_depth(), gw.in_hand)
            assert wait_until(lambda: sample(gw, "pledgewatch_gateway_stalled_seconds") >= 0.5, timeout=5)
            assert gw.totals["acked"] == 0, "acknowledged before the commit"
            assert gw.totals["received"] == 0
            held = gw.inbox_depth() + gw.in_hand
            high_water = gw.inbox_high_water
        assert high_water <= gw.inbox_bound == receive_maximum
        assert wait_until(lambda: stack.count() >= 2 * len(messages), timeout=20), stack.count()
        assert wait_until(lambda: gw.totals["acked"] == len(messages), timeout=5), gw.totals
        assert sample(gw, "pledgewatch_gateway_stalled_seconds") == 0
        # after the stall the broker may send everything it holds at once (Mosquitto < 2.0.13
        # forgets the Receive Maximum after the first acknowledgements): the gateway holds it off
        assert sample(gw, "pledgewatch_gateway_inbox_high_water") == gw.inbox_high_water
        assert gw.inbox_high_water <= gw.inbox_bound
    assert stack.count() == 2 * len(messages)
    assert distinct_messages(stack) == len(messages)
    assert gw.totals["duplicates"] == 0
    assert kind_count(gw, STATEMENT_TIMEOUT) == 0 and kind_count(gw, UNAVAILABLE) == 0
    assert gw.metrics.db_errors._value.get() == kind_count(gw, LOCK_TIMEOUT)
    stalls = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "database lock timeout" in r.getMessage()]
    assert stalls, [r.getMessage() for r in caplog.records]
    assert "stalled for" in stalls[-1] and "unacknowledged" in stalls[-1]
    assert any("database back" in r.getMessage() for r in caplog.records)
    print(f"\nstall: {held} unacknowledged in memory (receive maximum {receive_maximum}), "
          f"inbox high water {high_water} during it, {gw.inbox_high_water} overall; "
          f"{gw.backpressure_waits} backpressure wait(s); {len(stalls)} lock timeouts")


def test_a_statement_timeout_is_told_apart_and_retried(mqtt5_stack: Stack,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    stack = mqtt5_stack
    stack.register("wh-1")
    messages = device_messages(stack.tenant, ["wh-1"], per_device=100)
    config = stack.gateway_config(lock_timeout_s=0, statement_timeout_s=0.3, writer_process=False)
    caplog.set_level(logging.WARNING, logger="gateway.consumer")
    with running_gateway(stack, config) as gw, Publisher(stack.broker.target) as pub:
        with table_locked(stack):
            pub.publish(messages)
            assert wait_until(lambda: kind_count(gw, STATEMENT_TIMEOUT) >= 1, timeout=10)
            assert gw.totals["acked"] == 0
        assert wait_until(lambda: gw.totals["acked"] == len(messages), timeout=20), gw.totals
    assert stack.count() == 2 * len(messages)
    assert kind_count(gw, LOCK_TIMEOUT) == 0
    assert any("database statement timeout" in r.getMessage() for r in caplog.records)


def test_the_writer_connection_carries_both_timeouts(pg: PgServer) -> None:
    url = pg.migrated_database()
    try:
        with psycopg.connect(DbTimeouts(30, 10).apply(url)) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
            assert conn.execute("SHOW lock_timeout").fetchone() == ("10s",)
        # options already in the URL are kept, and 0 means none
        with_options = url + ("&" if "?" in url else "?") + "options=-c%20work_mem%3D7MB"
        with psycopg.connect(DbTimeouts(0, 0.25).apply(with_options)) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
            assert conn.execute("SHOW lock_timeout").fetchone() == ("250ms",)
    finally:
        pg.drop(url)


@pytest.mark.parametrize(("exc", "text", "kind"), [
    (psycopg.errors.LockNotAvailable("x"), "canceling statement due to lock timeout", LOCK_TIMEOUT),
    (psycopg.errors.LockNotAvailable("x"), "could not obtain lock", LOCK_TIMEOUT),
    (psycopg.errors.QueryCanceled("x"), "canceling statement due to statement timeout",
     STATEMENT_TIMEOUT),
    (psycopg.errors.QueryCanceled("x"), "canceling statement due to user request", CANCELED),
    (psycopg.OperationalError("x"), "connection refused", UNAVAILABLE),
    (None, "canceling statement due to lock timeout", LOCK_TIMEOUT),
    (None, "CANCELING STATEMENT DUE TO STATEMENT TIMEOUT", STATEMENT_TIMEOUT),
    (None, "", UNAVAILABLE),
    (None, "\x00\ufffd" * 100, UNAVAILABLE),
])
def test_error_kinds(exc: BaseException | None, text: str, kind: str) -> None:
    assert error_kind(exc, text) == kind
