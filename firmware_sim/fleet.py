"""Run a simulated device fleet: one aiomqtt client per device, all in one asyncio event loop.

Per device there are two tasks. The *producer* samples the device model ``rate_hz`` times a
second (whether or not the device is connected) and puts the encoded message in the device's
outbox. The *link* connects (a new :class:`aiomqtt.Client` per attempt, with exponential backoff
and jitter), publishes the retained ``online`` status, then sends the outbox in order at QoS 1;
a telemetry message leaves the outbox when the gateway's store confirmation covers it (the link
subscribes to the device's ``stored`` topic, :mod:`telemetry.contract.confirm`), or after its
PUBACK alone while no gateway has ever confirmed. After a reconnect every message not stored end
to end is resent with the same bytes; one PUBACKed but unconfirmed for ``confirm_timeout_s`` is
resent too (a broker that crashed before its autosave lost it).

On stop the producers stop, each link gets a bounded time to drain its outbox, publishes the
retained ``offline`` status and disconnects cleanly (a dropped connection leaves the broker to
publish the same ``offline`` status as the device's last will).

Compressed time (``clock``, a :class:`SimClock`): readings are stamped by the simulator, from
``start_ms`` on, ``speed`` simulated seconds per real second (the models step that much per sample),
and with ``span_s`` every device stops producing after that many simulated seconds; the fleet then
drains and returns without waiting for ``duration_s``. ``scenario`` may also be a function of the
device spec returning its :class:`firmware_sim.scenarios.Scenario` (a story whose devices play
different parts, e.g. :mod:`firmware_sim.delivery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from firmware_sim.boot import BootStore
from firmware_sim.device_models import DeviceSpec, build_model
from firmware_sim.messages import OFFLINE_PAYLOAD, Sequencer, online_payload
from firmware_sim.outbox import Outbox, OutboxMessage
from firmware_sim.scenarios import Scenario, make_scenario
from telemetry.contract.confirm import decode_confirmation, stored_topic
from telemetry.contract.topics import status_topic, telemetry_topic

log = logging.getLogger(__name__)

PROTOCOLS: dict[str, aiomqtt.ProtocolVersion] = {
    "3.1.1": aiomqtt.ProtocolVersion.V311,
    "5": aiomqtt.ProtocolVersion.V5,
}
Password = str | Callable[[str], str] | None
ScenarioChoice = str | Callable[[DeviceSpec], Scenario]  # a scenario name, or one per device
ProgressCallback = Callable[["FleetStats"], None]

BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 5.0
CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = STATUS_TIMEOUT_S + 1.0
CONNECTS_PER_S = 500.0
MAX_INFLIGHT = 20
KEEPALIVE_S = 30
CONFIRM_TIMEOUT_S = 30.0  # resend a PUBACKed message the store has not confirmed by then
OVERDUE_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class SimClock:
    """Compressed time: readings stamped from ``start_ms`` (epoch ms) on, ``speed`` simulated
    seconds per real second; after ``span_s`` simulated seconds (None: never) a device stops."""

    start_ms: int
    speed: float = 1.0
    span_s: float | None = None

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError("a simulated clock's speed must be > 0")
        if self.span_s is not None and not self.span_s >= 0:
            raise ValueError("a simulated clock's span must be >= 0")


@dataclass(frozen=True, slots=True)
class DeviceStats:
    """Counters of one device; ``published`` is the number of telemetry messages created."""

    device_id: str
    boot: int
    published: int
    acknowledged: int
    resent: int
    dropped: int
    pending: int
    connects: int
    confirmed: int = 0  # left the outbox on the store's confirmation
    resent_unconfirmed: int = 0  # PUBACKed, never confirmed, sent again


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Fleet totals: created, PUBACKed, resent after a reconnect, dropped by a full outbox."""

    published: int = 0
    acknowledged: int = 0
    resent: int = 0
    dropped: int = 0
    pending: int = 0
    connects: int = 0
    confirmed: int = 0
    resent_unconfirmed: int = 0
    devices: dict[str, DeviceStats] = field(default_factory=dict)

    @classmethod
    def collect(cls, devices: Iterable[DeviceStats]) -> FleetStats:
        by_id = {d.device_id: d for d in devices}
        rows = by_id.values()
        return cls(
            published=sum(d.published for d in rows),
            acknowledged=sum(d.acknowledged for d in rows),
            resent=sum(d.resent for d in rows),
            dropped=sum(d.dropped for d in rows),
            pending=sum(d.pending for d in rows),
            connects=sum(d.connects for d in rows),
            confirmed=sum(d.confirmed for d in rows),
            resent_unconfirmed=sum(d.resent_unconfirmed for d in rows),
            devices=by_id,
        )


