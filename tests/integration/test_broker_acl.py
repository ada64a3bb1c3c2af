"""The broker's config: it refuses what is outside the contract (and the device is told), it
lets an oversized payload through to become a dead letter, and a crash loses a bounded number of
queued messages.

Debian's mosquitto with the project's mosquitto.conf and acl on a free port, real paho clients.
With MQTT 5 a refused QoS 1 publish is answered with PUBACK reason 0x87 (not authorized) and never
reaches the gateway; MQTT 3.1.1 has no way to say so (a plain PUBACK, the message dropped), which
the README states. A packet over the broker's max_packet_size disconnects the device (0x95); a
payload under it but over the gateway's limit reaches the gateway (and becomes a dead letter).
A SIGKILL loses only what was queued since the last autosave (every N changes, shipped N=10,000).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import annotated_types
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from bench.broker_durability import measure, shipped_setting
from pledgewatch.broker.mosquitto import CONFIG, GATEWAY_USER, Mosquitto, mosquitto_binary
from pledgewatch.settings import Settings
from telemetry.contract.confirm import stored_topic
from telemetry.contract.payload import Limits
from telemetry.contract.topics import status_topic, telemetry_topic
from tests.support import telemetry, unique, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Debian's mosquitto"),
]

USERS = {GATEWAY_USER: "gw-secret-1", "wh-a": "a-secret-1", "wh-b": "b-secret-1"}
NOT_AUTHORIZED = 0x87
PACKET_TOO_LARGE = 0x95


def max_packet_size() -> int:
    match = re.search(r"^max_packet_size (\d+)$", CONFIG.read_text(), re.MULTILINE)
    assert match, "mosquitto.conf sets max_packet_size"
    return int(match.group(1))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("acl") / "mosquitto", users=USERS).start()
    yield broker
    broker.stop()


class Client:
    """A real paho client that records each PUBACK's reason code and how it was disconnected."""

    def __init__(self, broker: Mosquitto, user: str,
                 protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
                 client_id: str | None = None) -> None:
        self.acks: dict[int, ReasonCode] = {}
        self.received: list[tuple[str, int]] = []
        self.disconnects: list[ReasonCode] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user,
                                  protocol=protocol)
        self.client.username_pw_set(user, USERS[user])
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, len(m.payload)))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{user} could not connect"

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: object) -> None:
        self.acks[mid] = rc

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: info.mid in self.acks, timeout=10), f"no PUBACK for {topic}"
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(secured: Mosquitto) -> Iterator[Client]:
    """The gateway's account, subscribed to every device topic (and more: the ACL still filters)."""
    gw = Client(secured, GATEWAY_USER, client_id=unique("gw"))
    subscribed = threading.Event()
    gw.client.on_subscribe = lambda *_: subscribed.set()
    gw.client.subscribe([("pw/v1/#", 1), ("foo/#", 1), ("pw/alerts/#", 1)])
    assert subscribed.wait(10)
    yield gw
    gw.close()


def test_a_device_is_told_each_publish_outside_the_contract_is_refused(
        secured: Mosquitto, gateway: Client) -> None:
    tenant = unique("t")
    device = Client(secured, "wh-a")
    try:
        own = [(telemetry_topic(tenant, "wh-a"), telemetry(1, 1, {"temp_c": 4.0})),
               (status_topic(tenant, "wh-a"), b'{"state":"online"}')]
        for topic, payload in own:
            assert device.publish(topic, payload).value == 0, topic
        refused = [
            telemetry_topic(tenant, "wh-b"),  # another device
            status_topic(tenant, "wh-b"),
            f"pw/v1/{tenant}/wh-a/config",  # a channel the contract does not have
            f"pw/v1/{tenant}/wh-a/stored",  # the gateway's confirmations to the device
            f"pw/v1/{tenant}/wh-a/telemetry/extra",
            f"pw/v1/{tenant}/wh-a",
            "pw/v2/acme/wh-a/telemetry",
            "pw/alerts/v1/b/fac",  # forging an alert event
            "foo/bar",
            "$SYS/broker/uptime",
            "wh-a",
        ]
        for topic in refused:
            rc = device.publish(topic, b'{"boot":1,"seq":2,"ts":0,"readings":{"temp_c":1}}')
            assert rc.value == NOT_AUTHORIZED, (topic, str(rc))
        assert device.client.is_connected(), "a refusal does not cost the device its connection"
        assert wait_until(lambda: len(gateway.received) >= len(own), timeout=5)
        assert not wait_until(lambda: len(gateway.received) > len(own), timeout=0.5)
        assert sorted(t for t, _ in gateway.received) == sorted(t for t, _ in own)
    finally:
        device.close()


