"""Alert notifications out: signed webhooks and an MQTT alert topic, fed by a transactional outbox.

A trigger on ``alerts`` (migration 0005) writes each raise, escalation, acknowledgement and
resolution to ``alert_events`` in the same transaction as the change, plus one
``webhook_deliveries`` row per active webhook that covers the alert's borrower. The
:class:`Notifier` drains both, so an event raised while no notifier runs is sent when one starts,
and several processes can share the work:

- webhooks: due deliveries are *claimed* with ``FOR UPDATE SKIP LOCKED`` (the claim counts the
  attempt and leases the row until ``next_attempt_at``), POSTed with an HMAC signature, and the
  outcome is recorded: a 2xx delivers; anything else is retried with exponential backoff and
  jitter until ``max_attempts``, then the delivery has failed. Every attempt is logged.
- MQTT: unpublished events are locked the same way, published at QoS 1 on
  ``<prefix>/<borrower_id>/<facility_id>`` and marked published only after their PUBACK.

Both are at least once: a receiver dedupes on the event id (the body's ``id``).

Signature: ``X-PledgeWatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
receivers check it with :func:`verify` (or the same three lines in their language).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.mqtt import MqttTarget, connect_kwargs, new_client
from lending.store import ALERTS_CHANNEL

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "pw_notify"  # the outbox trigger's wake-up call (empty payload)
EVENT_HEADER = "X-PledgeWatch-Event"
DELIVERY_HEADER = "X-PledgeWatch-Delivery"
TIMESTAMP_HEADER = "X-PledgeWatch-Timestamp"
SIGNATURE_HEADER = "X-PledgeWatch-Signature"
USER_AGENT = "PledgeWatch-Webhooks/1"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300
ERROR_MAX = 500


# --- signing (pure) -------------------------------------------------------------------------

def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-PledgeWatch-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(secret: str, signature: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Whether ``signature`` (the header value) signs ``body`` with ``secret`` at a timestamp within
    ``tolerance_s`` of ``now`` (either way), so a captured request cannot be replayed later. Any
    of several ``v1=`` entries may match (a sender rotating its secret)."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in signature.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not macs:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, m) for m in macs)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_webhook_url(url: str) -> str:
    """``url`` if it may receive webhooks (http or https, a host, no credentials); else ValueError."""
    if url != url.strip() or any(c.isspace() for c in url):
        raise ValueError("must not contain whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise ValueError("needs a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; receivers authenticate the signature")
    return url


def backoff_s(attempt: int, base_s: float, max_s: float,
              rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1 = after the first failure): ``base × 2^(attempt−1)``
    capped at ``max_s``, with "equal jitter" (half fixed, half random), so successive delays
    never shrink while retries from many deliveries spread out."""
    full = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    return full / 2 + full / 2 * rand()


def event_name(kind: str) -> str:
    return "ping" if kind == "ping" else f"alert.{kind}"


def event_body(event_id: int, kind: str, created_at: datetime, payload: Mapping[str, Any]) -> bytes:
    """The JSON body of a webhook delivery and of the MQTT message (the same bytes for both)."""
    body = {"id": event_id, "type": event_name(kind), "created_at": created_at.isoformat(),
            **payload}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def topic_segment(value: str | None) -> str:
    if not value:
        return "_"
    return "".join("_" if c in "/+#\0" else c for c in value)


def alert_topic(prefix: str, borrower_id: str | None, facility_id: str | None) -> str:
    return f"{prefix.rstrip('/')}/{topic_segment(borrower_id)}/{topic_segment(facility_id)}"


# --- webhooks in the store (used by the API) ------------------------------------------------

WEBHOOK_COLUMNS = ("id, url, borrower_id, description, active, created_by, created_at,"
                   " deactivated_at")


def create_webhook(conn: psycopg.Connection, url: str, secret: str, borrower_id: str | None,
                   description: str, created_by: str) -> dict[str, Any]:
    check_webhook_url(url)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"INSERT INTO webhooks (url, secret, borrower_id, description, created_by)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {WEBHOOK_COLUMNS}",
            (url, secret, borrower_id, description, created_by)).fetchone()
    assert row is not None
    return row


def borrower_exists(conn: psycopg.Connection, borrower_id: str) -> bool:
    return conn.execute("SELECT 1 FROM borrowers WHERE borrower_id = %s",
                        (borrower_id,)).fetchone() is not None


