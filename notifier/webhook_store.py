"""Webhooks in the store, as the API manages them: register, list, read, deactivate, read the
delivery log (each delivery with its attempts) and queue a ``ping``. Deliveries themselves are
created by the outbox trigger and sent by :mod:`notifier.webhooks`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from notifier.address_policy import DestinationPolicy, Resolver, check_destination, resolve
from notifier.events import check_webhook_url, event_name

NOTIFY_CHANNEL = "pw_notify"  # the outbox trigger's wake-up call (empty payload)

WEBHOOK_COLUMNS = ("id, url, borrower_id, description, active, created_by, created_at,"
                   " deactivated_at, ledger_heads")


def create_webhook(conn: psycopg.Connection, url: str, secret: str, borrower_id: str | None,
                   description: str, created_by: str, *, policy: DestinationPolicy,
                   resolver: Resolver = resolve, ledger_heads: bool = False) -> dict[str, Any]:
    """Register a receiver. ValueError (a one-line reason) when the URL is malformed or its host
    is not a public address and not allow-listed by ``policy`` (checked again at every delivery).
    ``ledger_heads``: it also receives the ledger's signed tree heads (``ledger.head`` events),
    whatever its borrower scope."""
    check_webhook_url(url)
    check_destination(url, policy, resolver)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"INSERT INTO webhooks (url, secret, borrower_id, description, created_by,"
            f" ledger_heads) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {WEBHOOK_COLUMNS}",
            (url, secret, borrower_id, description, created_by, ledger_heads)).fetchone()
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

