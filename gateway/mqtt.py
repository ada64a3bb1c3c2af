"""Where the broker is and how to open a paho-mqtt 2.x client to it."""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    protocol: Protocol = "5"

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


def parse_mqtt_url(url: str, protocol: Protocol = "5") -> MqttTarget:
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        protocol=protocol,
    )


def new_client(
    target: MqttTarget,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A client with a fixed id; ``persistent`` keeps the broker-side session across restarts."""
    if target.protocol == "5":
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
            clean_session=not persistent, manual_ack=manual_ack,
        )
    if target.username:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def connect_kwargs(target: MqttTarget, *, persistent: bool, session_expiry_s: int,
                   keepalive: int, receive_maximum: int = 65535) -> dict[str, object]:
    """Arguments for ``client.connect``: MQTT 5 clean start off plus a session expiry, and the
    Receive Maximum: how many QoS 1 messages the broker may have out to this client unacknowledged
    (MQTT 3.1.1 has none; there the broker's own limit, Mosquitto's ``max_inflight_messages``,
    bounds it)."""
    if not 1 <= receive_maximum <= 65535:
        raise ValueError(f"receive maximum must be between 1 and 65535 (got {receive_maximum})")
    kwargs: dict[str, object] = {"host": target.host, "port": target.port, "keepalive": keepalive}
    if target.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = session_expiry_s
        props.ReceiveMaximum = receive_maximum
        kwargs["clean_start"] = not persistent
        kwargs["properties"] = props
    return kwargs


@contextmanager
def connected_client(target: MqttTarget, client_id: str, *, persistent: bool,
                     session_expiry_s: int = 0, timeout: float = 10) -> Iterator[mqtt.Client]:
    """A started client once the broker has accepted it; disconnected on exit."""
    client = new_client(target, client_id, persistent=persistent)
    accepted, refused = threading.Event(), []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        if rc.is_failure:
            refused.append(rc)
        accepted.set()

    client.on_connect = on_connect
    client.connect(**connect_kwargs(target, persistent=persistent,  # type: ignore[arg-type]
                                    session_expiry_s=session_expiry_s, keepalive=30))
    client.loop_start()
    try:
        if not accepted.wait(timeout) or refused:
            raise ConnectionError(f"{target.url} refused {client_id}: {refused or 'timeout'}")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish_qos1(client: mqtt.Client, messages: Iterable[tuple[str, bytes]],
                 rate: float | None = None, timeout: float = 120, window: int = 20_000) -> int:
    """Publish at QoS 1 (optionally paced at ``rate`` msg/s) and wait for every PUBACK.

    At most ``window`` messages are outstanding: packet ids are 16 bits, so a larger backlog
    would reuse ids still in flight.
    """
    started = time.monotonic()
    outstanding: deque[mqtt.MQTTMessageInfo] = deque()
    sent = 0
    for topic, payload in messages:
        if len(outstanding) >= window:
            outstanding.popleft().wait_for_publish(timeout)
        outstanding.append(client.publish(topic, payload, qos=1))
        sent += 1
        if rate:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    for info in outstanding:
        info.wait_for_publish(timeout)
    return sent
