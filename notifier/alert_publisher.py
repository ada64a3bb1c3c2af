"""The MQTT side of the outbox: publishes events at QoS 1 (paho) and marks them published only
after the broker's PUBACK: alert events on ``<prefix>/<borrower_id>/<facility_id>``, the ledger's
signed heads on the heads topic (``pw/ledger/v1/heads``), retained. The two go in separate
passes, so heads the broker refuses (an ACL without ``topic write pw/ledger/#``) never hold
alerts back, nor the other way round."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from gateway.mqtt import MqttTarget, connect_kwargs, new_client
from notifier.config import NotifierConfig
from notifier.events import event_body, event_topic

log = logging.getLogger(__name__)

ALERTS = "kind <> 'ledger_head'"  # SQL: which outbox rows each pass publishes
HEADS = "kind = 'ledger_head'"
# Heads go out from one notifier at a time (a transaction-scoped advisory lock), in order, so the
# retained head is the newest one published.
HEADS_LOCK = 0x706C6468  # "pldh"


class AlertPublisher:
    """Publishes unpublished alert events at QoS 1; marks them only once the broker acked."""

    def __init__(self, target: MqttTarget, config: NotifierConfig,
                 on_connected: Callable[[], None] | None = None) -> None:
        self.config = config
        self.target = target
        self._on_connected = on_connected
        self.client_id = f"{config.mqtt_client_id}-{secrets.token_hex(4)}"
        self.client = new_client(target, self.client_id, persistent=False)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.connected = threading.Event()
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_publish = self._on_publish
        self._refused: set[int] = set()  # mids the broker answered with a failure (MQTT 5)

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            log.warning("alert publisher: %s refused %s: %s", self.target.url, self.client_id, rc)
            self.connected.clear()
        else:
            self.connected.set()
            if self._on_connected is not None:
                self._on_connected()  # publish what waited for the broker

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: Any, _p: object) -> None:
        if rc.is_failure:  # e.g. 0x87 not authorized: the ACL lacks `topic write pw/alerts/#`
            self._refused.add(mid)

    def start(self) -> None:
        self.client.connect_async(**connect_kwargs(  # type: ignore[arg-type]
            self.target, persistent=False, session_expiry_s=0, keepalive=30))
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def run_once(self, conn: psycopg.Connection) -> int:
        """One pass; returns how many events were published (and marked)."""
        if not self.connected.is_set():
            return 0
        return self._publish(conn, ALERTS) + self._publish(conn, HEADS)

    def _publish(self, conn: psycopg.Connection, kinds: str) -> int:
        with conn.transaction():
            if kinds == HEADS:
                locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                      (HEADS_LOCK,)).fetchone()
                if locked is None or not locked[0]:
                    return 0
            rows = conn.execute(
                "SELECT id, kind, created_at, payload, borrower_id, facility_id FROM alert_events"
                f" WHERE mqtt_published_at IS NULL AND kind <> 'ping' AND {kinds}"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.config.mqtt_batch,)).fetchall()
            if not rows:
                return 0
            sent = []
            for event_id, kind, created_at, payload, borrower_id, facility_id in rows:
                topic, retain = event_topic(self.config.topic_prefix, self.config.heads_topic,
                                            kind, borrower_id, facility_id)
                body = event_body(event_id, kind, created_at, payload)
                sent.append((event_id, self.client.publish(topic, body, qos=1, retain=retain)))
            deadline = time.monotonic() + self.config.puback_timeout_s
            acked = [event_id for event_id, info in sent
                     if _acked(info, deadline) and info.mid not in self._refused]
            self._refused.difference_update(info.mid for _e, info in sent)
            if acked:
                conn.execute("UPDATE alert_events SET mqtt_published_at = now()"
                             " WHERE id = ANY(%s)", (acked,))
        if len(acked) < len(sent):
            log.warning("alert publisher: %d of %d events not acknowledged (or refused) by %s;"
                        " will retry", len(sent) - len(acked), len(sent), self.target.url)
        return len(acked)


def _acked(info: mqtt.MQTTMessageInfo, deadline: float) -> bool:
    try:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
    except (RuntimeError, ValueError):
        return False
    return info.is_published()