def webhooks(conn: psycopg.Connection, limit: int, offset: int, *, active: bool | None = None,
             borrower_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {WEBHOOK_COLUMNS} FROM webhooks"
            " WHERE (%(a)s::boolean IS NULL OR active = %(a)s)"
            " AND (%(b)s::text IS NULL OR borrower_id = %(b)s)"
            " ORDER BY id DESC LIMIT %(n)s OFFSET %(o)s",
            {"a": active, "b": borrower_id, "n": limit, "o": offset}).fetchall()


def webhook(conn: psycopg.Connection, webhook_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = %s",
                           (webhook_id,)).fetchone()


def deactivate_webhook(conn: psycopg.Connection, webhook_id: int) -> dict[str, Any] | None:
    """Stop a webhook; its pending deliveries are cancelled, its log is kept. Idempotent."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"UPDATE webhooks SET active = false, deactivated_at = coalesce(deactivated_at, now())"
            f" WHERE id = %s RETURNING {WEBHOOK_COLUMNS}", (webhook_id,)).fetchone()
        if row is not None:
            cur.execute("UPDATE webhook_deliveries SET status = 'cancelled',"
                        " last_error = 'webhook deactivated'"
                        " WHERE webhook_id = %s AND status = 'pending'", (webhook_id,))
    return row


DELIVERY_COLUMNS = """d.id, d.webhook_id, d.event_id, e.kind, e.alert_id, d.status, d.attempts,
    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
    d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at, d.created_at,
    coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'attempt', a.attempt, 'started_at', a.started_at, 'duration_ms', a.duration_ms,
                  'status_code', a.status_code, 'error', a.error) ORDER BY a.attempt)
              FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS attempt_log"""


def _delivery_out(row: dict[str, Any]) -> dict[str, Any]:
    row["event"] = event_name(row.pop("kind"))
    return row


def deliveries(conn: psycopg.Connection, webhook_id: int, limit: int, offset: int, *,
               status: str | None = None) -> list[dict[str, Any]]:
    """A webhook's delivery log, newest first, each with its attempts."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
            " JOIN alert_events e ON e.id = d.event_id"
            " WHERE d.webhook_id = %(w)s AND (%(s)s::text IS NULL OR d.status = %(s)s)"
            " ORDER BY d.id DESC LIMIT %(n)s OFFSET %(o)s",
            {"w": webhook_id, "s": status, "n": limit, "o": offset}).fetchall()
    return [_delivery_out(r) for r in rows]


def enqueue_ping(conn: psycopg.Connection, webhook_id: int, by: str) -> dict[str, Any]:
    """A ``ping`` event delivered to this webhook only (never published on MQTT)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        event = cur.execute(
            "INSERT INTO alert_events (kind, payload) VALUES ('ping', %s) RETURNING id",
            (Jsonb({"webhook_id": webhook_id, "requested_by": by}),)).fetchone()
        assert event is not None
        delivery = cur.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_id) VALUES (%s, %s) RETURNING id",
            (webhook_id, event["id"])).fetchone()
        assert delivery is not None
        cur.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        row = cur.execute(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
                          " JOIN alert_events e ON e.id = d.event_id WHERE d.id = %s",
                          (delivery["id"],)).fetchone()
    assert row is not None
    return _delivery_out(row)


# --- the dispatcher -------------------------------------------------------------------------

@dataclass(frozen=True)
class NotifierConfig:
    max_attempts: int = 8
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    timeout_s: float = 5.0
    topic_prefix: str = "pw/alerts/v1"
    poll_s: float = 1.0  # longest sleep between passes (retries due, a missed NOTIFY)
    batch: int = 16  # deliveries claimed per pass
    concurrency: int = 4  # deliveries sent at once
    mqtt_batch: int = 200  # events published per pass
    mqtt_client_id: str = "pledgewatch-notifier"  # a random suffix keeps processes apart
    puback_timeout_s: float = 10.0

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery stays claimed: longer than sending the whole batch."""
        return self.timeout_s * math.ceil(self.batch / self.concurrency) + 30.0