def test_an_mqtt_311_device_cannot_be_told_and_its_refused_message_is_dropped(
        secured: Mosquitto, gateway: Client) -> None:
    """What the README warns about: MQTT 3.1.1 has no reason codes, so Mosquitto PUBACKs a refused
    publish as if it were taken and drops it. Firmware should speak MQTT 5."""
    tenant = unique("t")
    device = Client(secured, "wh-a", protocol=MQTTProtocolVersion.MQTTv311)
    try:
        assert device.publish(telemetry_topic(tenant, "wh-b"), b"{}").value == 0
        assert device.publish(telemetry_topic(tenant, "wh-a"), b"{}").value == 0
        assert wait_until(lambda: len(gateway.received) >= 1, timeout=5)
        assert not wait_until(lambda: len(gateway.received) > 1, timeout=0.5)
        assert gateway.received == [(telemetry_topic(tenant, "wh-a"), 2)]
    finally:
        device.close()


def test_an_oversized_payload_reaches_the_gateway_an_oversized_packet_disconnects(
        secured: Mosquitto, gateway: Client) -> None:
    tenant = unique("t")
    topic = telemetry_topic(tenant, "wh-a")
    device = Client(secured, "wh-a")
    try:
        big = 200_000  # over the gateway's limit and over the 64 KiB the broker used to allow
        assert device.publish(topic, b"{" * big).value == 0
        assert wait_until(lambda: (topic, big) in gateway.received, timeout=5)

        device.client.publish(topic, b"{" * max_packet_size(), qos=1)
        assert wait_until(lambda: bool(device.disconnects), timeout=10)
        # The broker sends DISCONNECT 0x95 and closes; a client still writing the packet may see
        # only the reset (paho: "unspecified error"). The broker's log says which it was.
        assert device.disconnects[0].value in (PACKET_TOO_LARGE, 0x80), str(device.disconnects[0])
        log = secured.workdir / "mosquitto.log"
        assert wait_until(lambda: "disconnected due to oversize packet" in log.read_text())
        assert not wait_until(lambda: len(gateway.received) > 1, timeout=0.5)
    finally:
        device.close()


def test_the_broker_packet_limit_is_above_every_payload_limit_the_gateway_allows() -> None:
    """An oversized payload must reach the gateway to become a dead letter: the broker's packet
    limit stays above the largest PLEDGEWATCH_MAX_PAYLOAD_BYTES the settings accept, with room for
    a contract topic and MQTT 5 properties."""
    ceiling = next(m.le for m in Settings.model_fields["max_payload_bytes"].metadata
                   if isinstance(m, annotated_types.Le))
    assert isinstance(ceiling, int)
    room = max_packet_size() - ceiling
    assert room >= 1024, f"max_packet_size leaves {room} bytes over a {ceiling}-byte payload"
    assert Limits().max_payload_bytes < ceiling


def test_a_config_override_must_be_a_setting_name(tmp_path: Path) -> None:
    for name, value in (("listener 1 #", "x"), ("autosave_interval", "1\nlistener 1883")):
        with pytest.raises(ValueError, match="not a mosquitto setting"):
            Mosquitto(tmp_path / "m", overrides={name: value}).start()


def test_a_broker_crash_loses_at_most_what_was_queued_since_the_last_autosave(
        tmp_path: Path) -> None:
    """The shipped setting autosaves every N changes (a message queued for the offline gateway's
    session is one). Run here with N = 500 (the same mechanism, fast): 1,277 PUBACKed messages,
    SIGKILL right after the last PUBACK, and at most 499 are lost. The old setting (every 30 s)
    lost all of them."""
    assert shipped_setting("autosave_on_changes") == "true"
    assert shipped_setting("autosave_interval") == "10000"
    bounded = measure("every 500 changes", {"autosave_interval": "500"}, 1_277, tmp_path / "a",
                      idle_s=0.5)
    assert bounded.acked == 1_277
    assert bounded.lost <= 499 and bounded.recovered >= 1_000, bounded
    old = measure("every 30 s", {"autosave_on_changes": "false", "autosave_interval": "30"},
                  1_277, tmp_path / "b", idle_s=0.5)
    assert old.acked == 1_277 and old.lost == 1_277, old


def test_store_confirmations_reach_only_their_own_device(secured: Mosquitto,
                                                         gateway: Client) -> None:
    tenant = unique("t")
    own, other = Client(secured, "wh-a"), Client(secured, "wh-b")
    try:
        granted: dict[str, list[ReasonCode]] = {}
        done = threading.Event()

        def on_subscribe(_c: object, _u: object, _m: int, codes: list[ReasonCode],
                         _p: object) -> None:
            granted["wh-b"] = codes
            done.set()

        other.client.on_subscribe = on_subscribe
        other.client.subscribe(stored_topic(tenant, "wh-a"), qos=0)
        assert done.wait(10)
        own_done = threading.Event()
        own.client.on_subscribe = lambda *_: own_done.set()
        own.client.subscribe(stored_topic(tenant, "wh-a"), qos=0)
        assert own_done.wait(10)
        rc = gateway.publish(stored_topic(tenant, "wh-a"), b'{"boot":1,"ranges":[[0,3]]}')
        assert rc.value == 0, str(rc)
        assert wait_until(lambda: own.received == [(stored_topic(tenant, "wh-a"), 27)], timeout=5)
        assert not wait_until(lambda: bool(other.received), timeout=0.5)
        # Mosquitto grants the subscription and checks the read ACL on each delivery instead
        assert granted["wh-b"], "wh-b's SUBACK"
    finally:
        own.close()
        other.close()
