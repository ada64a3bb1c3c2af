"""The simulated fleet against a real (embedded) broker: nothing lost, nothing renumbered.

Each test starts its own iotcore broker on a free port and watches the fleet with a plain
paho-mqtt subscriber. The broker-restart test routes the devices through a small TCP relay so the
test decides *when* the devices can reach the broker: the new broker has no memory of the
subscriber, so the subscriber must have re-subscribed before the devices resend, or the broker
would acknowledge (and drop) messages nobody is subscribed to. The relay also holds the devices'
traffic just before the old broker is stopped, so the messages the devices have in flight at that
moment are never acknowledged and must come back from the devices' outboxes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from iotcore import Broker
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.device_models import DeviceSpec, make_fleet
from firmware_sim.fleet import FleetStats, run_fleet
from telemetry.contract.topics import parse_topic

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
RATE_HZ = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Subscriber:
    """A persistent-session QoS 1 subscriber to ``pw/v1/#`` that re-subscribes on reconnect."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.subscriptions = 0
        self.telemetry: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.status: dict[str, list[tuple[dict[str, Any], bool]]] = defaultdict(list)
        self.bad: list[tuple[str, bytes]] = []

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("pw/v1/#", qos=1)  # a restarted broker forgot our session

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        topic = parse_topic(msg.topic)
        try:
            doc = json.loads(msg.payload.decode("utf-8"))
        except ValueError:
            doc = None
        if topic is None or not isinstance(doc, dict):
            self.bad.append((msg.topic, bytes(msg.payload)))
        elif topic.channel == "status":
            self.status[topic.device_id].append((doc, bool(msg.retain)))
        elif valid_telemetry(doc):
            self.telemetry[topic.device_id].append((doc["boot"], doc["seq"]))
        else:
            self.bad.append((msg.topic, bytes(msg.payload)))

    def start(self) -> Subscriber:
        self.client.connect(HOST, self.port, keepalive=10)
        self.client.loop_start()
        assert wait_until(lambda: self.subscriptions > 0, 5.0), "subscriber never subscribed"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def seqs(self, device_id: str, boot: int) -> set[int]:
        return {seq for b, seq in list(self.telemetry[device_id]) if b == boot}

    def has_everything(self, stats: FleetStats) -> bool:
        return all(
            self.seqs(d.device_id, d.boot) == set(range(d.published))
            for d in stats.devices.values()
        )


def valid_telemetry(doc: dict[str, Any]) -> bool:
    ints = all(type(doc.get(key)) is int for key in ("boot", "seq", "ts"))
    readings = doc.get("readings")
    return ints and isinstance(readings, dict) and len(readings) > 0


class Relay:
    """A TCP relay devices -> broker that can stop accepting, hold traffic and cut connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[Any]] = set()

    async def listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, HOST, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def cut(self) -> None:
        """Kill every relayed connection (no MQTT DISCONNECT: the broker sends the will)."""
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._relays.add(task)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, gated=True)),
            asyncio.create_task(self._pipe(up_reader, writer, gated=False)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            writer.transport.abort()
            up_writer.transport.abort()
            self._relays.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gated:
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return


class BrokerOnPort:
    """The embedded broker on one fixed port; a restart is a new broker that remembers nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._broker: Broker | None = None

    def start(self) -> BrokerOnPort:
        self._broker = Broker(port=self.port, listen=HOST).start()
        return self

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None


@pytest.fixture
def broker() -> Iterator[BrokerOnPort]:
    running = BrokerOnPort(free_port()).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def broker_port(broker: BrokerOnPort) -> int:
    return broker.port


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def fleet_of(n: int, tenant: str) -> list[DeviceSpec]:
    return make_fleet(n, tenant=tenant, seed=5)


def assert_complete(sub: Subscriber, stats: FleetStats) -> None:
    assert sub.bad == []
    assert stats.pending == 0 and stats.dropped == 0
    assert stats.acknowledged == stats.published
    assert wait_until(lambda: sub.has_everything(stats), 5.0)
    for device in stats.devices.values():
        assert sub.seqs(device.device_id, device.boot) == set(range(device.published))


@pytest.mark.timeout(30)
def test_fleet_delivers_every_sequence_number_and_status(
    broker_port: int, tenant: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker_port, f"sub-{tenant}").start()
    try:
        specs = fleet_of(5, tenant)
        stats = asyncio.run(
            run_fleet(
                specs, host=HOST, port=broker_port, rate_hz=RATE_HZ, duration_s=2.0,
                state_dir=tmp_path,
            )
        )  # fmt: skip
        assert set(stats.devices) == {spec.device_id for spec in specs}
        for device in stats.devices.values():
            assert device.boot == 1 and device.connects == 1
            assert 30 <= device.published <= 45  # 20 Hz for 2 s
        assert_complete(sub, stats)
        assert stats.resent == 0
        # The clean shutdown's "offline" may still be on its way when the readings are all in.
        assert wait_until(lambda: all(st and st[-1][0] == {"state": "offline"}
                                      for st in list(sub.status.values())), 5.0), sub.status
        for device_id, statuses in sub.status.items():
            assert statuses[0][0] == {"state": "online", "boot": 1}, device_id
            assert statuses[-1][0] == {"state": "offline"}, device_id
        assert set(sub.status) == set(stats.devices)
    finally:
        sub.stop()
    late = Subscriber(broker_port, f"late-{tenant}").start()
    try:
        assert wait_until(lambda: len(late.status) == len(specs), 3.0)
        for statuses in late.status.values():
            assert statuses == [({"state": "offline"}, True)]  # retained
    finally:
        late.stop()


