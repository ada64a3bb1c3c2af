"""Versioned migrations with yoyo-migrations; ``pledgewatch migrate`` applies them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from yoyo import get_backend, read_migrations

from schema.timescale import TimeSeriesOptions, time_series_options

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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


def apply_all(database_url: str, options: TimeSeriesOptions | None = None) -> list[str]:
    """Apply every pending migration under yoyo's lock; return the ids applied. ``options`` shape
    the TimescaleDB features (defaults when None)."""
    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock(), time_series_options(options or TimeSeriesOptions()):
            todo = backend.to_apply(migrations)
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
