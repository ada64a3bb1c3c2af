"""Idempotent batch writer: COPY into a staging table, then INSERT ... ON CONFLICT DO NOTHING.

One call writes one batch (readings, dead letters, device status) in one transaction, so the
caller can acknowledge every message of the batch once :func:`write_batch` has returned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from telemetry.contract.payload import Accepted, Reason, StatusChange

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS readings_stage (
    time timestamptz, device_id text COLLATE "C", metric text COLLATE "C", value double precision,
    boot integer, seq bigint, received_at timestamptz
) ON COMMIT DELETE ROWS
"""
_READING_COLUMNS = "(time, device_id, metric, value, boot, seq, received_at)"
_READING_TYPES = ["timestamptz", "text", "text", "float8", "int4", "int8", "timestamptz"]
# Dead letters: one row per distinct bad message (reason + topic + full payload bytes, hashed),
# however often it arrives: a broker redelivery after a gateway crash, or a device resending the
# same bytes, adds to `occurrences` instead of a second row. Only the first
# DEAD_LETTER_KEEP_BYTES of a payload are kept, with its full size and SHA-256.
DEAD_LETTER_KEEP_BYTES = 4096  # the same cut as migration 0012's trigger for direct inserts
_DEAD_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS dead_letters_stage (
    dedupe_key bytea, received_at timestamptz, last_received_at timestamptz, occurrences integer,
    topic text, payload bytea, payload_size integer, payload_sha256 bytea, reason text,
    detail text, device_id text
) ON COMMIT DELETE ROWS
"""
_DEAD_COLUMNS = ("(dedupe_key, received_at, last_received_at, occurrences, topic, payload,"
                 " payload_size, payload_sha256, reason, detail, device_id)")
_DEAD_TYPES = ["bytea", "timestamptz", "timestamptz", "int4", "text", "bytea", "int4", "bytea",
               "text", "text", "text"]
# Rows in key order, so two gateways upserting the same keys cannot deadlock. RETURNING tells
# new rows (xmax = 0) from repeats.
_DEAD_UPSERT = f"""
INSERT INTO dead_letters AS d {_DEAD_COLUMNS}
SELECT * FROM dead_letters_stage ORDER BY dedupe_key
ON CONFLICT (dedupe_key) DO UPDATE SET
    occurrences      = d.occurrences + EXCLUDED.occurrences,
    last_received_at = greatest(d.last_received_at, EXCLUDED.last_received_at)
RETURNING (xmax = 0)
"""

_SEEN = """
INSERT INTO device_status AS s (device_id, tenant, online, last_seen, changed_at, last_boot, last_seq)
SELECT d, t, true, ls, ls, b, q
  FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::int[], %s::bigint[]) AS u(d, t, ls, b, q)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen  = greatest(s.last_seen, EXCLUDED.last_seen),
    changed_at = CASE WHEN s.online THEN s.changed_at ELSE EXCLUDED.changed_at END,
    online     = true,
    last_boot  = CASE WHEN (EXCLUDED.last_boot, EXCLUDED.last_seq)
                           >= (coalesce(s.last_boot, -1), coalesce(s.last_seq, -1))
                      THEN EXCLUDED.last_boot ELSE s.last_boot END,
    last_seq   = CASE WHEN (EXCLUDED.last_boot, EXCLUDED.last_seq)
                           >= (coalesce(s.last_boot, -1), coalesce(s.last_seq, -1))
                      THEN EXCLUDED.last_seq ELSE s.last_seq END
"""

# Dead letters that prove the device itself is talking: it passed the identity checks (registered,
# enabled, on its own tenant's topic) and only what it said was refused. They keep it online (a
# device whose readings are all out of range is faulty, not offline: `last_heard`, while
# `last_seen` stays its last stored reading) and wake the lending engine.
TALKING_REASONS = frozenset({
    Reason.NOT_UTF8, Reason.MALFORMED_JSON, Reason.INVALID_SCHEMA, Reason.MISSING_BOOT_SEQ,
    Reason.DEVICE_MISMATCH, Reason.UNKNOWN_METRIC, Reason.WRONG_TYPE, Reason.NON_FINITE,
    Reason.OUT_OF_RANGE, Reason.TS_IN_FUTURE, Reason.TS_TOO_OLD,
})

_HEARD = """
INSERT INTO device_status AS s (device_id, tenant, online, last_heard, changed_at)
SELECT d.device_id, d.tenant, true, u.heard, u.heard
  FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, heard)
  JOIN devices d ON d.device_id = u.id
