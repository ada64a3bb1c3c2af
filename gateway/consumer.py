"""The gateway: subscribe QoS 1 with a persistent session, batch, commit, then acknowledge.

Threads: paho's network thread only enqueues what arrives; the batching thread (the one that calls
:meth:`Gateway.run`) hands each batch to the writer (in a process of its own by default), waits
for its commit, then acknowledges the batch's messages. A message is acknowledged only on the
connection that delivered it: after a reconnect the broker redelivers whatever was not
acknowledged, and the store's dedupe key makes the redelivery harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from gateway.ingest import Committed, IngestConfig, RawMessage
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttTarget, connect_kwargs, new_client
from gateway.writer_process import BatchWriter, InlineWriter, ProcessWriter
from telemetry.contract.payload import Limits
from telemetry.contract.topics import subscription_filters

log = logging.getLogger(__name__)


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

    def ingest(self) -> IngestConfig:
        return IngestConfig(self.limits, self.registry_refresh_s, self.device_offline_after_s)


class Inbound(NamedTuple):
    """One delivered message: a tuple, because the network thread makes one per message."""

    generation: int  # connection it arrived on: acks go only to that connection
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float


# Called after each commit with what the batch did and the commit's wall-clock time. The lending
# service hooks in here to recompute what a batch touched.
CommitHook = Callable[[Committed, float], None]


def _topic_text(msg: mqtt.MQTTMessage) -> str:
    raw = msg._topic  # bytes; msg.topic raises on invalid UTF-8
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


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
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._generation = 0
        self._gen_lock = threading.Lock()
        writer_class = ProcessWriter if self.config.writer_process else InlineWriter
        self._writer: BatchWriter = writer_class(database_url, self.config.ingest())
        self._client = self._make_client()
        self.totals = {"received": 0, "stored": 0, "duplicates": 0, "dead_letters": 0, "acked": 0}

    # --- MQTT side (paho's network thread) -------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client = new_client(self.target, self.config.client_id, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        return client

    def _bump_generation(self) -> None:
        with self._gen_lock:
            self._generation += 1

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        self._bump_generation()
        for topic in subscription_filters(self.config.shared_group, self.config.tenant_filter):
            client.subscribe(topic, qos=1)
        log.info("connected to %s as %s (session present: %s)", self.target.url,
                 self.config.client_id, getattr(flags, "session_present", "?"))
        self.metrics.mqtt_connected.set(1)
        self.connected.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        log.warning("cannot reach the broker at %s; retrying", self.target.url)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        failed = [c for c in codes if c.is_failure]
        if failed:
            log.error("subscription refused by the broker: %s", failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._bump_generation()
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.mqtt_connected.set(0)
        if not self.stop_event.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(
            Inbound(self._generation, msg.mid, msg.qos, _topic_text(msg), bytes(msg.payload),
                    time.time())
        )

    # --- batching side ---------------------------------------------------------------------
    def _collect(self, first: Inbound) -> list[Inbound]:
        items = [first]
        deadline = time.monotonic() + self.config.batch_max_age_ms / 1000
        while len(items) < self.config.batch_max_messages:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    items.append(self._inbox.get(timeout=left))
                except queue.Empty:
                    break
        return items

    def _on_retry(self, error: str) -> None:
        self.metrics.db_errors.inc()

    def _ack(self, items: list[Inbound]) -> int:
        with self._gen_lock:
            current = self._generation
        acked = 0
        ack = self._client.ack
        for generation, mid, qos, *_ in items:
            if generation == current and qos > 0:
                ack(mid, qos)
                acked += 1
        return acked

    def _handle(self, items: list[Inbound]) -> None:
        raw: list[RawMessage] = [i[3:] for i in items]
        done = self._writer.submit(raw, self._on_retry, self.stop_event.is_set)
        acked = self._ack(items)
        self._count(done, len(items), acked)
        if self.on_commit is not None:
            self.on_commit(done, time.time())

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

    def start_mqtt(self) -> None:
        kwargs = connect_kwargs(self.target, persistent=True,
                                session_expiry_s=self.config.session_expiry_s,
                                keepalive=self.config.keepalive_s)
        self._client.connect_async(**kwargs)  # type: ignore[arg-type]
        self._client.loop_start()

    def run(self) -> None:
        """Ingest until :meth:`stop`; then flush, commit, acknowledge and disconnect."""
        self._writer.start()
        self.start_mqtt()
        every = min(5.0, self.config.device_offline_after_s / 2)
        next_housekeeping = time.monotonic() + every
        try:
            while not self.stop_event.is_set():
                self.metrics.inbox.set(self._inbox.qsize())
                try:
                    first = self._inbox.get(timeout=0.2)
                except queue.Empty:
                    first = None
                if first is not None:
                    self._handle(self._collect(first))
                if time.monotonic() >= next_housekeeping:
                    self._writer.housekeeping()
                    next_housekeeping = time.monotonic() + every
            self._flush()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self._writer.close()
            log.info("gateway stopped: %s", self.totals)

    def _flush(self) -> None:
        while True:
            try:
                first = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(self._collect(first))

    def stop(self) -> None:
        self.stop_event.set()
