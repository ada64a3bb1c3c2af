"""The gateway: subscribe QoS 1 with persistent sessions, batch, commit, then acknowledge.

Slots: the gateway subscribes through ``slots`` fixed MQTT sessions (client ids from
:func:`gateway.lease.slot_client_id`), and connects only those whose lease it holds in PostgreSQL
(:mod:`gateway.lease`). Several gateway processes share the slots; when one dies its leases go
with its database connection and a peer takes the slots over within a poll, inheriting each
session's unacknowledged backlog. With one slot (the default) the gateway uses its client id as
before, and a second process with the same id waits as a standby.

Threads: each held slot's paho network thread only enqueues what arrives; the lease thread polls
the leases (and drops every slot at once if its lease connection is lost); the batching thread
(the one that calls :meth:`Gateway.run`) hands each batch to the writer (in a process of its own by
default), waits for its commit, then acknowledges the batch's messages. A message is acknowledged
only on the connection that delivered it: after a reconnect the broker redelivers whatever was not
acknowledged, and the store's dedupe key makes the redelivery harmless.

Memory: the inbox never holds more than ``slots x receive_maximum`` messages, however long the
database stalls. Each slot client announces an MQTT 5 Receive Maximum, so a broker that honours it
has at most that many unacknowledged messages out to the slot. Mosquitto before 2.0.13 stops
honouring it after the first acknowledgements (and MQTT 3.1.1 has none), so the gateway enforces
the bound itself: a full inbox blocks the slot's network thread, which stops reading its socket,
and TCP flow control leaves the rest queued at the broker. Messages of a connection that is gone
are dropped from the inbox (the broker redelivers them).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import psycopg

from gateway import MAX_SLOTS
from gateway.confirm import Outgoing
from gateway.ingest import Committed, IngestConfig, RawMessage
from gateway.lease import member_key, slot_client_id, slot_key
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttTarget, connect_kwargs, new_client
from gateway.writer_process import (
    BatchWriter,
    DbTimeouts,
    InlineWriter,
    ProcessWriter,
    Retrying,
)
from schema.leases import LeaseConnection, fair_share
from telemetry.contract.payload import Limits
from telemetry.contract.topics import subscription_filters

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with the same id
# Subscribed to (and dropped again) before a graceful disconnect: its SUBACK says the broker has
# processed every acknowledgement sent before it. No device topic matches it (they have five
# levels), and the gateway's account may read pw/v1/#.
BARRIER_TOPIC = "pw/v1/ack-barrier"
BROKER_STORE_TOPIC = "$SYS/broker/store/messages/count"
BARRIER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    client_id: str = "pledgewatch-gateway-1"
    shared_group: str | None = None
    tenant_filter: str = "+"
    session_expiry_s: int = 7 * 86400
    keepalive_s: int = 30
    batch_max_messages: int = 2000
    batch_max_age_ms: int = 20
    limits: Limits = field(default_factory=Limits)
    device_offline_after_s: float = 120
    registry_refresh_s: float = 1.0
    writer_process: bool = True
    slots: int = 1  # fixed subscription slots shared by every gateway with this client id
    lease_poll_s: float = 1.0  # how often leases are checked, taken over and rebalanced
    receive_maximum: int = 5000  # MQTT 5: unacknowledged messages the broker may send per slot
    statement_timeout_s: float = 30  # on the writer's connection (0 = none)
    lock_timeout_s: float = 10  # on the writer's connection (0 = none)
    confirm_stored: bool = True  # tell devices which messages are stored (gateway.confirm)
    broker_stats: bool = False  # read Mosquitto's $SYS queue depth (rumqttd disconnects for it)

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and {MAX_SLOTS} (got {self.slots})")
        if self.slots > 1 and not self.shared_group:
            raise ValueError(f"{self.slots} slots need a shared subscription group: each slot is "
                             "one member of $share/<group>/...")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be between 1 and 65535 "
                             f"(got {self.receive_maximum})")
        if not 0 < self.lease_poll_s <= 60:
            raise ValueError(f"lease_poll_s must be above 0 and at most 60 (got {self.lease_poll_s})")
        if self.statement_timeout_s < 0 or self.lock_timeout_s < 0:
            raise ValueError("statement and lock timeouts must be 0 (none) or more")

    def ingest(self) -> IngestConfig:
        return IngestConfig(self.limits, self.registry_refresh_s, self.device_offline_after_s,
                            self.confirm_stored)

    def timeouts(self) -> DbTimeouts:
        return DbTimeouts(self.statement_timeout_s, self.lock_timeout_s)


class Inbound(NamedTuple):
    """One delivered message: a tuple, because the network thread makes one per message. The
    last four fields are what the writer gets (a :data:`RawMessage`)."""

    slot: int  # the slot (session) that delivered it
    generation: int  # connection it arrived on: acks go only to that connection
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float
    retain: bool


# Called after each commit (and after its messages are acknowledged) with what the batch did and
# the commit's wall-clock time. The lending service hooks in here to recompute what a batch
# touched; after-commit steps (e.g. confirmations to devices) belong here too.
CommitHook = Callable[[Committed, float], None]


def _topic_text(msg: mqtt.MQTTMessage) -> str:
    raw = msg._topic  # bytes; msg.topic raises on invalid UTF-8
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


class SlotState(Enum):
    IDLE = "idle"  # lease not held here
    HELD = "held"  # lease held, client connected (or connecting)
    RELEASING = "releasing"  # the batching thread is asked to flush and disconnect it
    DRAINED = "drained"  # disconnected after a flush; the lease thread unlocks it


class Slot:
    """One subscription slot: a fixed client id, its paho client, its lease key."""

    def __init__(self, index: int, client_id: str, key: int, client: mqtt.Client) -> None:
        self.index = index
        self.client_id = client_id
        self.key = key
        self.client = client
        self.state = SlotState.IDLE
        self.generation = -1  # the live connection's number; -1 = none
        self.connected = False
        self.subscribed = False
        self.taken_over = False
        self.running = False  # paho's network thread started
        self.barrier = threading.Event()  # the broker answered the SUBSCRIBE sent before a
        self.barrier_mid: int | None = None  # graceful disconnect
        self.last_suback_mid: int | None = None
        self.sys_mid: int | None = None
        self.lease_lost = False  # held while the lease connection was down: take it again
        self.put = 0  # messages it put in the inbox (written by its network thread only)
        self.taken = 0  # ... and the batching thread took out (written by that thread only)


class Gateway:
    def __init__(
        self,
        database_url: str,
        target: MqttTarget,
        config: GatewayConfig | None = None,
        metrics: GatewayMetrics | None = None,
        on_commit: CommitHook | None = None,
    ) -> None:
        self.database_url = database_url
        self.target = target
        self.config = config or GatewayConfig()
        self.metrics = metrics or GatewayMetrics()
        self.on_commit = on_commit
        self.stop_event = threading.Event()
        self.connected = threading.Event()  # at least one held slot is connected
        self.subscribed = threading.Event()  # ... and subscribed
        self._inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._room = threading.Condition()  # a slot's network thread waits here while it is full
        self._full_waiters = 0
        self.backpressure_waits = 0  # times a network thread waited for room
        self.stale_dropped = 0  # messages of a lost connection dropped from the inbox
        self.inbox_high_water = 0  # most messages the inbox ever held
        self.in_hand = 0  # messages of the batch being written
        self._generations = itertools.count(1)
        self._gen_lock = threading.Lock()
        self._slot_lock = threading.Lock()  # slot state changes and (dis)connects
        writer_class = ProcessWriter if self.config.writer_process else InlineWriter
        self._writer: BatchWriter = writer_class(database_url, self.config.ingest(),
                                                 self.config.timeouts())
        c = self.config
        self._slots = [
            Slot(i, cid, slot_key(c.shared_group, cid), self._make_client(cid))
            for i, cid in enumerate(slot_client_id(c.client_id, c.slots, i) for i in range(c.slots))
        ]
        for slot in self._slots:
            slot.client.user_data_set(slot)
        self._client = self._slots[0].client  # slot 0's client (the only one by default)
        self._member = member_key(c.shared_group, c.client_id)
        self._leases = LeaseConnection(database_url, c.client_id,
                                       timeout_s=min(10.0, max(1.0, 2 * c.lease_poll_s)))
        self._lease_thread = threading.Thread(target=self._lease_loop, name="gateway-leases",
                                              daemon=True)
        self._leases_stop = threading.Event()
        self._wake = threading.Event()
        self._release_requested = False
        self._lease_error_logged = False
        self._stalled_since: float | None = None
        self._batch_started = time.monotonic()
        self.totals = {"received": 0, "stored": 0, "duplicates": 0, "dead_letters": 0, "acked": 0}
        self.metrics.inbox.set_function(self._inbox.qsize)
        self.metrics.inbox_high_water.set_function(lambda: self.inbox_high_water)
        self.metrics.stalled.set_function(self._stalled_for)

    @property
    def inbox_bound(self) -> int:
        """The most messages the inbox can hold: slots x receive maximum (each slot at most its
        receive maximum)."""
        return self.config.slots * self.config.receive_maximum

    def inbox_depth(self) -> int:
        return self._inbox.qsize()

    def held_slots(self) -> list[int]:
        return [s.index for s in self._slots if s.state is not SlotState.IDLE]

    # --- MQTT side (paho's network threads) ------------------------------------------------
    def _make_client(self, client_id: str) -> mqtt.Client:
        client = new_client(self.target, client_id, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.message_callback_add(BROKER_STORE_TOPIC, self._on_broker_store)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        return client

    def _on_broker_store(self, _c: mqtt.Client, _slot: Slot, msg: mqtt.MQTTMessage) -> None:
        """Mosquitto's count of messages it holds (every ``sys_interval``): queue depth."""
        try:
            self.metrics.broker_store_messages.set(int(msg.payload))
        except ValueError:
            log.debug("ignored a malformed %s: %r", BROKER_STORE_TOPIC, msg.payload[:40])

    def _on_connect(self, client: mqtt.Client, slot: Slot, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the connection of %s: %s", slot.client_id, rc)
            return
        with self._gen_lock:
            slot.generation = next(self._generations)
            slot.connected = True
        for topic in subscription_filters(self.config.shared_group, self.config.tenant_filter):
            client.subscribe(topic, qos=1)
        if self.config.broker_stats:  # QoS 0, never acknowledged
            _rc, slot.sys_mid = client.subscribe(BROKER_STORE_TOPIC, qos=0)
        log.info("connected to %s as %s (slot %d, session present: %s)", self.target.url,
                 slot.client_id, slot.index, getattr(flags, "session_present", "?"))
        self._connection_changed()

    def _on_connect_fail(self, _c: mqtt.Client, slot: Slot) -> None:
        log.warning("cannot reach the broker at %s (%s); retrying", self.target.url,
                    slot.client_id)

    def _on_subscribe(self, _c: mqtt.Client, slot: Slot, mid: int, codes: Any, _p: Any) -> None:
        slot.last_suback_mid = mid  # the SUBACK may beat subscribe()'s return to the caller
        if mid == slot.barrier_mid:
            slot.barrier.set()  # whatever the broker answered: it has read what came before
            return
        if mid == slot.sys_mid:
            return  # broker statistics are optional
        failed = [c for c in codes if c.is_failure]
        if failed:
            log.error("subscription of %s refused by the broker: %s", slot.client_id, failed)
            return
        slot.subscribed = True
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, slot: Slot, _f: Any, rc: Any, _p: Any) -> None:
        with self._gen_lock:
            slot.generation = -1  # what it delivered is dropped when taken: the broker resends it
            slot.connected = slot.subscribed = False
        self._connection_changed()
        if getattr(rc, "value", None) == SESSION_TAKEN_OVER:
            slot.taken_over = True
            client.disconnect()  # no automatic reconnect: the lease thread gives the slot up
            log.warning("slot %d (%s) was taken over by another client with the same id; "
                        "giving it up", slot.index, slot.client_id)
            self._wake.set()
        elif getattr(rc, "is_failure", True) and not self.stop_event.is_set():
            log.warning("%s disconnected from the broker (%s); reconnecting", slot.client_id, rc)

    def _on_message(self, _c: mqtt.Client, slot: Slot, msg: mqtt.MQTTMessage) -> None:
        generation = slot.generation
        if generation < 0:
            return  # the slot is being disconnected: not acknowledged, the broker sends it again
        if slot.put - slot.taken >= self.config.receive_maximum and not self._wait_for_room(
                slot, generation):
            return  # the connection is going away: the broker delivers this one again
        self._inbox.put(Inbound(slot.index, generation, msg.mid, msg.qos, _topic_text(msg),
                                bytes(msg.payload), time.time(), bool(msg.retain)))
        slot.put += 1
        depth = self._inbox.qsize()
        if depth > self.inbox_high_water:
            self.inbox_high_water = depth

    def _wait_for_room(self, slot: Slot, generation: int) -> bool:
        """Backpressure: the slot's network thread stops reading its socket until the batching
        thread has taken some of its messages (the rest waits at the broker). False when the
        connection is being closed meanwhile."""
        self.backpressure_waits += 1
        with self._room:
            self._full_waiters += 1
            try:
                while slot.put - slot.taken >= self.config.receive_maximum:
                    if slot.generation != generation:
                        return False
                    self._room.wait(0.05)
            finally:
                self._full_waiters -= 1
        return True

    def _wake_producers(self) -> None:
        if self._full_waiters:
            with self._room:
                self._room.notify_all()

    def _connection_changed(self) -> None:
        connected = [s for s in self._slots if s.connected]
        self.metrics.mqtt_connected.set(len(connected))
        if connected:
            self.connected.set()
        else:
            self.connected.clear()
        if not any(s.subscribed for s in connected):
            self.subscribed.clear()

    # --- slots and leases (the lease thread) -----------------------------------------------
    def _start_slot(self, slot: Slot) -> None:
        """Connect with the slot's session (clean start off): the broker redelivers whatever the
        previous holder left unacknowledged."""
        c = self.config
        kwargs = connect_kwargs(self.target, persistent=True, session_expiry_s=c.session_expiry_s,
                                keepalive=c.keepalive_s, receive_maximum=c.receive_maximum)
        slot.taken_over = False
        slot.state = SlotState.HELD
        slot.client.connect_async(**kwargs)  # type: ignore[arg-type]
        slot.client.loop_start()
        slot.running = True

    def _stop_slot(self, slot: Slot, *, graceful: bool) -> None:
        """Disconnect the slot's client. ``graceful``: first make sure the broker has processed
        the acknowledgements already sent (a SUBSCRIBE round trip: the broker handles a
        connection's packets in order), so that a peer that takes the session over right after
        the lease is released is not sent them again."""
        with self._gen_lock:
            was_connected = slot.connected
            slot.generation = -1  # nothing more of it is acknowledged or waits for room
        with self._room:
            self._room.notify_all()
        if graceful and was_connected and slot.running:
            slot.barrier.clear()
            rc, slot.barrier_mid = slot.client.subscribe(BARRIER_TOPIC, qos=0)
            if slot.last_suback_mid == slot.barrier_mid:
                slot.barrier.set()
            if rc == mqtt.MQTT_ERR_SUCCESS and not slot.barrier.wait(BARRIER_TIMEOUT_S):
                log.warning("%s: the broker did not answer within %.0f s before the disconnect",
                            slot.client_id, BARRIER_TIMEOUT_S)
            slot.client.unsubscribe(BARRIER_TOPIC)
        if slot.running:
            slot.client.disconnect()
            slot.client.loop_stop()
            slot.running = False
        with self._gen_lock:
            slot.connected = slot.subscribed = False
        self._connection_changed()

    def _held_count(self) -> None:
        self.metrics.slots_held.set(len(self.held_slots()))

    def _lease_loop(self) -> None:
        while not self._leases_stop.is_set():
            try:
                self._lease_poll()
            except psycopg.Error as exc:
                self._lease_lost(exc)
            except Exception:
                log.exception("slot lease poll failed; retrying")
            self._wake.wait(self.config.lease_poll_s)
            self._wake.clear()

    def _lease_poll(self) -> None:
        leases = self._leases
        if not leases.connected:
            if self.stop_event.is_set():
                return
            try:
                leases.connect(self._member)
            except psycopg.Error as exc:
                if not self._lease_error_logged:
                    log.warning("cannot reach the database for the slot leases (%s); holding no "
                                "slot until it answers", str(exc).strip()[:200])
                    self._lease_error_logged = True
                return
            self._lease_error_logged = False
        leases.check()
        with self._slot_lock:
            for slot in self._slots:
                if not slot.lease_lost:
                    continue
                slot.lease_lost = False
                if slot.state is SlotState.IDLE or slot.taken_over:
                    continue
                if leases.try_acquire(slot.key):
                    log.info("the lease of slot %d (%s) is back", slot.index, slot.client_id)
                else:
                    self._stop_slot(slot, graceful=False)
                    slot.state = SlotState.IDLE
                    log.warning("slot %d (%s) is held by a peer now: given up", slot.index,
                                slot.client_id)
            for slot in self._slots:
                if slot.state is SlotState.DRAINED or (
                        slot.taken_over and slot.state is not SlotState.IDLE):
                    self._stop_slot(slot, graceful=True)
                    leases.release(slot.key)
                    slot.state = SlotState.IDLE
                    log.info("released slot %d (%s)", slot.index, slot.client_id)
            self._held_count()
            if self.stop_event.is_set():
                return
            live = leases.members(self._member)
            share = fair_share(self.config.slots, live)
            self.metrics.live_gateways.set(live)
            held = [s for s in self._slots if s.state is not SlotState.IDLE]
            if len(held) > share:
                if not any(s.state is SlotState.RELEASING for s in held):
                    slot = held[-1]
                    slot.state = SlotState.RELEASING
                    self._release_requested = True
                    log.info("%d gateway(s) live: handing slot %d (%s) over (fair share %d)",
                             live, slot.index, slot.client_id, share)
                return
            for slot in self._slots:
                if len(held) >= share:
                    break
                if slot.state is SlotState.IDLE and leases.try_acquire(slot.key):
                    self._start_slot(slot)
                    held.append(slot)
                    self.metrics.slot_takeovers.inc()
                    log.info("took slot %d (%s): connecting with its session (%d gateway(s) "
                             "live)", slot.index, slot.client_id, live)
            self._held_count()

    def _lease_lost(self, exc: BaseException) -> None:
        """The lease connection is gone: the slots keep running (a database outage must not
        also take the gateway off the broker, whose queues may be shallow) until the lease is
        back, or a peer takes the lease and connects with the slot's client id, when the broker
        disconnects this gateway (MQTT allows one connection per client id: no split brain)."""
        with self._slot_lock:
            held = [s for s in self._slots if s.state is not SlotState.IDLE]
            if held:
                log.error("lost the lease connection (%s): keeping slot(s) %s until the lease is "
                          "back or a peer takes the session over", str(exc).strip()[:200],
                          ", ".join(str(s.index) for s in held))
            for slot in held:
                slot.lease_lost = True
            self._leases.close()
            self.metrics.lease_losses.inc()
            self._held_count()

    def _drain_releases(self) -> None:
        """The batching thread hands slots over: flush, commit, acknowledge, disconnect."""
        self._release_requested = False
        self._flush()
        with self._slot_lock:
            for slot in self._slots:
                if slot.state is SlotState.RELEASING:
                    self._stop_slot(slot, graceful=True)
                    slot.state = SlotState.DRAINED
        self._wake.set()

    # --- batching side ---------------------------------------------------------------------
    def _get(self, timeout: float | None) -> Inbound | None:
        """The next message of a live connection (None: nothing within ``timeout``; 0 = do not
        wait). A lost connection's messages are dropped: they cannot be acknowledged, and the
        broker delivers them again to the slot's next connection."""
        slots = self._slots
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            try:
                if deadline is None:
                    item = self._inbox.get_nowait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    item = self._inbox.get(timeout=left)
            except queue.Empty:
                return None
            slot = slots[item.slot]
            slot.taken += 1
            if item.generation == slot.generation:
                return item
            self.stale_dropped += 1

    def _take(self, timeout: float) -> Inbound | None:
        item = self._get(timeout)
        self._wake_producers()
        return item

    def _collect(self, first: Inbound, limit: int | None = None) -> list[Inbound]:
        items = [first]
        limit = limit or self.config.batch_max_messages
        deadline = time.monotonic() + self.config.batch_max_age_ms / 1000
        while len(items) < limit:
            item = self._get(0)
            if item is None:
                self._wake_producers()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                item = self._get(left)
                if item is None:
                    break
            items.append(item)
        self._wake_producers()
        return items

    def _stalled_for(self) -> float:
        since = self._stalled_since
        return 0.0 if since is None else time.monotonic() - since

    def _on_retry(self, notice: Retrying) -> None:
        if self._stalled_since is None:
            self._stalled_since = self._batch_started
        self.metrics.db_errors.inc()
        self.metrics.db_error_kinds.labels(notice.kind).inc()
        log.warning("database %s (%s); the gateway has been stalled for %.1f s, holding %d "
                    "unacknowledged message(s); retrying", notice.kind.replace("_", " "),
                    notice.error, self._stalled_for(), self.in_hand + self._inbox.qsize())

    def _ack(self, items: list[Inbound]) -> int:
        acked = 0
        slots = self._slots
        for slot_index, generation, mid, qos, *_ in items:
            slot = slots[slot_index]
            if generation == slot.generation and qos > 0:
                slot.client.ack(mid, qos)
                acked += 1
        return acked

    def _handle(self, items: list[Inbound]) -> None:
        raw: list[RawMessage] = [i[4:] for i in items]  # (topic, payload, received, retain)
        self.in_hand = len(items)
        self._batch_started = time.monotonic()
        try:
            done = self._writer.submit(raw, self._on_retry, self.stop_event.is_set)
        finally:
            self.in_hand = 0
        acked = self._ack(items)
        if self._stalled_since is not None:
            log.warning("database back: the gateway was stalled for %.1f s", self._stalled_for())
            self._stalled_since = None
        self._count(done, len(items), acked)
        self._after_commit(done)

    def _after_commit(self, done: Committed) -> None:
        """Steps after a batch is committed and acknowledged (the batching thread). Something to
        publish goes out through any connected slot's client (``s.client for s in self._slots if
        s.connected``)."""
        if done.confirmations:
            self._confirm(done.confirmations)
        if self.on_commit is not None:
            self.on_commit(done, time.time())

    def _confirm(self, outgoing: tuple[Outgoing, ...]) -> None:
        """Store confirmations at QoS 0 through a connected slot: a lost one costs the device a
        resend, which the store's dedupe key absorbs."""
        client = next((s.client for s in self._slots if s.connected), None)
        if client is None:
            return
        for topic, payload in outgoing:
            client.publish(topic, payload, qos=0)
        self.metrics.confirmations.inc(len(outgoing))

    def _count(self, done: Committed, received: int, acked: int) -> None:
        m, result = self.metrics, done.result
        m.received.inc(received)
        m.acked.inc(acked)
        m.stored.inc(result.inserted)
        m.duplicates.inc(result.duplicates)
        for reason, n in done.dead_letters.items():
            m.dead_letters.labels(reason).inc(n)
        m.batch_size.observe(received)
        m.commit_latency.observe(done.seconds)
        t = self.totals
        t["received"] += received
        t["acked"] += acked
        t["stored"] += result.inserted
        t["duplicates"] += result.duplicates
        t["dead_letters"] += result.dead_letters

    def run(self) -> None:
        """Ingest until :meth:`stop`; then flush, commit, acknowledge, disconnect every slot and
        release its lease at once (a peer takes it over within one poll)."""
        self._writer.start()
        self._lease_thread.start()
        every = min(5.0, self.config.device_offline_after_s / 2)
        next_housekeeping = time.monotonic() + every
        try:
            while not self.stop_event.is_set():
                if self._release_requested:
                    self._drain_releases()
                first = self._take(0.2)
                if first is not None:
                    self._handle(self._collect(first))
                if time.monotonic() >= next_housekeeping:
                    self._writer.housekeeping()
                    next_housekeeping = time.monotonic() + every
            self._flush()
        finally:
            self._leases_stop.set()
            self._wake.set()
            self._lease_thread.join(30)
            with self._slot_lock:
                for slot in self._slots:
                    self._stop_slot(slot, graceful=True)
                    slot.state = SlotState.IDLE
                self._leases.close()  # every lease released at once
                self._held_count()
            self._writer.close()
            log.info("gateway stopped: %s", self.totals)

    def _flush(self) -> None:
        """Commit and acknowledge what the inbox holds now (not what keeps arriving: that stays
        unacknowledged and is redelivered after the disconnect)."""
        pending = self._inbox.qsize()
        while pending > 0:
            first = self._take(0)
            if first is None:
                return
            batch = self._collect(first, min(pending, self.config.batch_max_messages))
            pending -= len(batch)
            self._handle(batch)

    def stop(self) -> None:
        self.stop_event.set()

