"""Checking the log, as any party can: a whole log (exported, or read from the database) against
its signed heads; one entry against a signed head someone kept (inclusion); today's log against an
older head someone kept (consistency); and the database's current rows against their latest
entries (a row changed behind the capture triggers' back)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import psycopg

from ledger import merkle
from ledger.signing import SignatureError
from ledger.store import SignedHead, consistency_proof, heads, latest_head, root_at

EXPORT_FORMAT = "pledgewatch-ledger/1"


@dataclass
class Report:
    entries: int = 0
    heads: int = 0
    root: bytes = merkle.EMPTY_ROOT
    problems: list[str] = field(default_factory=list)
    first_bad_entry: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, entry: int | None = None) -> None:
        if entry is not None and self.first_bad_entry is None:
            self.first_bad_entry = entry
        self.problems.append(message)


def check_log(entries: Iterable[tuple[int, str, bytes | None]], signed: Iterable[SignedHead], *,
              public_key: bytes | None = None, max_problems: int = 20) -> Report:
    """Recompute every leaf hash and the root at every signed head's size.

    ``entries``: (leaf index, canonical entry text, the leaf hash stored beside it or None), in
    index order. Names the first entry whose text no longer matches its stored leaf hash and the
    first head whose root the entries no longer give (with the range of entries it covers).
    Signatures are checked with ``public_key`` when given (a key the party pinned), else with
    each head's own key."""
    report = Report()
    pending = sorted(signed, key=lambda h: h.tree_size)
    for head in pending:
        try:
            head.verify(public_key)
        except SignatureError as exc:
            report.fail(f"head at size {head.tree_size}: {exc}")
    sha = hashlib.sha256
    stack: list[bytes] = []
    size = 0
    h_i = 0
    previous = 0
    while h_i < len(pending) and pending[h_i].tree_size == 0:
        h_i += 1
    for index, text, stored in entries:
        if index != size:
            report.fail(f"entry {size} is missing (the next one is {index})", size)
            break
        leaf = sha(b"\x00" + text.encode()).digest()
        if stored is not None and stored != leaf and len(report.problems) < max_problems:
            report.fail(f"entry {index} no longer matches its leaf hash: it was changed after "
                        "it was appended", index)
        # the compact range, inline (this loop is the 1,000,000-entry verification)
        h = leaf
        n = size
        while n & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        size += 1
        while h_i < len(pending) and pending[h_i].tree_size == size:
            head = pending[h_i]
            root = merkle.fold_range(stack)
            if root != head.root_hash:
                report.fail(f"the signed head at size {size} does not match the entries: one of "
                            f"entries {previous}..{size - 1} was changed", previous)
            previous = size
            report.heads += 1
            h_i += 1
    report.entries = size
    report.root = merkle.fold_range(stack) if stack else merkle.EMPTY_ROOT
    for head in pending[h_i:]:
        report.fail(f"a signed head covers {head.tree_size} entries but the log has {size}: "
                    "entries were removed", size)
    return report


# --- the database -------------------------------------------------------------------------------

def db_entries(conn: psycopg.Connection, batch: int = 20_000
               ) -> Iterator[tuple[int, str, bytes | None]]:
    with conn.transaction(), conn.cursor(name="ledger_verify") as cur:
        cur.itersize = batch
        cur.execute("SELECT e.leaf_index, e.entry, n.hash FROM ledger_entries e"
                    " LEFT JOIN ledger_nodes n ON n.level = 0 AND n.idx = e.leaf_index"
                    " ORDER BY e.leaf_index")
        for index, text, stored in cur:
            yield index, text, None if stored is None else bytes(stored)


def all_heads(conn: psycopg.Connection) -> list[SignedHead]:
    out: list[SignedHead] = []
    while True:
        page = heads(conn, 10_000, len(out), ascending=True)
        out.extend(page)
        if len(page) < 10_000:
            return out


def check_database(conn: psycopg.Connection, *, public_key: bytes | None = None) -> Report:
    return check_log(db_entries(conn), all_heads(conn), public_key=public_key)


# --- exports --------------------------------------------------------------------------------------

def export(conn: psycopg.Connection, out: IO[str]) -> tuple[int, int]:
    """The whole log as JSON lines: a header, every entry (its exact canonical text as a JSON
    string), then every signed head. Returns (entries, heads)."""
    out.write(json.dumps({"type": "log", "format": EXPORT_FORMAT}) + "\n")
    count = 0
    for index, text, _stored in db_entries(conn):
        out.write(json.dumps({"type": "entry", "leaf_index": index, "entry": text},
                             ensure_ascii=False) + "\n")
        count += 1
    signed = all_heads(conn)
    for head in signed:
        out.write(json.dumps({"type": "head", **head.to_json()}) + "\n")
    return count, len(signed)


def read_export(lines: Iterable[str]) -> tuple[list[tuple[int, str, bytes | None]],
                                               list[SignedHead]]:
    entries: list[tuple[int, str, bytes | None]] = []
    signed: list[SignedHead] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item: dict[str, Any] = json.loads(line)
            kind = item["type"]
            if kind == "entry":
                entries.append((int(item["leaf_index"]), str(item["entry"]), None))
            elif kind == "head":
                signed.append(SignedHead.from_json(item))
            elif kind != "log" or item.get("format") != EXPORT_FORMAT:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError, SignatureError) as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return entries, signed


