"""`pledgewatch bench chaos`: kill and stop what the gateway depends on while devices publish, then
count what the broker acknowledged against what the store holds.

Each scenario gets a broker of its own (Debian's mosquitto, project config, on a free port), its
own tenant and devices, and real `pledgewatch gateway` processes; all share one database (a private
embedded cluster, or a new database on a given server). Two paho clients publish QoS 1 and record
every PUBACK. Printed, one line per scenario as it finishes (a contract others parse)::

    <scenario> published <n> acked <n> stored <n> duplicates <n> lost <n> seconds <s>

then ``lost_in_broker_window <n>`` and last ``lost_total <n>``. lost = acknowledged by the broker
but not in the store once the drain settles; messages a broker SIGKILL takes with it because they
were acknowledged after its last persistence snapshot (and before it was back up) are the
documented broker window: counted in the scenario's ``lost`` and in ``lost_in_broker_window``, not
in ``lost_total``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from subprocess import SubprocessError
from typing import TextIO

import psycopg

from bench.chaos_rig import (
    READINGS,
    AckingPublisher,
    ChaosBroker,
    ChaosDatabase,
    GatewayProcess,
    PgStop,
    StoreCount,
    count_messages,
    count_rows,
    device_ids,
    gateway_env,
    gateway_has_option,
    make_messages,
    mosquitto_version,
    open_session,
    progress,
    read_persistence,
)
from firmware_sim.device_models import make_device
from firmware_sim.fleet import FleetStats, run_fleet
from gateway.mqtt import connected_client, publish_qos1
from pledgewatch.broker.mosquitto import CONFIG
from telemetry.contract.topics import telemetry_topic

SCENARIOS = ("gateway_sigkill", "db_outage", "broker_restart_graceful",
             "broker_kill_before_autosave", "broker_kill_after_autosave", "gateway_failover",
             "table_lock", "broker_kill_devices")
PUBLISHERS = 2
DEVICES = 20
FAILOVER_SLOTS = 2


class ScenarioError(RuntimeError):
    """The scenario could not do what it is about (e.g. the gateway never stored anything)."""


class Skipped(RuntimeError):
    """The scenario needs something this checkout does not have yet."""


@dataclass(frozen=True)
class ChaosOptions:
    messages: int = 20_000
    rate: float = 2000.0
    outage_s: float = 15.0
    pg_stop: PgStop = "immediate"
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool, messages: int | None = None, rate: float | None = None,
             outage_s: float | None = None, pg_stop: PgStop = "immediate") -> ChaosOptions:
        """Given values win; the rest are the normal or the ``--quick`` defaults."""
        return cls(messages=messages or (3000 if quick else 20_000),
                   rate=rate or (1500.0 if quick else 2000.0),
                   outage_s=outage_s or (3.0 if quick else 15.0), pg_stop=pg_stop, quick=quick)

    @property
    def pause_s(self) -> float:
        """How long a killed gateway stays down, and a gracefully stopped broker."""
        return 0.5 if self.quick else 2.0

    @property
    def stall_s(self) -> float:
        """A drain that makes no progress for this long has settled (what is missing is lost);
        long enough for a gateway started under load to come up and take its slot."""
        return 20.0 if self.quick else 30.0


@dataclass
class Outcome:
    scenario: str
    published: int
    acked: int
    stored: int
    duplicates: int
    lost: int
    seconds: float
    in_window: int = 0  # lost, but acknowledged after the broker's last snapshot before a SIGKILL
    window: bool = False  # the scenario kills the broker
    note: str | None = None  # an extra line printed after the scenario's

    def line(self) -> str:
        return (f"{self.scenario} published {self.published} acked {self.acked} stored "
                f"{self.stored} duplicates {self.duplicates} lost {self.lost} "
                f"seconds {self.seconds:.1f}")

    @property
    def lost_outside_window(self) -> int:
        return self.lost - self.in_window


Key = tuple[str, int]  # (device, seq) of a message


@dataclass(frozen=True)
class Window:
    """The documented broker window of one SIGKILL: PUBACKs the killed broker sent (on the
    publishers' connections to it) after its last snapshot (epoch seconds)."""

    snapshot: float
    by_killed_broker: frozenset[Key]


def lost_split(acked_at: dict[Key, float], stored: frozenset[Key],
               window: Window | None) -> tuple[int, int]:
    """(lost, of which in the broker window): acked but not stored; in the window when the killed
    broker acknowledged it after its last snapshot (a PUBACK from the restarted broker, or one from
    before the snapshot, is no excuse)."""
    lost = [(key, at) for key, at in acked_at.items() if key not in stored]
    if window is None:
        return len(lost), 0
    return len(lost), sum(1 for key, at in lost
                          if at > window.snapshot and key in window.by_killed_broker)


@dataclass
class ScenarioRun:
    """One scenario's broker, tenant, devices, gateways and publishers; counts at the end."""

    name: str
    db: ChaosDatabase
    workdir: Path
    options: ChaosOptions
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    gateways: list[GatewayProcess] = field(default_factory=list)
    publishers: list[tuple[AckingPublisher, list[int]]] = field(default_factory=list)
    snapshot: float | None = None  # the killed broker's last snapshot (broker_kill_*)
    kill_generations: list[int] = field(default_factory=list)  # publishers' connections to it
    started: float = 0.0
    probe_seq: int = field(default=-1, init=False)

    def __post_init__(self) -> None:
        self.tenant = f"cx{self.token}"
        self.devices = device_ids(self.tenant, DEVICES)
        self.messages = make_messages(self.tenant, self.devices, self.options.messages)
        self.client_id = f"chaos-gw-{self.token}"
        self.dir = self.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.broker = ChaosBroker(self.dir / "mosquitto")

    def __enter__(self) -> ScenarioRun:
        self.db.prepare(self.tenant, [*self.devices, self.probe_device])
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_gateways()
        for publisher, _ in self.publishers:
            publisher.close()
        self.broker.stop()

    @property
    def n(self) -> int:
        return self.options.messages

    @property
    def probe_device(self) -> str:
        return f"{self.tenant}-probe"

    def open_session(self) -> None:
        open_session(self.broker.target, self.client_id, self.tenant)

    def start_gateway(self, args: Sequence[str] = (), shared_group: str | None = None
                      ) -> GatewayProcess:
        env = gateway_env(self.db.url, self.broker.target, self.client_id, self.tenant,
                          self.dir / "state", shared_group)
        log = self.dir / f"gateway-{len(self.gateways) + 1}.log"
        gateway = GatewayProcess(env, log, args).start()
        self.gateways.append(gateway)
        return gateway

    def stop_gateways(self) -> list[str]:
        """SIGTERM every gateway still running; what did not end cleanly."""
        problems = []
        for i, gateway in enumerate(self.gateways, 1):
            was_running = gateway.exited is None
            code = gateway.stop()
            if was_running and code != 0:
                problems.append(f"gateway {i} stopped with {code} ({gateway.log})")
        return problems

    def publish(self, rate: float | None) -> None:
        """Start the publishers (each its own devices, in order); the scenario clock starts."""
        ack_timeout = 60 + self.options.outage_s
        for k in range(PUBLISHERS):
            indices = [i for i in range(self.n) if (i % DEVICES) % PUBLISHERS == k]
            publisher = AckingPublisher(
                self.broker.target, f"chaos-pub-{self.token}-{k}",
                [self.messages[i] for i in indices], None if rate is None else rate / PUBLISHERS,
                ack_timeout)
            self.publishers.append((publisher, indices))
        self.started = time.monotonic()
        for publisher, _ in self.publishers:
            publisher.start()

    def stored(self) -> int | None:
        rows = count_rows(self.db.url, self.devices)
        return None if rows is None else rows // READINGS

    def wait_stored(self, at_least: int) -> int:
        """Wait until ``at_least`` messages are stored; how many were when seen."""
        timeout = 60 + self.n / self.options.rate
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = self.stored()
            if stored is not None and stored >= at_least:
                return stored
            if all(g.exited is not None for g in self.gateways):
                last = next((line for g in self.gateways for line in g.tail(1)), "no output")
                raise ScenarioError(f"every gateway exited before storing {at_least} messages; "
                                    f"last: {last}")
            time.sleep(0.02)
        raise ScenarioError(f"the gateway stored {self.stored()} of the first {at_least} "
                            f"messages within {timeout:.0f} s")

    def wait_acked(self, at_least: int) -> int:
        """Wait until the publishers have ``at_least`` PUBACKs; how many they had."""
        deadline = time.monotonic() + 60 + self.n / 1000
        while time.monotonic() < deadline:
            acked = sum(publisher.acked for publisher, _ in self.publishers)
            if acked >= at_least:
                return acked
            time.sleep(0.005)
        raise ScenarioError(f"the broker acknowledged fewer than {at_least} messages in time")

    def wait_published(self) -> float:
        """Wait for every publisher to have its PUBACKs (or give up); the last PUBACK's time."""
        for publisher, _ in self.publishers:
            publisher.join(publisher.ack_timeout + self.n / self.options.rate + 60)
        times = [t for publisher, _ in self.publishers for t in publisher.acked_at if t]
        return max(times, default=time.time())

    def _probe_payload(self) -> bytes:
        self.probe_seq += 1
        ts = int(time.time() * 1000)
        return f'{{"boot":1,"seq":{self.probe_seq},"ts":{ts},"readings":{{"temp_c":1.5}}}}'.encode()

    def probe(self, timeout: float = 60) -> None:
        """Publish a probe device's messages until one is stored: the gateways are ingesting."""
        deadline = time.monotonic() + timeout
        topic = telemetry_topic(self.tenant, self.probe_device)
        with connected_client(self.broker.target, f"chaos-probe-{self.token}",
                              persistent=False) as client:
            while time.monotonic() < deadline:
                client.publish(topic, self._probe_payload(), qos=1).wait_for_publish(5)
                if (count_rows(self.db.url, [self.probe_device]) or 0) > 0:
                    return
                time.sleep(0.5)
        raise ScenarioError(f"no gateway stored a probe message within {timeout:.0f} s")

    def fill_until_snapshot(self, after: float, limit: int) -> int:
        """Publish the probe device's messages (changes for an `autosave_on_changes` broker; not
        counted) until the broker writes a snapshot later than ``after``; how many it took."""
        topic, sent = telemetry_topic(self.tenant, self.probe_device), 0
        with connected_client(self.broker.target, f"chaos-fill-{self.token}",
                              persistent=False) as client:
            while sent < limit and (self.broker.last_snapshot() or 0) <= after:
                batch = min(100, limit - sent)
                publish_qos1(client, ((topic, self._probe_payload()) for _ in range(batch)))
                sent += batch
        return sent

    def acked_by(self, generations: list[int]) -> frozenset[Key]:
        """Messages each publisher had acknowledged on its connection number ``generations[k]``."""
        return frozenset(
            (self.devices[indices[local] % DEVICES], indices[local] // DEVICES)
            for (publisher, indices), generation in zip(self.publishers, generations, strict=True)
            for local, on in enumerate(publisher.acked_on)
            if on == generation and publisher.acked_at[local] is not None)

    def acked_at(self) -> dict[Key, float]:
        out = {}
        for publisher, indices in self.publishers:
            for local, at in enumerate(publisher.acked_at):
                if at is not None:
                    i = indices[local]
                    out[(self.devices[i % DEVICES], i // DEVICES)] = at
        return out

    def settle(self) -> Outcome:
        """Wait for the publishers, then for the drain: until every acknowledged message is stored
        or nothing new arrives for ``stall_s``; stop the gateways and count."""
        self.wait_published()
        acked = self.acked_at()
        wanted = frozenset(acked)
        cap = time.monotonic() + 120 + self.options.outage_s + self.n / 1000
        last, last_change = -1, time.monotonic()
        while time.monotonic() < cap:
            count = count_messages(self.db.url, self.devices)
            if count is not None:
                if wanted <= count.keys:
                    break
                if len(count.keys) != last:
                    last, last_change = len(count.keys), time.monotonic()
            if time.monotonic() - last_change > self.options.stall_s:
                progress(f"{self.name}: the drain stalled at {max(last, 0)} of {len(wanted)} "
                         f"acknowledged messages")
                break
            time.sleep(0.25)
        seconds = time.monotonic() - self.started
        for problem in self.stop_gateways():
            progress(f"{self.name}: {problem}")
        final = self._final_count()
        window = None
        if self.snapshot is not None:
            window = Window(self.snapshot, self.acked_by(self.kill_generations))
        lost, in_window = lost_split(acked, final.keys, window)
        for i, (publisher, _) in enumerate(self.publishers, 1):
            if publisher.error or publisher.refused or publisher.no_subscribers:
                progress(f"{self.name}: publisher {i}: error {publisher.error}, refused "
                         f"{publisher.refused}, PUBACK 'no matching subscribers' "
                         f"{publisher.no_subscribers}")
        if lost:
            for i, gateway in enumerate(self.gateways, 1):
                for line in gateway.tail():
                    progress(f"{self.name}: gateway {i}: {line}")
        return Outcome(
            self.name, sum(p.published for p, _ in self.publishers), len(acked),
            len(final.keys), final.duplicates, lost, seconds, in_window,
            window=window is not None)

    def _final_count(self) -> StoreCount:
        deadline = time.monotonic() + 60
        while True:
            count = count_messages(self.db.url, self.devices)
            if count is not None:
                return count
            if time.monotonic() > deadline:
                raise ScenarioError("the store did not answer the final count within 60 s")
            time.sleep(0.5)


# --- scenarios --------------------------------------------------------------------------------

def gateway_sigkill(run: ScenarioRun) -> None:
    """SIGKILL the gateway while it commits a paced stream; a new process with the same client id
    takes the session and whatever the broker kept for it."""
    run.open_session()
    first = run.start_gateway()
    run.publish(run.options.rate)
    run.wait_stored(run.n // 3)
    first.kill()
    progress(f"{run.name}: gateway SIGKILLed with {run.stored()} of {run.n} messages stored; "
             f"restarting in {run.options.pause_s} s")
    time.sleep(run.options.pause_s)
    run.start_gateway()


def db_outage(run: ScenarioRun) -> None:
    """Stop the database the gateway writes to while devices publish; start it again."""
    run.open_session()
    run.start_gateway()
    run.publish(run.options.rate)
    run.wait_stored(run.n // 4)
    with run.db.outage(run.options.pg_stop):
        progress(f"{run.name}: database down ({run.options.pg_stop}) with {run.n // 4}+ of "
                 f"{run.n} stored, for {run.options.outage_s} s")
        time.sleep(run.options.outage_s)
    progress(f"{run.name}: database up again")


def table_lock(run: ScenarioRun) -> None:
    """LOCK TABLE readings IN ACCESS EXCLUSIVE MODE from another connection while devices
    publish."""
    run.open_session()
    run.start_gateway()
    run.publish(run.options.rate)
    run.wait_stored(run.n // 4)
    with run.db.table_lock():
        progress(f"{run.name}: readings locked (ACCESS EXCLUSIVE) for {run.options.outage_s} s")
        time.sleep(run.options.outage_s)
    progress(f"{run.name}: lock released")


def broker_restart_graceful(run: ScenarioRun) -> None:
    """SIGTERM the broker mid-stream (it writes its snapshot on the way out), start it again on the
    same port and folder; publishers and the gateway reconnect."""
    run.open_session()
    run.start_gateway()
    run.publish(run.options.rate)
    stored = run.wait_stored(run.n // 3)
    run.broker.stop()
    progress(f"{run.name}: broker stopped (SIGTERM) at {stored}+ of {run.n} stored; "
             f"restarting in {run.options.pause_s} s")
    time.sleep(run.options.pause_s)
    run.broker.start()


def broker_kill(run: ScenarioRun, *, after_autosave: bool) -> None:
    """A backlog for the offline gateway session, then SIGKILL to the broker. Before an autosave:
    while the backlog is still being published, once three quarters are PUBACKed (what was queued
    since the last snapshot is gone: the documented window; the publishers resend what was not
    yet acknowledged). After an autosave: once the whole backlog is PUBACKed and a snapshot has
    been written after the last PUBACK (nothing may be lost). Either way the broker restarts from
    its snapshot and the gateway drains what it kept."""
    run.open_session()
    run.broker.stop()  # graceful: the snapshot now holds the gateway's session
    run.broker.start()
    restarted = time.time()
    persistence = run.broker.persistence
    run.publish(None)
    if after_autosave:
        wait_for_snapshot(run, run.wait_published())
    else:
        acked = run.wait_acked(3 * run.n // 4)
        progress(f"{run.name}: {acked} of {run.n} PUBACKed ({persistence.describe()})")
    run.snapshot = snapshot = run.broker.last_snapshot() or restarted
    run.kill_generations = [publisher.generation for publisher, _ in run.publishers]
    run.broker.stop(kill=True)
    progress(f"{run.name}: broker SIGKILLed {time.time() - snapshot:.1f} s after its last "
             f"snapshot; restarting")
    run.broker.start()
    run.start_gateway()


def wait_for_snapshot(run: ScenarioRun, last_ack: float) -> None:
    """Until the broker writes a snapshot after ``last_ack``: with `autosave_on_changes` by
    publishing the probe device's filler messages (not counted), with a time interval by waiting
    up to one interval and 10 s."""
    persistence = run.broker.persistence
    if persistence.autosave_on_changes:
        filler = run.fill_until_snapshot(last_ack, limit=2 * persistence.autosave_interval)
        progress(f"{run.name}: backlog of {run.n} queued; {filler} filler message(s) from the "
                 f"probe device (not counted) until the broker saved ({persistence.describe()})")
    else:
        wait = persistence.autosave_interval + 10.0
        progress(f"{run.name}: backlog of {run.n} queued; waiting up to {wait:.0f} s for an "
                 f"autosave ({persistence.describe()})")
        deadline = time.monotonic() + wait
        while (run.broker.last_snapshot() or 0) <= last_ack and time.monotonic() < deadline:
            time.sleep(0.1)
    if (run.broker.last_snapshot() or 0) <= last_ack:
        progress(f"{run.name}: the broker wrote no snapshot after the last PUBACK")


def gateway_failover(run: ScenarioRun) -> None:
    """Two gateways share the subscription slots (`pledgewatch gateway --slots 2`, leases in the
    database); SIGKILL one mid-stream and do not restart it: the other takes its slots over."""
    if not gateway_has_option("--slots"):
        raise Skipped("`pledgewatch gateway` has no --slots option in this checkout")
    args = ["--slots", str(FAILOVER_SLOTS)]
    group = f"chaos{run.token}"
    victim = run.start_gateway(args, shared_group=group)
    run.start_gateway(args, shared_group=group)
    run.probe()
    time.sleep(2.0)  # both hold their share of the slots
    run.publish(run.options.rate)
    stored = run.wait_stored(run.n // 3)
    held = held_slots(victim.log.read_text(errors="replace"))
    victim.kill()
    progress(f"{run.name}: gateway 1 of 2 (slots held per its log: {held or 'none'}) SIGKILLed at "
             f"{stored}+ of {run.n} stored; not restarted")


def held_slots(log: str) -> list[int]:
    """Slots a gateway's log says it took and has not released since (diagnostics only)."""
    held: set[int] = set()
    for verb, slot in re.findall(r"(took|released) slot (\d+)", log):
        (held.add if verb == "took" else held.discard)(int(slot))
    return sorted(held)


SCENARIO_STEPS: dict[str, Callable[[ScenarioRun], None]] = {
    "gateway_sigkill": gateway_sigkill,
    "db_outage": db_outage,
    "broker_restart_graceful": broker_restart_graceful,
    "broker_kill_before_autosave": lambda run: broker_kill(run, after_autosave=False),
    "broker_kill_after_autosave": lambda run: broker_kill(run, after_autosave=True),
    "gateway_failover": gateway_failover,
    "table_lock": table_lock,
}


class DeviceFleet:
    """The scenario's devices as the simulator runs them (firmware_sim: aiomqtt, an outbox per
    device, store confirmations) in a thread of their own, instead of the acking publishers."""

    def __init__(self, run: ScenarioRun) -> None:
        self.specs = [replace(make_device(run.tenant, "warehouse", i + 1, 7), device_id=device)
                      for i, device in enumerate(run.devices)]
        self.run = run
        self.stats = FleetStats()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="chaos-fleet", daemon=True)

    def _main(self) -> None:
        async def fleet() -> FleetStats:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            target = self.run.broker.target
            return await run_fleet(
                self.specs, host=target.host, port=target.port, protocol="5",
                rate_hz=self.run.options.rate / len(self.specs), duration_s=None,
                state_dir=self.run.dir / "fleet", stop=self._stop, drain_timeout_s=60.0,
                on_progress=self._progress, progress_every_s=0.2, outbox_max=1_000_000)
        try:
            self.stats = asyncio.run(fleet())
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc

    def _progress(self, stats: FleetStats) -> None:
        self.stats = stats

    def start(self) -> DeviceFleet:
        self._thread.start()
        return self

    def wait(self, what: str, predicate: Callable[[FleetStats], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.stats):
            if self.error is not None or time.monotonic() > deadline:
                raise ScenarioError(f"the devices did not reach {what}: {self.stats.published} "
                                    f"published, {self.stats.acknowledged} PUBACKed "
                                    f"({self.error or 'timeout'})")
            time.sleep(0.05)

    def stop(self) -> FleetStats:
        """Stop producing; the devices drain their outboxes (until the store confirms)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)
        if self.error is not None:
            raise ScenarioError(f"the device fleet failed: {self.error!r}")
        return self.stats


def broker_kill_devices(run: ScenarioRun) -> Outcome:
    """broker_kill_before_autosave with simulated devices: the gateway stops (SIGTERM) while they
    publish, the broker queues for its session and is SIGKILLed before its next autosave, then
    restarts with the gateway. What the broker acknowledged and lost is still in the devices'
    outboxes (no store confirmation covers it) and is resent after the reconnect: nothing lost."""
    run.open_session()
    run.broker.stop()  # graceful: the snapshot holds the gateway's session
    run.broker.start()
    run.start_gateway()
    n = run.n
    fleet = DeviceFleet(run).start()
    run.started = time.monotonic()
    fleet.wait("a first store confirmation", lambda s: s.confirmed >= n // 10, 60 + n / 500)
    run.stop_gateways()
    before = fleet.stats.acknowledged
    fleet.wait(f"{n // 2} more PUBACKs for the offline gateway",
               lambda s: s.acknowledged >= before + n // 2, 60 + n / 500)
    queued = fleet.stats.acknowledged - before
    run.broker.stop(kill=True)
    progress(f"{run.name}: broker SIGKILLed with about {queued} PUBACKed messages queued for the "
             f"stopped gateway ({run.broker.persistence.describe()}); restarting both")
    run.broker.start()
    run.start_gateway()
    fleet.wait(f"{n} messages", lambda s: s.published >= n, 60 + n / 500)
    stats = fleet.stop()
    wanted = frozenset((d.device_id, seq) for d in stats.devices.values()
                       for seq in range(d.published))
    final = run._final_count()
    deadline = time.monotonic() + run.options.stall_s
    while not wanted <= final.keys and time.monotonic() < deadline:
        time.sleep(0.25)
        final = run._final_count()
    seconds = time.monotonic() - run.started
    for problem in run.stop_gateways():
        progress(f"{run.name}: {problem}")
    print_line = (f"{run.name} recovered_from_outboxes {stats.resent_unconfirmed} (PUBACKed, "
                  f"unconfirmed, sent again), confirmed {stats.confirmed}")
    progress(print_line)
    stored = len(wanted & final.keys)
    return Outcome(run.name, stats.published, stats.published - stats.pending, stored,
                   final.duplicates, len(wanted) - stored, seconds,
                   note=print_line)


def run_scenario(name: str, db: ChaosDatabase, workdir: Path, options: ChaosOptions) -> Outcome:
    if name == "broker_kill_devices":
        with ScenarioRun(name, db, workdir, options) as run:
            progress(f"{name}: {options.messages} messages from {DEVICES} simulated devices "
                     f"(outboxes, store confirmations), tenant {run.tenant}")
            return broker_kill_devices(run)
    with ScenarioRun(name, db, workdir, options) as run:
        progress(f"{name}: {options.messages} messages from {PUBLISHERS} publishers "
                 f"({DEVICES} devices), tenant {run.tenant}")
        SCENARIO_STEPS[name](run)
        return run.settle()


@dataclass
class Totals:
    lost_outside: int = 0
    in_window: int = 0
    duplicates: int = 0
    failed: int = 0

    def add(self, outcome: Outcome) -> None:
        self.lost_outside += outcome.lost_outside_window
        self.in_window += outcome.in_window
        self.duplicates += outcome.duplicates


def run_chaos_bench(options: ChaosOptions, scenarios: Sequence[str], *, database_url: str | None,
                    workdir: Path | None, out: TextIO | None = None) -> int:
    """Exit code 0 when nothing was lost outside the broker window, nothing stored twice and every
    scenario ran (a skipped one does not count against it); else 1."""
    out = out or sys.stdout
    totals = Totals()
    for noisy in ("yoyo", "schema", "pledgewatch.embedded"):  # migration chatter on stderr
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-chaos-")))
        try:
            db = (ChaosDatabase.on_server(database_url) if database_url
                  else ChaosDatabase.embedded(workdir))
        except psycopg.Error as exc:
            progress(f"error: cannot prepare the database: {str(exc).strip()}")
            return 1
        stack.callback(db.close)
        persistence = read_persistence(CONFIG.read_text())
        print(f"chaos: {len(scenarios)} scenario(s), {options.messages} messages each "
              f"({READINGS} readings), rate {options.rate:g} msg/s, outage {options.outage_s:g} s;"
              f" broker: mosquitto {mosquitto_version()} (project config: "
              f"{persistence.describe()}); store: {db.where}, "
              f"{db.describe_outage(options.pg_stop)}", file=out, flush=True)
        for name in scenarios:
            try:
                outcome = run_scenario(name, db, workdir, options)
            except Skipped as exc:
                print(f"{name} skipped: {exc}", file=out, flush=True)
                continue
            except (ScenarioError, RuntimeError, OSError, SubprocessError, psycopg.Error) as exc:
                totals.failed += 1
                print(f"{name} failed: {exc}", file=out, flush=True)
                continue
            totals.add(outcome)
            print(outcome.line(), file=out, flush=True)
            if outcome.note:
                print(outcome.note, file=out, flush=True)
            if outcome.window:
                print(f"{name} lost_in_broker_window {outcome.in_window} (documented: acknowledged"
                      f" after the broker's last snapshot before SIGKILL), outside "
                      f"{outcome.lost_outside_window}", file=out, flush=True)
        print(f"lost_in_broker_window {totals.in_window}", file=out)
        print(f"lost_total {totals.lost_outside}", file=out, flush=True)
    ok = totals.lost_outside == 0 and totals.duplicates == 0 and totals.failed == 0
    return 0 if ok else 1
