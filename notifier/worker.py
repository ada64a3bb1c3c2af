"""The notifier: one background loop that drains the alert outbox to webhooks and MQTT.

A trigger on ``alerts`` (migration 0005) writes each raise, escalation, acknowledgement and
resolution to ``alert_events`` in the same transaction as the change, plus one
``webhook_deliveries`` row per active webhook that covers the alert's borrower. The
:class:`Notifier` drains both, so an event raised while no notifier runs is sent when one starts,
and several processes can share the work:

- webhooks (:mod:`notifier.webhooks`): due deliveries are *claimed* with ``FOR UPDATE SKIP
  LOCKED`` (the claim counts the attempt and leases the row until ``next_attempt_at``), POSTed
  with an HMAC signature, and the outcome is recorded: a 2xx delivers; anything else is retried
  with exponential backoff and jitter until ``max_attempts``, then the delivery has failed.
  Every attempt is logged.
- MQTT (:mod:`notifier.alert_publisher`): unpublished events are locked the same way, published
  at QoS 1 on ``<prefix>/<borrower_id>/<facility_id>`` and marked published only after their
  PUBACK.

The ledger's signed heads travel the same way (:mod:`notifier.ledger_heads`): a ``ledger_head``
event, delivered to the webhooks that asked for heads and published, retained, on the heads topic.

Both are at least once: a receiver dedupes on the event id (the body's ``id``).

The signature and how receivers check it: :mod:`notifier.signing`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import httpx
import psycopg

from gateway.mqtt import MqttTarget
from lending.store import ALERTS_CHANNEL
from notifier.alert_publisher import AlertPublisher
from notifier.config import NotifierConfig
from notifier.metrics import NotifierMetrics
from notifier.webhook_store import NOTIFY_CHANNEL
from notifier.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


class Notifier:
    """Runs the webhook dispatcher and the MQTT publisher in one background thread. It wakes on
    ``LISTEN pw_alerts``/``pw_notify``, when the next retry falls due, and at least every
    ``poll_s``. ``mqtt=None``: webhooks only."""

    def __init__(self, database_url: str, config: NotifierConfig | None = None,
                 mqtt: MqttTarget | None = None, *, http: httpx.Client | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.database_url = database_url
        self.config = config or NotifierConfig()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.metrics = NotifierMetrics()
        self.dispatcher = WebhookDispatcher(self.config, http, rand, metrics=self.metrics)
        self.publisher = (AlertPublisher(mqtt, self.config, self._wake.set)
                          if mqtt is not None else None)
        self.ready = threading.Event()  # listening and working
        self._thread: threading.Thread | None = None

    def start(self) -> Notifier:
        if self.publisher is not None:
            self.publisher.start()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.publisher is not None:
            self.publisher.stop()
        self.dispatcher.close()

    def run_once(self, conn: psycopg.Connection) -> int:
        """One pass of both; returns the work done (deliveries attempted + events published)."""
        done = self.dispatcher.run_once(conn)
        if self.publisher is not None:
            done += self.publisher.run_once(conn)
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as listen, \
                        psycopg.connect(self.database_url, autocommit=True) as conn:
                    listen.execute(f"LISTEN {ALERTS_CHANNEL}")
                    listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.ready.set()
                    while not self._stop.is_set():
                        if self.run_once(conn):
                            continue  # more may be waiting
                        self._sleep(listen, self._wait_s(conn))
            except psycopg.Error as exc:
                log.warning("notifier: %s; reconnecting", exc)
            except Exception:  # the notifier must outlive one bad pass
                log.exception("notifier: unexpected error; restarting the loop")
            self.ready.clear()
            self._stop.wait(1.0)

    def _wait_s(self, conn: psycopg.Connection) -> float:
        due = self.dispatcher.seconds_to_next(conn)
        wait = self.config.poll_s if due is None else min(due, self.config.poll_s)
        return max(wait, 0.01)

    def _sleep(self, listen: psycopg.Connection, seconds: float) -> None:
        """Until a notification arrives, ``seconds`` pass, or stop() is called."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.is_set():
                self._wake.clear()
                return
            if any(True for _ in listen.notifies(timeout=min(left, 0.2), stop_after=1)):
                for _ in listen.notifies(timeout=0.01):  # drain what arrived with it
                    pass
                return