class _Device:
    """The mutable runtime of one simulated device."""

    def __init__(self, spec: DeviceSpec, boot: int, scenario: ScenarioChoice, outbox_max: int,
                 confirm_timeout_s: float | None = None, clock: SimClock | None = None) -> None:
        self.spec = spec
        self.boot = boot
        self.clock = clock
        self.model = build_model(spec)
        self.scenario = (make_scenario(scenario, spec) if isinstance(scenario, str)
                         else scenario(spec))
        self.sequencer = Sequencer(boot)
        self.outbox = Outbox(outbox_max, boot=boot, confirm_timeout_s=confirm_timeout_s)
        self.topic = telemetry_topic(spec.tenant, spec.device_id)
        self.status_topic = status_topic(spec.tenant, spec.device_id)
        self.stored_topic = stored_topic(spec.tenant, spec.device_id)
        self.wakeup = asyncio.Event()
        self.abandoned = asyncio.Event()
        self.producing = True
        self.connects = 0
        self.step = 0
        self.t_s = 0.0

    def sample(self, dt_s: float) -> None:
        """Step the model, apply the scenario and queue the encoded message."""
        readings = self.scenario.apply(self.step, self.t_s, self.model.step(dt_s))
        ts_ms = self.timestamp_ms()
        self.step += 1
        self.t_s += dt_s
        seq = self.sequencer.seq
        payload = self.sequencer.next_payload(ts_ms, readings)
        self.outbox.put(self.topic, payload, seq)
        self.wakeup.set()

    def timestamp_ms(self) -> int:
        """The device time of the sample being taken: the wall clock, or the simulated one."""
        if self.clock is None:
            return time.time_ns() // 1_000_000
        return self.clock.start_ms + round(self.t_s * 1000)

    @property
    def story_over(self) -> bool:
        """Whether the simulated clock's span is used up (the device stops producing)."""
        span = self.clock.span_s if self.clock is not None else None
        return span is not None and self.t_s > span + 1e-9

    def stop_producing(self) -> None:
        self.producing = False
        self.wakeup.set()

    def abandon(self) -> None:
        """Give up draining: the link publishes ``offline`` and disconnects as soon as it can."""
        self.abandoned.set()
        self.wakeup.set()

    @property
    def finished(self) -> bool:
        drained = not self.producing and self.outbox.settled
        return drained or self.abandoned.is_set()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the device is abandoned first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.abandoned.wait(), seconds)

    def stats(self) -> DeviceStats:
        box = self.outbox
        return DeviceStats(
            self.spec.device_id,
            self.boot,
            box.added,
            box.acked,
            box.resent,
            box.dropped,
            box.waiting,
            self.connects,
            box.confirmed,
            box.resent_unconfirmed,
        )


@dataclass(frozen=True, slots=True)
class _Broker:
    host: str
    port: int
    username: str | None
    password: Password
    protocol: aiomqtt.ProtocolVersion

    def client(self, device: _Device) -> aiomqtt.Client:
        """A fresh client for one connection attempt (aiomqtt contexts are not re-entrant)."""
        device_id = device.spec.device_id
        password = self.password(device_id) if callable(self.password) else self.password
        username = self.username or (device_id if password is not None else None)
        v311 = self.protocol == aiomqtt.ProtocolVersion.V311
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=username,
            password=password,
            identifier=device_id,
            protocol=self.protocol,
            will=aiomqtt.Will(device.status_topic, OFFLINE_PAYLOAD, qos=1, retain=True),
            clean_session=True if v311 else None,
            keepalive=KEEPALIVE_S,
            timeout=CONNECT_TIMEOUT_S,
        )
        client.pending_calls_threshold = MAX_INFLIGHT + 2  # our window is not a leak
        return client


