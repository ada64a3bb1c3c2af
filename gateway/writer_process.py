"""Where batches are decoded and written: inline, or in a writer process.

Measured on a 2-core machine, paho's network loop alone takes most of one core at full drain, and
sharing the GIL with validation and COPY cost the gateway a third of its throughput. The writer
process moves that work beside the network loop; the gateway still acknowledges a message only
after the writer reports its batch committed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.ingest import Committed, IngestConfig, Ingestor, RawMessage

log = logging.getLogger(__name__)


HOUSEKEEPING = "housekeeping"  # command to the writer process; batches are lists


class WriterGone(RuntimeError):
    """The writer process died or was stopped before it committed a batch."""


@dataclass(frozen=True)
class DbTimeouts:
    """``statement_timeout`` and ``lock_timeout`` of the writer's connection (0 = none): a locked
    table or a stuck statement fails the batch (which is retried, never acknowledged) instead of
    stalling the gateway silently."""

    statement_s: float = 30
    lock_s: float = 10

    def apply(self, database_url: str) -> str:
        """The URL as a conninfo string whose ``options`` set both timeouts on every connection
        (reconnects included); options already in the URL are kept."""
        params = conninfo_to_dict(database_url)
        own = (f"-c statement_timeout={round(self.statement_s * 1000)}"
               f" -c lock_timeout={round(self.lock_s * 1000)}")
        params["options"] = f"{params.get('options') or ''} {own}".strip()
        return make_conninfo("", **params)


# What a failed write was, as the gateway's log and metric name it.
LOCK_TIMEOUT, STATEMENT_TIMEOUT, CANCELED, UNAVAILABLE = (
    "lock_timeout", "statement_timeout", "canceled", "unavailable")
ERROR_KINDS = (LOCK_TIMEOUT, STATEMENT_TIMEOUT, CANCELED, UNAVAILABLE)


def error_kind(exc: BaseException | None, text: str) -> str:
    """The kind of a failed write, from the exception when there is one (SQLSTATE 55P03 is a lock
    timeout, 57014 a cancelled statement), else from the server's (English) message."""
    lowered = text.lower()
    if isinstance(exc, psycopg.errors.LockNotAvailable) or "lock timeout" in lowered:
        return LOCK_TIMEOUT
    if "statement timeout" in lowered:
        return STATEMENT_TIMEOUT
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return CANCELED
    return UNAVAILABLE


def _current_kind(error: str) -> str:
    """Called from inside the ingestor's ``except`` block: the exception being handled says what
    failed."""
    return error_kind(sys.exc_info()[1], error)


@dataclass(frozen=True)
class Retrying:
    error: str
    kind: str = UNAVAILABLE


class BatchWriter(Protocol):
    def start(self) -> None: ...

    def submit(self, items: list[RawMessage], on_retry: Callable[[Retrying], None],
               should_stop: Callable[[], bool]) -> Committed: ...

    def housekeeping(self) -> None:
        """Mark silent devices offline (the gateway calls this on its one timer)."""
        ...

    def close(self) -> None: ...


class InlineWriter:
    """Decode and write in the calling thread."""

    def __init__(self, database_url: str, config: IngestConfig,
                 timeouts: DbTimeouts | None = None) -> None:
        self._ingestor = Ingestor((timeouts or DbTimeouts()).apply(database_url), config)

    def start(self) -> None:
        self._ingestor.connect()

    def submit(self, items: list[RawMessage], on_retry: Callable[[Retrying], None],
               should_stop: Callable[[], bool]) -> Committed:
        attempts = [0]

        def retry(error: str) -> bool:
            on_retry(Retrying(error, _current_kind(error)))
            attempts[0] += 1
            return not (should_stop() and attempts[0] > 5)

        return self._ingestor.ingest(items, retry)

    def housekeeping(self) -> None:
        self._ingestor.housekeeping()

    def close(self) -> None:
        self._ingestor.close()


def _writer_main(conn: Connection, database_url: str, config: IngestConfig,
                 log_level: int) -> None:
    """The writer process: batches in, ``Retrying`` notices and ``Committed`` results out.

    It ignores SIGINT/SIGTERM (a Ctrl-C reaches the whole process group): the gateway decides
    when to stop, and the writer exits when the gateway closes the pipe or goes away.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ingestor = Ingestor(database_url, config)
    try:
        ingestor.connect()
        conn.send("ready")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(f"error: {exc}")
        return

    def notify(error: str) -> bool:
        conn.send(Retrying(error, _current_kind(error)))
        return True

    while True:
        try:
            items = conn.recv()
        except EOFError:
            break
        if items is None:
            break
        if items == HOUSEKEEPING:
            ingestor.housekeeping()
            continue
        try:
            conn.send(ingestor.ingest(items, notify))
        except (BrokenPipeError, ConnectionResetError):
            break  # the gateway died; what was committed is redelivered and deduplicated
    ingestor.close()


class ProcessWriter:
    """Decode and write in a child process (spawned, so it is safe beside paho's threads)."""

    def __init__(self, database_url: str, config: IngestConfig,
                 timeouts: DbTimeouts | None = None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        url = (timeouts or DbTimeouts()).apply(database_url)
        self._process = ctx.Process(
            target=_writer_main, name="pledgewatch-writer",
            args=(child, url, config, logging.getLogger().getEffectiveLevel()),
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()
        if not self._conn.poll(60):
            raise WriterGone("the writer process did not start within 60 s")
        hello = self._conn.recv()
        if hello != "ready":
            self._process.join(5)
            raise WriterGone(f"the writer process could not start: {hello}")

    def submit(self, items: list[RawMessage], on_retry: Callable[[Retrying], None],
               should_stop: Callable[[], bool]) -> Committed:
        self._conn.send(items)
        stop_seen: float | None = None
        while True:
            if self._conn.poll(0.2):
                try:
                    reply = self._conn.recv()
                except EOFError:
                    raise WriterGone("the writer process died") from None
                if isinstance(reply, Committed):
                    return reply
                on_retry(reply)
                continue
            if not self._process.is_alive():
                raise WriterGone(f"the writer process exited ({self._process.exitcode})")
            if should_stop():
                stop_seen = stop_seen or time.monotonic()
                if time.monotonic() - stop_seen > 10:
                    self._process.terminate()
                    raise WriterGone("stopped while the database was unavailable")

    def housekeeping(self) -> None:
        """Ask the writer process to mark silent devices offline (it sends no reply)."""
        try:
            self._conn.send(HOUSEKEEPING)
        except (BrokenPipeError, ConnectionResetError):
            raise WriterGone("the writer process died") from None

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
        self._conn.close()
