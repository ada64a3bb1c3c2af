"""The database side of the gateway: decode a batch of raw messages and commit it, retrying until
the store takes it. Runs inline or in a writer process of its own (:mod:`gateway.writer_process`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from gateway.confirm import Outgoing, confirmations
from telemetry.contract.payload import (
    Accepted,
    DeviceInfo,
    Limits,
    Reason,
    Rejected,
    StatusChange,
    decode_message,
)
from telemetry.queries import load_devices, mark_stale_offline
from telemetry.writer import Batch, DeadLetter, WriteResult, write_batch

log = logging.getLogger(__name__)

# (topic, payload, received time as epoch seconds, MQTT retain flag): what crosses to the writer,
# cheap to pickle. retain is True for a retained message the broker replays on (re)subscribe.
RawMessage = tuple[str, bytes, float, bool]
# The same without the retain flag (taken as a live message): callers from before the flag.
LegacyRawMessage = tuple[str, bytes, float]
AnyRawMessage = RawMessage | LegacyRawMessage


@dataclass(frozen=True)
class IngestConfig:
    limits: Limits = field(default_factory=Limits)
    registry_refresh_s: float = 1.0
    device_offline_after_s: float = 120
    confirm_stored: bool = True  # build store confirmations for devices (gateway.confirm)


@dataclass(frozen=True)
class Committed:
    """What one committed batch did; compact, so it crosses a process boundary cheaply."""

    result: WriteResult
    seconds: float
    messages: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    devices: frozenset[str] = frozenset()
    device_times: tuple[float, ...] = ()  # epoch seconds of each accepted message
    confirmations: tuple[Outgoing, ...] = ()  # to publish once the batch is acknowledged

    @staticmethod
    def of(batch: Batch, result: WriteResult, seconds: float, *,
           confirm: bool = False) -> Committed:
        return Committed(
            result, seconds, len(batch), dict(Counter(d.reason for d in batch.dead)),
            frozenset(m.device_id for m in batch.accepted),
            tuple(m.device_time.timestamp() for m in batch.accepted),
            confirmations(
                (m.tenant, m.device_id, m.boot, m.seq) for m in batch.accepted) if confirm else (),
        )


class DeviceRegistry:
    """Device identities, reloaded from the store when an unknown id shows up and on every
    housekeeping pass (both rate-limited), so that disabling a device takes effect without a
    restart."""

    def __init__(self, refresh_s: float) -> None:
        self.devices: dict[str, DeviceInfo] = {}
        self._refresh_s = refresh_s
        self._loaded_at = float("-inf")

    def load(self, conn: psycopg.Connection) -> None:
        self.devices = load_devices(conn)
        conn.commit()
        self._loaded_at = time.monotonic()

    def maybe_reload(self, conn: psycopg.Connection) -> bool:
        if time.monotonic() - self._loaded_at < self._refresh_s:
            return False
        self.load(conn)
        return True


def decode_batch(items: Sequence[AnyRawMessage], registry: DeviceRegistry, limits: Limits,
                 reload: Callable[[], bool]) -> Batch:
    """Decode every message; on an unknown device reload the registry once per batch."""
    batch = Batch()
    devices = registry.devices
    reloaded = False
    for item in items:
        topic, payload, received = item[0], item[1], item[2]
        retained = len(item) > 3 and bool(item[3])
        received_at = datetime.fromtimestamp(received, UTC)
        out = decode_message(topic, payload, received_at, devices, limits, retained)
        if (isinstance(out, Rejected) and out.reason is Reason.UNKNOWN_DEVICE and not reloaded
                and reload()):
            reloaded = True
            devices = registry.devices
            out = decode_message(topic, payload, received_at, devices, limits, retained)
        if isinstance(out, Accepted):
            batch.accepted.append(out)
        elif isinstance(out, StatusChange):
            batch.status.append(out)
        else:
            batch.dead.append(DeadLetter(received_at, topic, payload, out.reason.value,
                                         out.detail, out.device_id))
    return batch


class Ingestor:
    """Owns the database connection and the device registry of one writer."""

    def __init__(self, database_url: str, config: IngestConfig) -> None:
        self.database_url = database_url
        self.config = config
        self.registry = DeviceRegistry(config.registry_refresh_s)
        self._conn: psycopg.Connection | None = None

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=5)
            self.registry.load(self._conn)
        return self._conn

    def connect(self) -> None:
        self._db()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail any way
                self._conn.close()
        self._conn = None

    def ingest(self, items: Sequence[AnyRawMessage], on_retry: Callable[[str], bool]
               ) -> Committed:
        """Commit the batch, retrying with backoff while the database is unavailable.

        ``on_retry(error)`` is told of each failure and returns False to give up (re-raise).
        """
        delay = 0.2
        while True:
            try:
                conn = self._db()
                batch = decode_batch(items, self.registry, self.config.limits,
                                     functools.partial(self.registry.maybe_reload, conn))
                started = time.perf_counter()
                result = write_batch(conn, batch)
                return Committed.of(batch, result, time.perf_counter() - started,
                                    confirm=self.config.confirm_stored)
            except psycopg.OperationalError as exc:
                self.close()
                error = str(exc).strip()[:200]
                if not on_retry(error):
                    raise
                log.warning("database unavailable (%s); holding %d unacknowledged messages, "
                            "retrying in %.1fs", error, len(items), delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def housekeeping(self) -> None:
        """Mark devices silent for longer than the offline timeout as offline, and re-read the
        device registry so that a device disabled or re-enabled since is treated so."""
        try:
            conn = self._db()
            self.registry.maybe_reload(conn)
            gone = mark_stale_offline(conn, timedelta(seconds=self.config.device_offline_after_s))
        except psycopg.OperationalError:
            self.close()
            return
        if gone:
            log.info("%d device(s) went silent and are now offline", len(gone))