async def _publish(client: aiomqtt.Client, device: _Device, message: OutboxMessage) -> None:
    """Publish one message; it leaves the outbox only once the broker has PUBACKed it."""
    try:
        await client.publish(message.topic, message.payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        device.outbox.ack(message.key, time.monotonic())
    finally:
        device.wakeup.set()


def _reap(inflight: set[asyncio.Task[None]]) -> None:
    """Forget finished publishes; re-raise the first failure (it ends the connection)."""
    for task in [t for t in inflight if t.done()]:
        inflight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc


async def _send(client: aiomqtt.Client, device: _Device) -> None:
    """Send the outbox in order, at most ``MAX_INFLIGHT`` unacknowledged, until finished."""
    inflight: set[asyncio.Task[None]] = set()
    try:
        while not device.finished:
            device.wakeup.clear()
            _reap(inflight)
            message = device.outbox.next_unsent() if len(inflight) < MAX_INFLIGHT else None
            if message is None:
                if device.outbox.overdue(time.monotonic()):
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(device.wakeup.wait(), OVERDUE_CHECK_S)
            else:
                inflight.add(asyncio.create_task(_publish(client, device, message)))
    finally:
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)


async def _until_disconnected(client: aiomqtt.Client, device: _Device) -> None:
    """Apply store confirmations until the connection drops (then ``MqttError`` is raised)."""
    async for message in client.messages:
        payload = message.payload
        confirmation = (decode_confirmation(payload) if isinstance(payload, bytes | bytearray)
                        else None)
        if confirmation is None:
            log.debug("%s: ignored a malformed confirmation", device.spec.device_id)
        elif device.outbox.confirm(confirmation):
            device.wakeup.set()


