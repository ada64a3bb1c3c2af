"""A status is judged by its age: a retained status the broker replays on every gateway
(re)subscribe never overwrites fresher state, so a gateway restart marks no reporting device
offline and raises no `sensor_offline` alert (nor its webhook).

The contract's part (pure: how old a status is) is tested first, then the writer against a real
PostgreSQL, then the whole path over a real broker with the real lending engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from lending.engine import LendingEngine
from lending.operations import load_portfolio
from lending.portfolio_file import PortfolioIn
from telemetry.contract.payload import (
    Accepted,
    DeviceInfo,
    Limits,
    Reading,
    Reason,
    Rejected,
    StatusChange,
    decode_message,
)
from telemetry.contract.topics import status_topic, telemetry_topic
from telemetry.queries import register_devices
from telemetry.writer import Batch, WriteResult, write_batch
from tests.support import Publisher, Stack, running_gateway, telemetry, wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DEVICES = {"wh-1": DeviceInfo("wh-1", "acme", "warehouse")}
STATUS = status_topic("acme", "wh-1")


def status(payload: bytes, retained: bool, received: datetime = T0) -> StatusChange | Rejected:
    out = decode_message(STATUS, payload, received, DEVICES, Limits(), retained)
    assert isinstance(out, StatusChange | Rejected)
    return out


# --- the contract: how old is a status (pure) ----------------------------------------------------

def test_a_live_status_holds_as_of_its_arrival_whatever_its_ts_says() -> None:
    live = status(b'{"state":"offline","ts":"2020-01-01T00:00:00Z"}', retained=False)
    assert isinstance(live, StatusChange) and live.as_of == T0 and not live.online


def test_a_retained_status_is_as_old_as_its_ts_or_of_unknown_age() -> None:
    old = status(b'{"state":"offline","ts":"2026-11-22T07:00:00Z"}', retained=True)
    assert isinstance(old, StatusChange) and old.as_of == T0 - timedelta(hours=1)
    millis = status(b'{"state":"online","ts":%d}' % ((T0.timestamp() - 60) * 1000), retained=True)
    assert isinstance(millis, StatusChange) and millis.as_of == T0 - timedelta(minutes=1)
    for unknown in (b"offline", b'{"state":"offline"}', b'{"state":"online","boot":3}'):
        replay = status(unknown, retained=True)
        assert isinstance(replay, StatusChange) and replay.retained and replay.as_of is None


def test_a_retained_status_from_a_clock_ahead_is_no_newer_than_its_arrival() -> None:
    ahead = status(b'{"state":"offline","ts":"2030-01-01T00:00:00Z"}', retained=True)
    assert isinstance(ahead, StatusChange) and ahead.as_of == T0


@pytest.mark.parametrize("payload", [
    b'{"state":"offline","ts":"yesterday"}', b'{"state":"offline","ts":"2026-11-22T08:00:00"}',
    b'{"state":"offline","ts":-140737488355327}', b'{"state":"offline","ts":1e3}',
    b'{"state":"offline","ts":[1]}', b'{"state":"offline","ts":true}',
    b'{"state":"offline","ts":"' + b"9" * 41 + b'"}', b'{"state":"offline","ts":99999999999999999}',
])
def test_a_status_with_a_malformed_ts_is_a_dead_letter(payload: bytes) -> None:
    out = status(payload, retained=True)
    assert isinstance(out, Rejected) and out.reason is Reason.INVALID_SCHEMA, out
    assert out.detail.startswith("ts") and "\n" not in out.detail


# --- the writer: a status older than what is stored does not apply --------------------------------

def reading(seq: int, received: datetime) -> Accepted:
    return Accepted("wh-1", "acme", 1, seq, received, received, (Reading("temp_c", 4.0),))


def change(online: bool, received: datetime, retained: bool = False,
           ts: datetime | None = None) -> StatusChange:
    return StatusChange("wh-1", "acme", online, received, retained, ts)


def state(url: str) -> tuple[Any, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT online, changed_at, last_seen, status_at FROM device_status"
                            " WHERE device_id = 'wh-1'").fetchone()


def write(url: str, batch: Batch) -> WriteResult:
    with psycopg.connect(url) as conn:
        return write_batch(conn, batch)


@pytest.mark.once_per_run
def test_a_status_older_than_the_newest_stored_state_is_not_applied(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        register_devices(conn, list(DEVICES.values()))
    write(migrated_db, Batch(accepted=[reading(1, T0)]))
    assert state(migrated_db) == (True, T0, T0, None)

    ignored = write(migrated_db, Batch(status=[
        change(False, T0 + timedelta(minutes=5), retained=True),  # replay, age unknown
        change(False, T0 + timedelta(minutes=5), retained=True, ts=T0 - timedelta(seconds=1)),
        change(False, T0 - timedelta(seconds=1)),  # live, but arrived before the reading
    ]))
    assert (ignored.status_changes, ignored.status_ignored) == (3, 3)
    assert state(migrated_db) == (True, T0, T0, None), "fresher state kept"

    later = T0 + timedelta(minutes=1)
    newer = write(migrated_db, Batch(status=[
        change(False, T0 + timedelta(minutes=5), retained=True, ts=later)]))
    assert newer.status_ignored == 0
    assert state(migrated_db) == (False, T0 + timedelta(minutes=5), T0, later)

    # In one batch the arrival order decides: offline then a reading -> online.
    back = T0 + timedelta(minutes=6)
    write(migrated_db, Batch(accepted=[reading(2, back + timedelta(seconds=1))],
                             status=[change(False, back)]))
    online, _, seen, _ = state(migrated_db)  # type: ignore[misc]
    assert online is True and seen == back + timedelta(seconds=1)
    # ... and a reading then offline (its last will) -> offline.
    gone = T0 + timedelta(minutes=7)
    write(migrated_db, Batch(accepted=[reading(3, gone)],
                             status=[change(False, gone + timedelta(seconds=1))]))
    assert state(migrated_db)[0] is False  # type: ignore[index]


@pytest.mark.once_per_run
def test_a_retained_status_of_unknown_age_only_introduces_a_new_device(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        register_devices(conn, list(DEVICES.values()))
    first = write(migrated_db, Batch(status=[change(False, T0, retained=True)]))
    assert first.status_ignored == 0
    assert state(migrated_db) == (False, T0, None, None)
    again = write(migrated_db, Batch(status=[change(True, T0 + timedelta(hours=1), retained=True)]))
    assert again.status_ignored == 1 and state(migrated_db) == (False, T0, None, None)
    # A live status always beats an unknown age.
    write(migrated_db, Batch(status=[change(True, T0 + timedelta(hours=2))]))
    assert state(migrated_db) == (True, T0 + timedelta(hours=2), T0 + timedelta(hours=2),
                                  T0 + timedelta(hours=2))


# --- over a real broker, with the lending engine --------------------------------------------------

UNITS, UNIT_KG = 400, 25.0


def portfolio(tenant: str, device: str, now: datetime) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel", "unit": "t", "unit_kg": 1000}],
        "borrowers": [{"id": "b", "name": "B", "tenant": tenant}],
        "facilities": [{"id": "fac", "borrower": "b", "line": 1e6, "outstanding": 10_000,
                        "terms": {"advance_rate": 0.5}}],
        "lots": [{"id": "lot", "facility": "fac", "commodity": "steel",
                  "declared_quantity": UNITS, "unit_weight_kg": UNIT_KG, "registration_no": "R1",
                  "sensors": [device], "business_hours": [0, 24]}],
        "prices": [{"commodity": "steel", "time": now - timedelta(days=d), "price": 4000.0}
                   for d in range(5)],
    })


def offline_alerts(url: str) -> tuple[int, int, int]:
    """(sensor_offline alerts, their outbox events, webhook deliveries of any alert)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alerts WHERE type = 'sensor_offline'),"
            " (SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
            "   WHERE a.type = 'sensor_offline'),"
            " (SELECT count(*) FROM webhook_deliveries d JOIN alert_events e ON e.id = d.event_id"
            "   JOIN alerts a ON a.id = e.alert_id WHERE a.type = 'sensor_offline')").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.once_per_run