# --- one entry, or a kept head ------------------------------------------------------------------

def check_inclusion(bundle: dict[str, Any], head: SignedHead, *,
                    public_key: bytes | None = None) -> None:
    """An entry with its audit path (as the API or `pledgewatch ledger prove` give it) against a
    signed head a party kept. Raises :class:`merkle.ProofError` or :class:`SignatureError`."""
    head.verify(public_key)
    try:
        index = int(bundle["leaf_index"])
        size = int(bundle["tree_size"])
        text = str(bundle["entry"])
        path = [bytes.fromhex(p) for p in bundle["audit_path"]]
    except (KeyError, ValueError, TypeError) as exc:
        raise merkle.ProofError(f"not an inclusion proof: {exc}") from None
    if size != head.tree_size:
        raise merkle.ProofError(f"the proof is for size {size}, the head for "
                                f"{head.tree_size}")
    merkle.verify_inclusion(merkle.leaf_hash(text.encode()), index, size, path, head.root_hash)


def check_kept_head(conn: psycopg.Connection, kept: SignedHead, *,
                    public_key: bytes | None = None) -> SignedHead:
    """Today's log extends the head a party kept: its signature, then a consistency proof from
    its size to the latest signed head. Returns the latest head."""
    kept.verify(public_key)
    latest = latest_head(conn)
    if latest is None or latest.tree_size < kept.tree_size:
        raise merkle.ProofError(f"the log has no signed head covering the kept head's "
                                f"{kept.tree_size} entries: entries were removed")
    latest.verify(public_key)
    if root_at(conn, latest.tree_size) != latest.root_hash:
        raise merkle.ProofError("the log's stored hashes no longer give its latest signed root")
    proof = consistency_proof(conn, kept.tree_size, latest.tree_size)
    merkle.verify_consistency(kept.tree_size, latest.tree_size, kept.root_hash,
                              latest.root_hash, proof)
    return latest


# --- rows against their entries -------------------------------------------------------------------

# source table -> its key as the capture triggers write it (schema/migrations/0014_ledger.sql);
# True where every row has an entry (captured from the start: genesis rows).
CAPTURED: dict[str, tuple[str, bool]] = {
    "programmes": ("t.programme_id", True),
    "drawdowns": ("t.drawdown_id", True),
    "repayments": ("t.id::text", True),
    "receivables": ("t.receivable_id", True),
    "vouchers": ("t.voucher_id", True),
    "voucher_payments": ("t.root_id", True),
    "release_orders": ("t.release_id", True),
    "inspections": ("t.id::text", False),
    "prices": ("t.commodity || '@' || t.time::text", False),
    "limit_snapshots": ("t.id::text", False),
    "alert_events": ("t.id::text", False),
}


@dataclass(frozen=True)
class RowMismatch:
    table: str
    key: str
    leaf_index: int | None  # the latest entry of the row; None: the row has no entry
    gone: bool = False  # the row was deleted

    def describe(self) -> str:
        if self.gone:
            return (f"{self.table} {self.key}: the row of entry {self.leaf_index} is gone "
                    "(deleted behind the ledger's back)")
        if self.leaf_index is None:
            return f"{self.table} {self.key}: no entry in the ledger (written behind its back)"
        return (f"{self.table} {self.key}: the row no longer matches its latest entry "
                f"{self.leaf_index} (changed behind the ledger's back)")


def check_rows(conn: psycopg.Connection) -> list[RowMismatch]:
    """Current rows whose content differs from their latest entry, or that have no entry (rows
    with a capture still waiting in the outbox are left out), and rows of the fully captured
    tables that are gone; ordered by entry."""
    found: list[RowMismatch] = []
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        for table, (key, complete) in CAPTURED.items():
            join = "LEFT JOIN LATERAL" if complete else "JOIN LATERAL"
            rows = conn.execute(
                f"SELECT {key}, e.leaf_index FROM {table} t {join} ("
                f"  SELECT leaf_index, entry FROM ledger_entries e"
                f"  WHERE e.source = %(table)s AND e.row_key = {key}"
                f"  ORDER BY e.leaf_index DESC LIMIT 1) e ON true"
                f" WHERE NOT EXISTS (SELECT 1 FROM ledger_outbox o"
                f"                   WHERE o.source = %(table)s AND o.row_key = {key})"
                f"   AND (e.leaf_index IS NULL"
                f"        OR (e.entry::jsonb -> 'row') IS DISTINCT FROM to_jsonb(t))",
                {"table": table}).fetchall()
            found.extend(RowMismatch(table, r[0], r[1]) for r in rows)
            if complete:  # rows of these tables are never deleted: an entry's row must exist
                gone = conn.execute(
                    f"SELECT e.row_key, max(e.leaf_index) FROM ledger_entries e"
                    f" WHERE e.source = %(table)s AND NOT EXISTS ("
                    f"   SELECT 1 FROM {table} t WHERE {key} = e.row_key)"
                    f" GROUP BY e.row_key", {"table": table}).fetchall()
                found.extend(RowMismatch(table, r[0], r[1], gone=True) for r in gone)
    found.sort(key=lambda m: (m.leaf_index is None, m.leaf_index or 0))
    return found
