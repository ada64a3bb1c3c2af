"""The webhook dispatcher: claims due deliveries, POSTs them signed (httpx), records each attempt.

Due deliveries are *claimed* with ``FOR UPDATE SKIP LOCKED`` (the claim counts the attempt and
leases the row until ``next_attempt_at``), POSTed with an HMAC signature
(:mod:`notifier.signing`), and the outcome is recorded: a 2xx delivers; anything else is retried
with exponential backoff and jitter until ``max_attempts``, then the delivery has failed. Every
attempt is logged in ``webhook_attempts`` with its status code, timing and a one-line error that
never quotes the receiver's reply.

Before each attempt the URL's host is resolved and checked again (:mod:`notifier.address_policy`:
public addresses only, unless allow-listed), and the request goes to the address that was checked
(``Host`` and TLS server name stay the URL's host), so a name re-pointed at an internal address
after registration (DNS rebinding) is refused, not followed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from notifier.address_policy import (
    Destination,
    DestinationPolicy,
    RefusedDestination,
    Resolver,
    check_destination,
    resolve,
)
from notifier.config import NotifierConfig
from notifier.events import backoff_s, event_body, event_name
from notifier.metrics import NotifierMetrics
from notifier.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger(__name__)

USER_AGENT = "PledgeWatch-Webhooks/1"
ERROR_MAX = 500


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
                 rand: Callable[[], float] = random.random, resolver: Resolver = resolve,
                 metrics: NotifierMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or NotifierMetrics()
        self.policy = DestinationPolicy.parse(config.webhook_allow)
        self._resolver = resolver
        # trust_env=False: no proxy from the environment, so the checked address is the one
        # connected to.
        self.http = http or httpx.Client(timeout=config.timeout_s, follow_redirects=False,
                                         trust_env=False, headers={"User-Agent": USER_AGENT})
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
            destination = check_destination(delivery.url, self.policy, self._resolver)
            url, extensions = pinned(delivery.url, destination, headers)
            # The reply's body is never read: the log keeps its status code and timing only.
            with self.http.stream("POST", url, content=body, headers=headers,
                                  extensions=extensions) as response:
                code = response.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}"
        except RefusedDestination as exc:
            error = f"refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bad URL must fail its delivery, not the loop
            error = failure(exc)
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
            self.metrics.deliveries.labels(status).inc()
            if status == "failed":
                log.warning("webhook delivery %d failed after %d attempts: %s", delivery.id,
                            delivery.attempt, outcome.error)
        return len(claimed)

    def seconds_to_next(self, conn: psycopg.Connection) -> float | None:
        row = conn.execute(NEXT_DUE).fetchone()
        return None if row is None or row[0] is None else float(row[0])


def pinned(url: str, destination: Destination,
           headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The URL to request so that the connection goes to the checked address, with ``Host``
    (added to ``headers``) and the TLS server name (the ``sni_hostname`` extension, which httpx
    also verifies the certificate against) still the URL's host. ``Connection: close`` keeps a
    connection opened for one host name from carrying a request for another. An allow-listed host
    name (no checked address) is requested as it is."""
    if destination.address is None:
        return url, {}
    parts = httpx.URL(url)
    headers["Host"] = parts.netloc.decode("ascii")
    headers["Connection"] = "close"
    address = str(destination.address)
    extensions: dict[str, Any] = {}
    if parts.scheme == "https" and parts.raw_host.decode("ascii") != address:
        extensions["sni_hostname"] = parts.raw_host.decode("ascii")
    return str(parts.copy_with(host=address)), extensions


# Errors whose message comes from this side (the OS, the TLS library, the timer), never from the
# receiver's bytes; for any other error only its type is kept (a protocol error can quote the
# start of whatever answered, e.g. another service's banner).
_OWN_MESSAGES = (httpx.ConnectError, httpx.TimeoutException, httpx.UnsupportedProtocol,
                 httpx.InvalidURL)


def failure(exc: Exception) -> str:
    """A one-line description of a failed attempt that quotes nothing the receiver sent."""
    name = type(exc).__name__
    if isinstance(exc, _OWN_MESSAGES) and str(exc):
        return f"{name}: {exc}"
    return name