ON CONFLICT (device_id) DO UPDATE SET
    last_heard = greatest(s.last_heard, EXCLUDED.last_heard),
    changed_at = CASE WHEN s.online THEN s.changed_at ELSE EXCLUDED.changed_at END,
    online     = true
"""

INGEST_CHANNEL = "pw_ingest"  # NOTIFY on commit: comma-separated ids of devices with new data
NOTIFY_MAX_BYTES = 7000  # PostgreSQL caps a payload at 8000 bytes


def notify_payloads(device_ids: Iterable[str], max_bytes: int = NOTIFY_MAX_BYTES) -> list[str]:
    """Comma-separated ids in payloads that each fit one NOTIFY (``max_bytes`` of UTF-8; an id
    longer than that alone gets a payload of its own)."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for device in sorted(set(device_ids)):
        length = len(device.encode()) + 1
        if current and size + length > max_bytes:
            payloads.append(",".join(current))
            current, size = [], 0
        current.append(device)
        size += length
    if current:
        payloads.append(",".join(current))
    return payloads


# A status applies only if it is at least as new as everything stored for the device (its last
# reading, last refused message, last status): `status_at` is when the status held
# (StatusChange.as_of). A retained status replayed on every gateway (re)subscribe, of unknown age
# (NULL), never overwrites a device's stored state; it only records a device seen for the first
# time.
_STATUS = """
INSERT INTO device_status AS s (device_id, tenant, online, last_seen, changed_at, status_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (device_id) DO UPDATE SET
    online     = EXCLUDED.online,
    changed_at = CASE WHEN s.online = EXCLUDED.online THEN s.changed_at ELSE EXCLUDED.changed_at END,
    last_seen  = CASE WHEN EXCLUDED.online THEN greatest(s.last_seen, EXCLUDED.last_seen)
                      ELSE s.last_seen END,
    status_at  = EXCLUDED.status_at
WHERE EXCLUDED.status_at >= coalesce(greatest(s.last_seen, s.last_heard, s.status_at),
                                     '-infinity')
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    topic: str
    payload: bytes  # all of it: the writer keeps DEAD_LETTER_KEEP_BYTES, its size and hash
    reason: str
    detail: str
    device_id: str | None

    @property
    def dedupe_key(self) -> bytes:
        """SHA-256 of reason, topic and the full payload (as migration 0012 computes it)."""
        return hashlib.sha256(b"%s\0%s\0%s" % (self.reason.encode(), self.topic.encode(),
                                                  self.payload)).digest()


@dataclass(slots=True)
class Batch:
    accepted: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    status: list[StatusChange] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.accepted) + len(self.dead) + len(self.status)


@dataclass(frozen=True, slots=True)
class WriteResult:
    staged: int
    inserted: int
    dead_letters: int  # messages refused (each arrival)
    status_changes: int  # status messages in the batch
    dead_letter_repeats: int = 0  # of them, already stored (a redelivery or identical resend)
    status_ignored: int = 0  # of them, older than what was stored for the device (not applied)

    @property
    def duplicates(self) -> int:
        return self.staged - self.inserted


def _reading_rows(accepted: Iterable[Accepted]) -> Iterable[tuple[object, ...]]:
    for msg in accepted:
        for r in msg.readings:
            yield (msg.device_time, msg.device_id, r.metric, r.value, msg.boot, msg.seq,
                   msg.received_at)


def _last_seen(accepted: Sequence[Accepted]) -> list[list[object]]:
    """Per device: when it was last heard from, and its highest (boot, seq) so far.

    A redelivered old message may arrive last; it must not move the device's (boot, seq) back.
    """
    seen: dict[str, datetime] = {}
    newest: dict[str, Accepted] = {}
    for msg in accepted:
        device = msg.device_id
        if device not in seen or msg.received_at > seen[device]:
            seen[device] = msg.received_at
        prev = newest.get(device)
        if prev is None or (msg.boot, msg.seq) >= (prev.boot, prev.seq):
            newest[device] = msg
    rows = list(newest.values())
    return [
        [m.device_id for m in rows], [m.tenant for m in rows], [seen[m.device_id] for m in rows],
        [m.boot for m in rows], [m.seq for m in rows],
    ]


def _heard(dead: Sequence[DeadLetter]) -> dict[str, datetime]:
    """Per device, the newest receive time of its dead letters that show it talking."""
    heard: dict[str, datetime] = {}
    for d in dead:
        if d.device_id is None or d.reason not in TALKING_REASONS:
            continue
        if d.device_id not in heard or d.received_at > heard[d.device_id]:
            heard[d.device_id] = d.received_at
    return heard


def _copy_readings(cur: psycopg.Cursor[object], table: str, accepted: list[Accepted]) -> int:
    rows = 0
    with cur.copy(f"COPY {table} {_READING_COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(_READING_TYPES)
        for row in _reading_rows(accepted):
            cp.write_row(row)
            rows += 1
    return rows


def _insert_readings(conn: psycopg.Connection, cur: psycopg.Cursor[object],
                     accepted: list[Accepted]) -> tuple[int, int]:
    """(staged, inserted). Fast path: COPY straight into ``readings`` under a savepoint. If any
    row is already stored (a redelivery), roll back to the savepoint and take the idempotent
    path: COPY into a staging table, then INSERT ... ON CONFLICT DO NOTHING."""
    try:
        with conn.transaction():
            staged = _copy_readings(cur, "readings", accepted)
        return staged, staged
    except psycopg.errors.UniqueViolation:
        pass
    cur.execute(_STAGE)
    staged = _copy_readings(cur, "readings_stage", accepted)
    cur.execute(f"INSERT INTO readings {_READING_COLUMNS} SELECT * FROM readings_stage"
                " ON CONFLICT DO NOTHING")
    return staged, cur.rowcount


def _dead_rows(dead: Sequence[DeadLetter]) -> list[tuple[object, ...]]:
    """One row per distinct dead letter of the batch: first and last arrival, arrivals."""
    first: dict[bytes, DeadLetter] = {}
    arrivals: dict[bytes, list[datetime]] = {}
    for d in dead:
        key = d.dedupe_key
        first.setdefault(key, d)
        arrivals.setdefault(key, []).append(d.received_at)
    return [
        (key, min(arrivals[key]), max(arrivals[key]), len(arrivals[key]), d.topic,
         d.payload[:DEAD_LETTER_KEEP_BYTES], len(d.payload), hashlib.sha256(d.payload).digest(),
         d.reason, d.detail, d.device_id)
        for key, d in first.items()
    ]


def _upsert_dead_letters(cur: psycopg.Cursor[object], dead: Sequence[DeadLetter]) -> int:
    """Store the batch's dead letters; returns how many were already stored (repeats)."""
    rows = _dead_rows(dead)
    cur.execute(_DEAD_STAGE)
    with cur.copy(f"COPY dead_letters_stage {_DEAD_COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(_DEAD_TYPES)
        for row in rows:
            cp.write_row(row)
    inserted = cur.execute(_DEAD_UPSERT).fetchall()  # one (is_new,) per distinct dead letter
    return len(dead) - inserted.count((True,))


def write_batch(conn: psycopg.Connection, batch: Batch) -> WriteResult:
    """Write a batch in one transaction; replayed readings are counted, not stored twice."""
    staged = inserted = repeats = 0
    applied: list[str] = []
    with conn.transaction(), conn.cursor() as cur:
        if batch.accepted:
            staged, inserted = _insert_readings(conn, cur, batch.accepted)
            cur.execute(_SEEN, _last_seen(batch.accepted))
        if batch.dead:
            repeats = _upsert_dead_letters(cur, batch.dead)
        heard = _heard(batch.dead)
        if heard:
            cur.execute(_HEARD, (list(heard), list(heard.values())))
        for s in batch.status:
            as_of = s.as_of
            # last_seen of a first-seen device: when the status held; a retained `online` of
            # unknown age counts from its arrival, so the inactivity timeout can retire it.
            seen = as_of if as_of is not None else (s.received_at if s.online else None)
            cur.execute(_STATUS, (s.device_id, s.tenant, s.online, seen, s.received_at, as_of))
            if cur.rowcount:
                applied.append(s.device_id)
        changed = [a.device_id for a in batch.accepted] + applied + list(heard)
        for payload in notify_payloads(changed):
            cur.execute("SELECT pg_notify(%s, %s)", (INGEST_CHANNEL, payload))
    return WriteResult(staged, inserted, len(batch.dead), len(batch.status), repeats,
                       len(batch.status) - len(applied))
