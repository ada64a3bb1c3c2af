"""Several engines split the book: ``N`` shards, each held by one engine through a lease.

A facility belongs to shard ``crc32(id) mod N`` (stable across processes and hosts). An engine
assesses only the facilities of the shards it holds; a shard's lease is a session-level advisory
lock on the engine's lease connection (:mod:`schema.leases`), so when an engine dies its shards
are free at once and a peer that polls takes them over and assesses their facilities. Live
engines are counted from a shared "member" lock; each holds at most ``ceil(N / live)`` shards, and
one holding more than that hands the surplus back, so a new engine gets its share within a poll
or two.

With one shard (the default) there are no leases: every engine assesses everything, which is
safe (a facility is assessed under a transaction-level advisory lock) but does not scale.
"""

from __future__ import annotations

import logging
import zlib

import psycopg

from schema.leases import LeaseConnection, advisory_key, fair_share

log = logging.getLogger(__name__)

MAX_SHARDS = 1024


def shard_of(facility_id: str, shards: int) -> int:
    """The shard a facility belongs to (0 when there is one shard)."""
    return zlib.crc32(facility_id.encode()) % shards if shards > 1 else 0


def shard_key(shards: int, shard: int) -> int:
    return advisory_key("pledgewatch-engine-shard", str(shards), str(shard))


def member_key(shards: int) -> int:
    return advisory_key("pledgewatch-engine-member", str(shards))


class ShardLeases:
    """The shards this engine holds. :meth:`poll` (from the engine's thread) takes free shards up
    to the fair share and hands back any surplus; it returns the shards gained since the last
    poll, so the engine assesses their facilities. A lost lease connection loses every shard (a
    peer takes them over; assessing is idempotent, so a moment of overlap does no harm)."""

    def __init__(self, database_url: str, shards: int, name: str = "engine",
                 timeout_s: float = 10.0) -> None:
        if not 1 < shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 2..{MAX_SHARDS}, got {shards}")
        self.shards = shards
        self.held: set[int] = set()
        self._member = member_key(shards)
        self._lease = LeaseConnection(database_url, name, timeout_s)

    def owns(self, facility_id: str) -> bool:
        return shard_of(facility_id, self.shards) in self.held

    def poll(self) -> set[int]:
        """Rebalance; the shards newly held (to be assessed now)."""
        try:
            if not self._lease.connected:
                self._lease.connect(self._member)
                self.held = set()
            share = fair_share(self.shards, self._lease.members(self._member))
            for shard in sorted(self.held, reverse=True)[: max(0, len(self.held) - share)]:
                self._lease.release(shard_key(self.shards, shard))
                self.held.discard(shard)
            gained: set[int] = set()
            for shard in range(self.shards):
                if len(self.held) >= share:
                    break
                if shard not in self.held and self._lease.try_acquire(shard_key(self.shards,
                                                                                 shard)):
                    self.held.add(shard)
                    gained.add(shard)
            return gained
        except psycopg.Error as error:
            if self.held:
                log.warning("lending engine: lost the shard leases (%s); a peer takes them over",
                            str(error).strip().splitlines()[0] if str(error) else error)
            self._lease.close()
            self.held = set()
            return set()

    def close(self) -> None:
        """Hand every shard back at once (a graceful stop)."""
        self._lease.close()
        self.held = set()
