"""Versioned migrations with yoyo-migrations; ``pledgewatch migrate`` applies them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import sql
from yoyo import get_backend, read_migrations

from schema.timescale import TimeSeriesOptions, plan_time_series, time_series_plan

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
TIME_SERIES_MIGRATION = "0002_timescale"
log = logging.getLogger(__name__)


class NotMigratedError(RuntimeError):
    pass


def yoyo_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(("postgresql+psycopg", *parts[1:]))


def pending(database_url: str) -> list[str]:
    backend = get_backend(yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


def apply_all(database_url: str, options: TimeSeriesOptions | None = None, *,
              on_warning: Callable[[str], object] | None = None) -> list[str]:
    """Apply every pending migration under yoyo's lock; return the ids applied. ``options`` shape
    the TimescaleDB features (defaults when None). When 0002 is pending, whether TimescaleDB can
    be used is decided first; a fallback to plain PostgreSQL is told to ``on_warning`` (logged
    when None). Raises :class:`schema.timescale.TimescaleSetupError` when TimescaleDB is there
    but fails for another reason, and nothing is applied."""
    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            todo = backend.to_apply(migrations)
            plan = None
            if any(m.id == TIME_SERIES_MIGRATION for m in todo):
                plan = plan_time_series(database_url, options or TimeSeriesOptions())
                if plan.warning is not None:
                    if on_warning is None:
                        log.warning("%s", plan.warning)
                    else:
                        on_warning(plan.warning)
            with time_series_plan(plan):
                backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def require_migrated(database_url: str) -> None:
    todo = pending(database_url)
    if todo:
        raise NotMigratedError(
            "the database is not migrated (pending: " + ", ".join(todo) + "); "
            "run `pledgewatch migrate` first"
        )


def close_for_copying(admin_conn: Any, dbname: str) -> None:
    """Make ``dbname`` safe to copy with ``CREATE DATABASE … TEMPLATE``: refuse new connections
    and end the ones it has. TimescaleDB's job scheduler keeps a connection to every database
    with the extension (and reconnects), and a template with any session open cannot be copied.
    ``admin_conn`` is an autocommit connection to another database of the same server."""
    admin_conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
        sql.Identifier(dbname)))
    admin_conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
