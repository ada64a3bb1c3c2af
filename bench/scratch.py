"""Scratch databases for the benchmarks: a new database, dropped afterwards, on a given server or
on a private embedded PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pledgewatch.embedded import EmbeddedPostgres


@contextmanager
def scratch_database(database_url: str | None, workdir: Path, prefix: str) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<ns>``, dropped afterwards: on ``database_url``'s
    server, or on a private embedded PostgreSQL whose data lives in ``workdir`` (a reused workdir
    still gets a fresh database)."""
    pg: EmbeddedPostgres | None = None
    if database_url:
        server = database_url
    else:
        pg = EmbeddedPostgres(workdir / "postgres").start()
        server = pg.url
    name = f"{prefix}_{time.time_ns()}"
    try:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(server)._replace(path="/" + name))
        finally:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
    finally:
        if pg is not None:
            pg.release()