def test_a_gateway_restart_does_not_replay_a_stale_offline(stack: Stack) -> None:
    """The device's last will (`offline`, retained) from an earlier connection is still on the
    broker; the device reconnected without a status message and reports telemetry. Every gateway
    (re)subscribe replays that retained `offline`: it must not mark the device offline."""
    device = "wh-r"
    now = datetime.now(UTC)
    stack.register(device)
    with psycopg.connect(stack.database_url) as conn:
        load_portfolio(conn, portfolio(stack.tenant, device, now), now)
        conn.execute("INSERT INTO webhooks (url, secret, borrower_id, created_by)"
                     " VALUES ('https://hooks.example.com/pw', %s, 'b', 'test')", ("s" * 32,))
    with Publisher(stack.broker.target) as pub:
        pub.client.publish(status_topic(stack.tenant, device), b'{"state":"offline"}', qos=1,
                           retain=True).wait_for_publish(10)
    config = stack.gateway_config(writer_process=False)
    engine = LendingEngine(stack.database_url)
    try:
        with running_gateway(stack, config) as gw, Publisher(stack.broker.target) as pub:
            pub.publish([(telemetry_topic(stack.tenant, device),
                          telemetry(1, seq, {"weight_kg": UNITS * UNIT_KG, "rfid_count": UNITS}))
                         for seq in range(4)])
            assert wait_until(lambda: stack.count() == 8), gw.totals
            assert wait_until(lambda: (stack_status(stack, device) or (False,))[0] is True)
        before = stack_status(stack, device)
        engine.recompute(["fac"])
        assert offline_alerts(stack.database_url) == (0, 0, 0)

        # A restart (the same client id: Mosquitto replays retained messages on every subscribe;
        # rumqttd only on a new subscription, so there only the second) and a new gateway (a new
        # client id, a new subscription: every broker replays).
        gateways = [stack.gateway_config(writer_process=False)]
        if stack.broker.kind != "embedded-mqtt":
            gateways.insert(0, config)
        for again in gateways:
            with running_gateway(stack, again) as gw:
                assert wait_until(lambda: gw.totals["received"] >= 1, timeout=5), \
                    "the broker replays the retained status"
            assert stack_status(stack, device) == before, "the device stays online"
            engine.recompute(["fac"])
            assert offline_alerts(stack.database_url) == (0, 0, 0)
    finally:
        engine.close()
        with Publisher(stack.broker.target) as pub:  # leave no retained message behind
            pub.client.publish(status_topic(stack.tenant, device), b"", qos=1,
                               retain=True).wait_for_publish(10)


def stack_status(stack: Stack, device: str) -> tuple[Any, ...] | None:
    with stack.connect() as conn:
        return conn.execute("SELECT online, changed_at, last_seen FROM device_status"
                            " WHERE device_id = %s", (device,)).fetchone()
