"""Leases in PostgreSQL: session-level advisory locks held on one connection of their own.

Whoever holds a lease's advisory lock owns what it protects (a gateway's subscription slot, an
engine's shard of the book); when the holder dies its connection closes and the lock goes with it,
so a peer that polls takes it over. Every holder also holds a shared "member" lock on the same
connection; counting those in ``pg_locks`` tells how many are alive, and each holds at most its
fair share ``ceil(N / live)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os

import psycopg


def advisory_key(*parts: str) -> int:
    """A bigint advisory-lock key derived from ``parts`` (stable across processes and hosts)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def fair_share(slots: int, live: int) -> int:
    """The most slots one of ``live`` gateways may hold (itself counted, so at least 1 live)."""
    return math.ceil(slots / max(1, live))


def lock_ids(key: int) -> tuple[int, int]:
    """(classid, objid) under which ``pg_locks`` shows a bigint advisory key."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


_COUNT = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
)


class LeaseConnection:
    """The one connection that holds this process's leases. Used from one thread only.

    Every method raises :class:`psycopg.Error` when the connection is lost; the caller then
    treats every lease as gone (the server released them when the session ended)."""

    def __init__(self, database_url: str, name: str, timeout_s: float) -> None:
        self.database_url = database_url
        self.name = name
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self.held: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self, member: int) -> None:
        """Connect and join as a live member. A stalled network is noticed within the timeout
        (TCP user timeout and keepalives on both ends), not after minutes."""
        self.close()
        ms = max(1000, int(self.timeout_s * 1000))
        conn = psycopg.connect(
            self.database_url, autocommit=True, connect_timeout=max(2, math.ceil(self.timeout_s)),
            application_name=f"{self.name[:40]} lease pid {os.getpid()}",
            keepalives=1, keepalives_idle=max(1, ms // 2000), keepalives_interval=1,
            keepalives_count=3, tcp_user_timeout=ms,
        )
        try:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('idle_in_transaction_session_timeout', '0', false),"
                " set_config('tcp_keepalives_idle', %s, false),"
                " set_config('tcp_keepalives_interval', '1', false),"
                " set_config('tcp_keepalives_count', '3', false),"
                " pg_advisory_lock_shared(%s)",
                (str(ms), str(max(1, ms // 2000)), member),
            )
        except psycopg.Error:
            conn.close()
            raise
        self._conn = conn
        self.held = set()

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            raise psycopg.OperationalError("the lease connection is closed")
        return self._conn

    def check(self) -> None:
        """Raises unless the connection (and so every lease on it) is alive."""
        self._db().execute("SELECT 1")

    def members(self, member: int) -> int:
        row = self._db().execute(_COUNT, lock_ids(member)).fetchone()
        return int(row[0]) if row else 0

    def try_acquire(self, key: int) -> bool:
        if key in self.held:  # advisory locks nest: never take one twice
            return True
        row = self._db().execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            self.held.add(key)
            return True
        return False

    def release(self, key: int) -> None:
        if key in self.held:
            self._db().execute("SELECT pg_advisory_unlock(%s)", (key,))
            self.held.discard(key)

    def close(self) -> None:
        """Close the connection: the server releases every lease on it at once."""
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail any way
                self._conn.close()
        self._conn = None
        self.held = set()