async def _session(client: aiomqtt.Client, device: _Device) -> None:
    """One connection: status online, resend + send the outbox, status offline when done."""
    await client.subscribe(device.stored_topic, qos=0, timeout=STATUS_TIMEOUT_S)
    await client.publish(
        device.status_topic,
        online_payload(device.boot),
        qos=1,
        retain=True,
        timeout=STATUS_TIMEOUT_S,
    )
    device.outbox.rewind()
    watcher = asyncio.create_task(_until_disconnected(client, device))
    sender = asyncio.create_task(_send(client, device))
    try:
        await asyncio.wait((watcher, sender), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        sender.cancel()
        await asyncio.gather(watcher, sender, return_exceptions=True)
    if sender.cancelled():
        raise aiomqtt.MqttError("connection lost")
    sender.result()
    await client.publish(
        device.status_topic, OFFLINE_PAYLOAD, qos=1, retain=True, timeout=STATUS_TIMEOUT_S
    )


async def _link(device: _Device, broker: _Broker, start_delay_s: float) -> None:
    """Connect, run sessions and reconnect with backoff until the device is finished."""
    await device.pause(start_delay_s)
    loop = asyncio.get_running_loop()
    backoff = BACKOFF_MIN_S
    while not device.finished:
        connected_at = None
        try:
            async with broker.client(device) as client:
                connected_at = loop.time()
                device.connects += 1
                await _session(client, device)
        except aiomqtt.MqttError as exc:
            log.debug("%s: connection ended: %s", device.spec.device_id, exc)
        if device.finished:
            return
        if connected_at is not None and loop.time() - connected_at > BACKOFF_MAX_S:
            backoff = BACKOFF_MIN_S
        await device.pause(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, BACKOFF_MAX_S)


async def _produce(device: _Device, period_s: float, start_delay_s: float) -> None:
    """Sample the device every ``period_s`` until cancelled (or its simulated clock's span is
    used up); skips ticks it fell behind on. Each sample steps the simulated time by ``period_s``
    times the clock's speed."""
    loop = asyncio.get_running_loop()
    step_s = period_s * (device.clock.speed if device.clock is not None else 1.0)
    try:
        await asyncio.sleep(start_delay_s)
        next_at = loop.time()
        while not device.story_over:
            device.sample(step_s)
            next_at += period_s
            now = loop.time()
            if next_at < now - period_s:
                next_at = now
            await asyncio.sleep(max(0.0, next_at - now))
    finally:
        device.stop_producing()


async def _report(devices: Sequence[_Device], callback: ProgressCallback, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            callback(FleetStats.collect(d.stats() for d in devices))
        except Exception:
            log.exception("progress callback failed")


async def _wait_for_stop(stop: asyncio.Event, duration_s: float | None,
                         producers: Sequence[asyncio.Task[None]] = ()) -> None:
    """Until ``stop`` is set, ``duration_s`` passed or (when given) every producer finished."""
    if not producers:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
        return
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(asyncio.wait(producers))]
    try:
        await asyncio.wait(waits, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _shutdown(
    devices: Sequence[_Device],
    producers: Sequence[asyncio.Task[None]],
    links: Sequence[asyncio.Task[None]],
    drain_timeout_s: float,
) -> None:
    """Stop producing, let links drain (bounded), then make them disconnect."""
    for task in producers:
        task.cancel()
    await asyncio.gather(*producers, return_exceptions=True)
    if links:
        await asyncio.wait(links, timeout=drain_timeout_s)
    for device in devices:
        device.abandon()
    if links:
        await asyncio.wait(links, timeout=CLOSE_TIMEOUT_S)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel what is left; re-raise an unexpected error of a task (a bug, not a network fault)."""
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise errors[0]


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("device task %s crashed", task.get_name(), exc_info=exc)


def _start_delays(n: int, period_s: float, rng: random.Random) -> list[tuple[float, float]]:
    """(producer, link) start delays that spread a big fleet instead of bursting."""
    connect_spread_s = max(period_s, n / CONNECTS_PER_S)
    return [(rng.uniform(0, period_s), rng.uniform(0, connect_spread_s)) for _ in range(n)]


def _make_devices(
    specs: Sequence[DeviceSpec], scenario: ScenarioChoice, state_dir: Path, outbox_max: int,
    confirm_timeout_s: float | None, clock: SimClock | None = None,
) -> list[_Device]:
    ids = [spec.device_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("device ids must be unique within a fleet")
    boots = BootStore(state_dir).next_boots(ids)
    return [_Device(spec, boots[spec.device_id], scenario, outbox_max, confirm_timeout_s, clock)
            for spec in specs]


async def run_fleet(
    specs: Sequence[DeviceSpec],
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: Password = None,
    rate_hz: float,
    duration_s: float | None,
    scenario: ScenarioChoice = "normal",
    state_dir: Path,
    protocol: str = "3.1.1",
    stop: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
    outbox_max: int = 5_000,
    drain_timeout_s: float = 5.0,
    progress_every_s: float = 1.0,
    confirm_timeout_s: float | None = CONFIRM_TIMEOUT_S,
    clock: SimClock | None = None,
) -> FleetStats:
    """Run ``specs`` against the broker until ``duration_s`` passed or ``stop`` is set.

    ``password`` may be a string or a function of the device id; with a password and no
    ``username`` each device logs in as its own device id. Boot counters are kept in
    ``state_dir/sim-boot.json``. Returns the final counters (also passed to ``on_progress``).
    ``confirm_timeout_s`` (``None``: a PUBACK is the end) is how long a PUBACKed message waits
    for the store's confirmation before it is sent again. ``scenario`` is a name of
    :data:`firmware_sim.scenarios.SCENARIOS` or a function of the spec giving each device its
    scenario; ``clock`` (None: the wall clock) compresses time (see the module).
    """
    if rate_hz <= 0:
        raise ValueError("rate_hz must be > 0")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}")
    broker = _Broker(host, port, username, password, PROTOCOLS[protocol])
    devices = _make_devices(specs, scenario, state_dir, outbox_max, confirm_timeout_s, clock)
    period_s = 1.0 / rate_hz
    delays = _start_delays(len(devices), period_s, random.Random())
    producers = [
        asyncio.create_task(_produce(d, period_s, p), name=f"produce:{d.spec.device_id}")
        for d, (p, _) in zip(devices, delays, strict=True)
    ]
    links = [
        asyncio.create_task(_link(d, broker, c), name=f"link:{d.spec.device_id}")
        for d, (_, c) in zip(devices, delays, strict=True)
    ]
    for task in (*producers, *links):
        task.add_done_callback(_log_crash)
    reporter = []
    if on_progress is not None:
        reporter.append(asyncio.create_task(_report(devices, on_progress, progress_every_s)))
    try:
        story = clock is not None and clock.span_s is not None
        await _wait_for_stop(stop or asyncio.Event(), duration_s, producers if story else ())
        await _shutdown(devices, producers, links, drain_timeout_s)
    finally:
        await _cancel_all([*reporter, *producers, *links])
    stats = FleetStats.collect(d.stats() for d in devices)
    if on_progress is not None:
        on_progress(stats)
    return stats
