"""The log in PostgreSQL: entries, the stored subtree hashes, signed heads and keys; proofs from
O(log n) look-ups; reads scoped to a party (a borrower id; None = the bank)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import merkle
from ledger.canonical import head_message
from ledger.signing import ALGORITHM, SignatureError, verify_signature

LOCK_KEY = 0x706C6467  # "pldg": the advisory lock the one sequencer holds while appending


@dataclass(frozen=True)
class SignedHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    public_key: bytes
    signature: bytes
    algorithm: str = ALGORITHM  # the key's, as ledger_keys records it: ed25519 or sm2

    def message(self) -> bytes:
        return head_message(self.tree_size, self.root_hash, self.timestamp_ms)

    def verify(self, public_key: bytes | None = None) -> None:
        """Check the signature (with ``public_key`` when a party pinned one, else the head's)."""
        key = self.public_key if public_key is None else public_key
        verify_signature(key, self.message(), self.signature, self.algorithm)

    def to_json(self) -> dict[str, Any]:
        """What a party keeps: everything needed to check the signature and later proofs."""
        return {"tree_size": self.tree_size, "root_hash": self.root_hash.hex(),
                "timestamp": self.timestamp_ms, "key_id": self.key_id, "algorithm": self.algorithm,
                "public_key": base64.b64encode(self.public_key).decode(),
                "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedHead:
        try:
            return cls(int(data["tree_size"]), bytes.fromhex(data["root_hash"]),
                       int(data["timestamp"]), str(data["key_id"]),
                       base64.b64decode(data["public_key"], validate=True),
                       base64.b64decode(data["signature"], validate=True),
                       str(data.get("algorithm", ALGORITHM)))
        except (KeyError, ValueError, TypeError) as exc:
            raise SignatureError(f"not a signed tree head: {exc}") from None


HEAD_SQL = ("SELECT h.tree_size, h.root_hash, h.timestamp_ms, h.key_id, k.public_key, h.signature,"
            " k.algorithm FROM ledger_heads h JOIN ledger_keys k USING (key_id)")


def _head(row: Any) -> SignedHead:
    return SignedHead(row[0], bytes(row[1]), row[2], row[3], bytes(row[4]), bytes(row[5]), row[6])


def tree_size(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT max(leaf_index) FROM ledger_entries").fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def latest_head(conn: psycopg.Connection) -> SignedHead | None:
    row = conn.execute(HEAD_SQL + " ORDER BY h.tree_size DESC LIMIT 1").fetchone()
    return None if row is None else _head(row)


def head_at(conn: psycopg.Connection, size: int) -> SignedHead | None:
    row = conn.execute(HEAD_SQL + " WHERE h.tree_size = %s", (size,)).fetchone()
    return None if row is None else _head(row)


def heads(conn: psycopg.Connection, limit: int, offset: int = 0, *,
          ascending: bool = False) -> list[SignedHead]:
    order = "ASC" if ascending else "DESC"
    return [_head(r) for r in conn.execute(
        HEAD_SQL + f" ORDER BY h.tree_size {order} LIMIT %s OFFSET %s", (limit, offset))]


def fetch_nodes(conn: psycopg.Connection, nodes: list[merkle.Node]) -> dict[merkle.Node, bytes]:
    if not nodes:
        return {}
    rows = conn.execute(
        "SELECT level, idx, hash FROM ledger_nodes WHERE (level, idx) IN"
        " (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
        ([n[0] for n in nodes], [n[1] for n in nodes])).fetchall()
    found = {(r[0], r[1]): bytes(r[2]) for r in rows}
    missing = [n for n in nodes if n not in found]
    if missing:
        raise LookupError(f"the log has no stored subtree {missing[0]} (is the tree that big?)")
    return found


def _resolve(conn: psycopg.Connection, ranges: list[merkle.Range]) -> list[bytes]:
    return merkle.resolve(ranges, fetch_nodes(conn, merkle.nodes_for(ranges)))


def inclusion_proof(conn: psycopg.Connection, index: int, size: int) -> list[bytes]:
    return _resolve(conn, merkle.inclusion_ranges(index, size))


def consistency_proof(conn: psycopg.Connection, first: int, second: int) -> list[bytes]:
    return _resolve(conn, merkle.consistency_ranges(first, second))


def root_at(conn: psycopg.Connection, size: int) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    return _resolve(conn, [(0, size)])[0]


def leaf_hash_at(conn: psycopg.Connection, index: int) -> bytes | None:
    row = conn.execute("SELECT hash FROM ledger_nodes WHERE level = 0 AND idx = %s",
                       (index,)).fetchone()
    return None if row is None else bytes(row[0])


def visible(scope: str | None) -> str:
    """SQL: the entry ``e`` is visible to the scope (parameter ``%(scope)s``)."""
    return "TRUE" if scope is None else "e.parties && ARRAY[%(scope)s::text, '*']"  # GIN


def entry(conn: psycopg.Connection, index: int, scope: str | None) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT e.leaf_index, e.source, e.op, e.row_key, e.parties, e.entry, e.appended_at"
        f" FROM ledger_entries e WHERE e.leaf_index = %(index)s AND {visible(scope)}",
        {"index": index, "scope": scope}).fetchone()
    if row is None:
        return None
    return {"leaf_index": row[0], "table": row[1], "op": row[2], "key": row[3],
            "parties": list(row[4]), "entry": row[5], "appended_at": row[6]}


def entries(conn: psycopg.Connection, scope: str | None, limit: int, offset: int, *,
            table: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
    """Newest first, visible to ``scope``; optionally of one source table and row key."""
    rows = conn.execute(
        "SELECT e.leaf_index, e.source, e.op, e.row_key, e.parties, e.entry, e.appended_at"
        f" FROM ledger_entries e WHERE {visible(scope)}"
        " AND (%(table)s::text IS NULL OR e.source = %(table)s)"
        " AND (%(key)s::text IS NULL OR e.row_key = %(key)s)"
        " ORDER BY e.leaf_index DESC LIMIT %(limit)s OFFSET %(offset)s",
        {"scope": scope, "table": table, "key": key, "limit": limit, "offset": offset}).fetchall()
    return [{"leaf_index": r[0], "table": r[1], "op": r[2], "key": r[3], "parties": list(r[4]),
             "entry": r[5], "appended_at": r[6]} for r in rows]