@dataclass(frozen=True)
class Claimed:
    id: int
    attempt: int
    url: str
    secret: str
    event_id: int
    kind: str
    created_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.active
    ORDER BY d.next_attempt_at, d.id LIMIT %(n)s
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, last_attempt_at = now(),
        next_attempt_at = now() + make_interval(secs => %(lease)s)
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.attempts, d.webhook_id, d.event_id
)
SELECT c.id, c.attempts, w.url, w.secret, e.id, e.kind, e.created_at, e.payload
FROM claimed c JOIN webhooks w ON w.id = c.webhook_id JOIN alert_events e ON e.id = c.event_id
ORDER BY c.id
"""

NEXT_DUE = """
SELECT extract(epoch FROM min(d.next_attempt_at) - now())
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND w.active
"""


class WebhookDispatcher:
    """Claims due deliveries, POSTs them signed, records each attempt and its consequence."""

    def __init__(self, config: NotifierConfig, http: httpx.Client | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.config = config
        self.http = http or httpx.Client(timeout=config.timeout_s, follow_redirects=False,
                                         headers={"User-Agent": USER_AGENT})
        self._owns_http = http is None
        self._rand = rand
        self._pool = ThreadPoolExecutor(max(1, config.concurrency), thread_name_prefix="webhook")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._owns_http:
            self.http.close()

    def claim(self, conn: psycopg.Connection) -> list[Claimed]:
        rows = conn.execute(CLAIM, {"n": self.config.batch, "lease": self.config.lease_s}).fetchall()
        return [Claimed(*row) for row in rows]

    def send(self, delivery: Claimed) -> Outcome:
        body = event_body(delivery.event_id, delivery.kind, delivery.created_at, delivery.payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event_name(delivery.kind),
            DELIVERY_HEADER: str(delivery.id),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(delivery.secret, timestamp, body),
        }
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            with self.http.stream("POST", delivery.url, content=body, headers=headers) as response:
                code = response.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}: {_excerpt(response)}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a bad URL must fail its delivery, not the loop
            error = f"{type(exc).__name__}: {exc}"
        return Outcome(started, (time.perf_counter() - t0) * 1000, code,
                       error[:ERROR_MAX].replace("\x00", "\ufffd") if error else None)

    def record(self, conn: psycopg.Connection, delivery: Claimed, outcome: Outcome) -> str:
        """Log the attempt and move the delivery on; returns its new status. The update only
        applies while this claim still holds (same attempt count), so a notifier whose lease ran
        out cannot overwrite a newer attempt."""
        if outcome.ok:
            status, delay = "delivered", 0.0
        elif delivery.attempt >= self.config.max_attempts:
            status, delay = "failed", 0.0
        else:
            status = "pending"
            delay = backoff_s(delivery.attempt, self.config.backoff_base_s,
                              self.config.backoff_max_s, self._rand)
        with conn.transaction():
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms,"
                " status_code, error) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (delivery.id, delivery.attempt, outcome.started_at, outcome.duration_ms,
                 outcome.status_code, outcome.error))
            conn.execute(
                "UPDATE webhook_deliveries SET status = %(s)s, last_status_code = %(c)s,"
                " last_error = %(e)s, delivered_at = CASE WHEN %(s)s = 'delivered' THEN now() END,"
                " next_attempt_at = now() + make_interval(secs => %(d)s)"
                " WHERE id = %(id)s AND attempts = %(a)s AND status = 'pending'",
                {"s": status, "c": outcome.status_code, "e": outcome.error, "d": delay,
                 "id": delivery.id, "a": delivery.attempt})
        return status

    def run_once(self, conn: psycopg.Connection) -> int:
        """One pass: claim, send concurrently, record. Returns how many were attempted."""
        claimed = self.claim(conn)
        if not claimed:
            return 0
        for delivery, outcome in zip(claimed, self._pool.map(self.send, claimed), strict=True):
            status = self.record(conn, delivery, outcome)
            if status == "failed":
                log.warning("webhook delivery %d failed after %d attempts: %s", delivery.id,
                            delivery.attempt, outcome.error)
        return len(claimed)

    def seconds_to_next(self, conn: psycopg.Connection) -> float | None:
        row = conn.execute(NEXT_DUE).fetchone()
        return None if row is None or row[0] is None else float(row[0])


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", "replace").strip()


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
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, kind, created_at, payload, borrower_id, facility_id FROM alert_events"
                " WHERE mqtt_published_at IS NULL AND kind <> 'ping' ORDER BY id LIMIT %s"
                " FOR UPDATE SKIP LOCKED", (self.config.mqtt_batch,)).fetchall()
            if not rows:
                return 0
            sent = []
            for event_id, kind, created_at, payload, borrower_id, facility_id in rows:
                topic = alert_topic(self.config.topic_prefix, borrower_id, facility_id)
                body = event_body(event_id, kind, created_at, payload)
                sent.append((event_id, self.client.publish(topic, body, qos=1)))
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
        self.dispatcher = WebhookDispatcher(self.config, http, rand)
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
