"""The ledger's signed tree heads, out as they are signed: the sequencer's ``on_head`` hook
(:data:`ledger.appender.HeadHook`, wired by the process) queues each head in the alerts-out
outbox, in the transaction that signs it, so a head is published exactly when it is committed.

The head becomes an ``alert_events`` row of kind ``ledger_head`` (payload ``{"head": <the signed
head JSON>}``, as ``pledgewatch ledger head`` prints it and ``ledger verify --head`` takes it),
with one ``webhook_deliveries`` row per active webhook that asked for heads (``ledger_heads``),
whatever borrower it is scoped to: heads are public to every party. The notifier then POSTs it
signed like any event (``X-PledgeWatch-Event: ledger.head``) and publishes it at QoS 1, retained,
on the heads topic. Migration 0017 keeps these rows out of the ledger's own capture."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from ledger.store import SignedHead
from notifier.events import LEDGER_HEAD
from notifier.webhook_store import NOTIFY_CHANNEL


def enqueue_head(conn: psycopg.Connection, head: SignedHead) -> int:
    """Queue ``head`` for webhooks and MQTT in the caller's transaction; returns the event id."""
    row = conn.execute("INSERT INTO alert_events (kind, payload) VALUES (%s, %s) RETURNING id",
                       (LEDGER_HEAD, Jsonb({"head": head.to_json()}))).fetchone()
    assert row is not None
    event_id = int(row[0])
    conn.execute("INSERT INTO webhook_deliveries (webhook_id, event_id)"
                 " SELECT id, %s FROM webhooks WHERE active AND ledger_heads", (event_id,))
    conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
    return event_id