@pytest.mark.timeout(30)
def test_each_start_is_a_new_boot_with_seq_from_zero(
    broker_port: int, tenant: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker_port, f"sub-{tenant}").start()
    try:
        specs = fleet_of(2, tenant)
        for boot in (1, 2):
            stats = asyncio.run(
                run_fleet(
                    specs, host=HOST, port=broker_port, rate_hz=RATE_HZ, duration_s=0.5,
                    state_dir=tmp_path,
                )
            )  # fmt: skip
            assert {d.boot for d in stats.devices.values()} == {boot}
            assert_complete(sub, stats)
    finally:
        sub.stop()


async def run_with_cut(relay: Relay, specs: list[DeviceSpec], state_dir: Path) -> FleetStats:
    stop = asyncio.Event()
    port = await relay.listen()
    fleet = asyncio.create_task(
        run_fleet(
            specs, host=HOST, port=port, rate_hz=RATE_HZ, duration_s=None, stop=stop,
            state_dir=state_dir,
        )
    )  # fmt: skip
    await asyncio.sleep(1.5)
    await relay.cut()  # the devices reconnect at once, through the relay
    await asyncio.sleep(1.5)
    stop.set()
    stats = await fleet
    relay.stop_listening()
    return stats


@pytest.mark.timeout(30)
def test_killed_connection_sends_the_will_and_the_device_comes_back(
    broker_port: int, tenant: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker_port, f"sub-{tenant}").start()
    try:
        specs = fleet_of(2, tenant)
        stats = asyncio.run(run_with_cut(Relay(broker_port), specs, tmp_path))
        assert_complete(sub, stats)
        # the last "offline" may reach the subscriber just after the fleet has stopped
        ids = [device.device_id for device in stats.devices.values()]
        wait_until(lambda: all(len(sub.status[i]) >= 4 for i in ids), 5.0)
        for device in stats.devices.values():
            assert device.connects == 2
            states = [doc for doc, _ in sub.status[device.device_id]]
            online = {"state": "online", "boot": device.boot}
            assert states == [online, {"state": "offline"}, online, {"state": "offline"}]
    finally:
        sub.stop()


async def run_with_broker_restart(
    relay: Relay, broker: BrokerOnPort, sub: Subscriber, specs: list[DeviceSpec], state_dir: Path
) -> FleetStats:
    stop = asyncio.Event()
    port = await relay.listen()
    fleet = asyncio.create_task(
        run_fleet(
            specs, host=HOST, port=port, rate_hz=RATE_HZ, duration_s=None, stop=stop,
            state_dir=state_dir, drain_timeout_s=10.0,
        )
    )  # fmt: skip
    await asyncio.sleep(2.0)
    relay.stop_listening()  # devices cannot reach the new broker before the subscriber
    relay.flowing.clear()  # what the devices send from now on is never acknowledged
    await asyncio.sleep(0.5)
    subscriptions = sub.subscriptions
    await asyncio.to_thread(broker.stop)  # drops the devices' connections
    await asyncio.sleep(1.0)  # devices keep sampling into their outboxes
    await asyncio.to_thread(broker.start)
    resubscribed = await asyncio.to_thread(
        wait_until, lambda: sub.subscriptions > subscriptions, 10.0
    )
    assert resubscribed, "the subscriber did not come back"
    relay.flowing.set()
    await relay.listen()
    await asyncio.sleep(2.0)
    stop.set()
    stats = await fleet
    relay.stop_listening()
    return stats


@pytest.mark.timeout(40)
def test_outbox_resends_across_a_broker_restart(
    broker: BrokerOnPort, tenant: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker.port, f"sub-{tenant}").start()
    try:
        specs = fleet_of(5, tenant)
        relay = Relay(broker.port)
        stats = asyncio.run(run_with_broker_restart(relay, broker, sub, specs, tmp_path))
        assert_complete(sub, stats)
        assert stats.resent > 0  # the held in-flight messages came back from the outboxes
        for device in stats.devices.values():
            assert device.connects == 2
            assert device.published >= 90  # ~5.5 s at 20 Hz, ~1.5 s of it with no broker
    finally:
        sub.stop()
