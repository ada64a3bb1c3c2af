"""The sequencer: one writer at a time (a transaction-scoped advisory lock) takes captured rows
from ``ledger_outbox`` in id order, encodes each as a canonical entry, appends them to the Merkle
log (entries, leaf hashes and every subtree they complete, written with COPY), deletes them from
the outbox and, every ``every_entries`` entries or ``every_seconds`` seconds, signs a tree head —
all in one transaction, so a crash appends a whole batch or none of it.

``on_head`` (a :data:`HeadHook`) is called with each head signed, inside that transaction: the
process wiring passes the notifier's, which queues the head for webhooks and MQTT (this layer
knows nothing of the notifier)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psycopg

from ledger import merkle
from ledger.canonical import entry_text, head_message, loads
from ledger.signing import HeadSigner
from ledger.store import LOCK_KEY, SignedHead, fetch_nodes, latest_head, tree_size

log = logging.getLogger(__name__)

# Called with each head signed, in the transaction that signs it (an exception rolls it back).
HeadHook = Callable[[psycopg.Connection, SignedHead], object]


@dataclass(frozen=True)
class HeadPolicy:
    every_entries: int = 1000  # sign when this many entries are not yet under a signed head
    every_seconds: float = 10.0  # ... or when the oldest unsigned entry is this old


@dataclass(frozen=True)
class Record:
    """One entry to append: where it came from, who it concerns, and its canonical text."""

    source: str
    op: str
    key: str
    parties: Sequence[str]
    text: str


@dataclass(frozen=True)
class AppendResult:
    appended: int
    tree_size: int
    head: SignedHead | None  # signed in this call


def load_compact(conn: psycopg.Connection, size: int) -> merkle.CompactRange:
    nodes = merkle.root_nodes(size)
    found = fetch_nodes(conn, nodes)
    return merkle.CompactRange(size, [found[n] for n in nodes])


def write_records(conn: psycopg.Connection, compact: merkle.CompactRange,
                  records: Iterable[Record]) -> int:
    """Append ``records`` after ``compact`` (the log's current right edge), in this transaction.
    The caller holds the sequencer's lock."""
    nodes: list[tuple[int, int, bytes]] = []
    count = 0
    with conn.cursor() as cur:
        with cur.copy("COPY ledger_entries (leaf_index, source, op, row_key, parties, entry)"
                      " FROM STDIN") as copy:
            copy.set_types(["int8", "text", "text", "text", "text[]", "text"])
            for r in records:
                index = compact.size
                nodes.extend(compact.append(merkle.leaf_hash(r.text.encode())))
                copy.write_row((index, r.source, r.op, r.key, list(r.parties), r.text))
                count += 1
        with cur.copy("COPY ledger_nodes (level, idx, hash) FROM STDIN") as copy:
            copy.set_types(["int2", "int8", "bytea"])
            for node in nodes:
                copy.write_row(node)
    return count


def register_key(conn: psycopg.Connection, signer: HeadSigner) -> None:
    conn.execute("INSERT INTO ledger_keys (key_id, algorithm, public_key) VALUES (%s, %s, %s)"
                 " ON CONFLICT DO NOTHING", (signer.key_id, signer.algorithm, signer.public_key))


def sign_head(conn: psycopg.Connection, signer: HeadSigner, size: int, root: bytes,
              now_ms: int | None = None) -> SignedHead:
    register_key(conn, signer)
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    head = SignedHead(size, root, ts, signer.key_id, signer.public_key,
                      signer.sign(head_message(size, root, ts)), signer.algorithm)
    conn.execute("INSERT INTO ledger_heads (tree_size, root_hash, timestamp_ms, key_id, signature)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (size, root, ts, head.key_id, head.signature))
    return head


def _due(conn: psycopg.Connection, size: int, policy: HeadPolicy, force: bool) -> bool:
    last = latest_head(conn)
    signed = 0 if last is None else last.tree_size
    if size <= signed:
        return False
    if force or size - signed >= policy.every_entries:
        return True
    # the oldest entry not yet under a signed head
    row = conn.execute("SELECT extract(epoch FROM now() - appended_at) FROM ledger_entries"
                       " WHERE leaf_index = %s", (signed,)).fetchone()
    return row is not None and float(row[0]) >= policy.every_seconds


def append_pending(conn: psycopg.Connection, signer: HeadSigner,
                   policy: HeadPolicy = HeadPolicy(), *, batch: int = 5000,
                   force_head: bool = False, on_head: HeadHook | None = None) -> AppendResult:
    """Append up to ``batch`` captured rows and sign a head when one is due (or ``force_head``);
    ``on_head`` is called with it in the same transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        rows = conn.execute(
            "SELECT id, source, op, row_key, parties, payload::text, to_jsonb(created_at) #>> '{}'"
            " FROM ledger_outbox ORDER BY id LIMIT %s", (batch,)).fetchall()
        size = tree_size(conn)
        compact = load_compact(conn, size)
        if rows:
            write_records(conn, compact, (
                Record(r[1], r[2], r[3], r[4],
                       entry_text(r[1], r[2], r[3], r[4], r[6], loads(r[5]))) for r in rows))
            conn.execute("DELETE FROM ledger_outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
        head = None
        if _due(conn, compact.size, policy, force_head):
            head = sign_head(conn, signer, compact.size, compact.root())
            if on_head is not None:
                on_head(conn, head)
        return AppendResult(len(rows), compact.size, head)


def append_records(conn: psycopg.Connection, signer: HeadSigner | None,
                   records: Iterable[Record]) -> AppendResult:
    """Append entries that did not come through the outbox (imports, the benchmark's bulk log),
    and sign a head over them when a signer is given."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        compact = load_compact(conn, tree_size(conn))
        count = write_records(conn, compact, records)
        head = None if signer is None else sign_head(conn, signer, compact.size, compact.root())
        return AppendResult(count, compact.size, head)


def drain(conn: psycopg.Connection, signer: HeadSigner, policy: HeadPolicy = HeadPolicy(), *,
          batch: int = 5000, sign: bool = True,
          on_head: HeadHook | None = None) -> AppendResult:
    """Append everything captured so far; with ``sign``, end with a head over all of it."""
    total = 0
    while True:
        result = append_pending(conn, signer, policy, batch=batch, on_head=on_head)
        total += result.appended
        if result.appended < batch:
            break
    head = result.head
    if sign:
        final = append_pending(conn, signer, policy, batch=batch, force_head=True,
                               on_head=on_head)
        head = final.head or head
        total += final.appended
        result = final
    return AppendResult(total, result.tree_size, head)


def run(database_url: str, signer: HeadSigner, policy: HeadPolicy, stop: threading.Event, *,
        poll_s: float = 0.05, batch: int = 5000, retry_s: float = 1.0,
        on_head: HeadHook | None = None) -> None:
    """The sequencer's loop: append whatever was captured, sleep ``poll_s`` when there was
    nothing, until ``stop`` is set (then append what is left and sign a last head). A lost
    database connection is logged and made again after ``retry_s``."""
    while not stop.is_set():
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not stop.is_set():
                    result = append_pending(conn, signer, policy, batch=batch,
                                            on_head=on_head)
                    if result.head is not None:
                        log.info("ledger: signed head at size %d", result.tree_size)
                    if result.appended < batch:
                        stop.wait(poll_s)
                drain(conn, signer, policy, batch=batch, on_head=on_head)
        except psycopg.OperationalError:
            log.exception("ledger: the database connection failed; connecting again")
            stop.wait(retry_s)
