"""The production broker topology without Docker: Debian's mosquitto with the project's config.

Authentication and the per-device ACL (no device can speak for another), and a shared
subscription splitting the load between two gateways without loss or double counting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.mqtt import MqttTarget, parse_mqtt_url
from pledgewatch.broker.mosquitto import GATEWAY_USER, Mosquitto, mosquitto_binary
from telemetry.contract.topics import telemetry_topic
from tests.support import (
    BrokerUnderTest,
    PgServer,
    Publisher,
    Stack,
    device_messages,
    running_gateway,
    telemetry,
    unique,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Debian's mosquitto"),
]

USERS = {GATEWAY_USER: "gw-secret-1", "wh-a": "a-secret-1", "wh-b": "b-secret-1"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto", users=USERS).start()
    yield broker
    broker.stop()


def as_user(broker: Mosquitto, user: str, password: str | None = None) -> MqttTarget:
    target = parse_mqtt_url(broker.url(), "5")
    return MqttTarget(target.host, target.port, user, password or USERS[user], False, "5")


@pytest.fixture
def secured_stack(pg: PgServer, secured: Mosquitto) -> Iterator[Stack]:
    url = pg.migrated_database()
    broker = BrokerUnderTest("mosquitto-auth", as_user(secured, GATEWAY_USER), 1_000_000)
    yield Stack(pg, url, broker)
    pg.drop(url)


def test_a_device_cannot_publish_for_another(secured_stack: Stack, secured: Mosquitto) -> None:
    stack = secured_stack
    stack.register("wh-a", "wh-b")
    with running_gateway(stack) as gw, \
            Publisher(as_user(secured, "wh-a"), client_id="wh-a") as device_a:
        device_a.publish([
            (telemetry_topic(stack.tenant, "wh-a"), telemetry(1, 0, {"weight_kg": 100.0})),
            (telemetry_topic(stack.tenant, "wh-b"), telemetry(1, 0, {"weight_kg": 1.0})),
        ])
        assert wait_until(lambda: gw.totals["received"] >= 1)
        assert not wait_until(lambda: gw.totals["received"] > 1, timeout=1.0)
    with stack.connect() as conn:
        rows = conn.execute("SELECT device_id, value FROM readings").fetchall()
    assert rows == [("wh-a", 100.0)]


def test_wrong_password_and_anonymous_are_refused(secured: Mosquitto) -> None:
    for target in (as_user(secured, "wh-a", "wrong"),
                   MqttTarget("127.0.0.1", secured.port, None, None, False, "5")):
        with pytest.raises(AssertionError, match="could not connect"):
            Publisher(target)


def test_shared_subscription_splits_load_exactly_once(pg: PgServer, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        target = parse_mqtt_url(broker.url(), "5")
        url = pg.migrated_database()
        try:
            stack = Stack(pg, url, BrokerUnderTest("mosquitto", target, 1_000_000))
            devices = [f"wh-{i}" for i in range(6)]
            stack.register(*devices)
            messages = device_messages(stack.tenant, devices, per_device=200)
            group = unique("ingest")
            with running_gateway(stack, stack.gateway_config(shared_group=group)) as g1, \
                    running_gateway(stack, stack.gateway_config(shared_group=group)) as g2, \
                    Publisher(target) as pub:
                pub.publish(messages)
                assert wait_until(
                    lambda: g1.totals["received"] + g2.totals["received"] >= len(messages)), (
                    g1.totals, g2.totals)
                assert g1.totals["received"] > 0 and g2.totals["received"] > 0
            assert stack.count() == 2 * len(messages)
            assert g1.totals["duplicates"] + g2.totals["duplicates"] == 0
        finally:
            pg.drop(url)




def test_gateway_reconnects_after_a_broker_restart_and_loses_nothing(
        pg: PgServer, tmp_path: Path) -> None:
    """Mosquitto with the project config keeps the gateway's session and queue across a restart."""
    broker = Mosquitto(tmp_path / "broker").start()
    port = broker.port
    url = pg.migrated_database()
    try:
        target = parse_mqtt_url(broker.url(), "5")
        stack = Stack(pg, url, BrokerUnderTest("mosquitto", target, 1_000_000))
        stack.register("wh-1", "wh-2")
        before = device_messages(stack.tenant, ["wh-1"], per_device=200)
        after = device_messages(stack.tenant, ["wh-2"], per_device=200)
        with running_gateway(stack) as gw:
            with Publisher(target) as pub:
                pub.publish(before)
            assert wait_until(lambda: stack.count() == 2 * len(before))
            broker.stop()  # SIGTERM: Mosquitto writes its persistence file
            assert wait_until(lambda: not gw.connected.is_set(), timeout=10)
            broker = Mosquitto(tmp_path / "broker", port=port).start()
            with Publisher(target) as pub:  # queued for the gateway's restored session
                pub.publish(after)
            assert wait_until(gw.connected.is_set, timeout=40), "no reconnect"
            assert wait_until(lambda: stack.count() == 2 * (len(before) + len(after)), timeout=30)
        assert stack.count() == 2 * (len(before) + len(after))
    finally:
        broker.stop()
        pg.drop(url)
