"""`python -m pledgewatch` against a real PostgreSQL: migrate, the gateway's start-up checks and
device provisioning. Each test gets its own database; nothing here contacts a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from schema.migrate import MIGRATIONS_DIR
from schema.timescale import timescaledb_available
from tests.support import PgServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DUMMY_MQTT = "mqtt://127.0.0.1:1"  # nothing listens there; these commands must not need a broker
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/x"


def pledgewatch(database_url: str, state_dir: Path, *args: str, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_DATABASE_URL=database_url, PLEDGEWATCH_MQTT_URL=DUMMY_MQTT,
               PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_METRICS_PORT="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pledgewatch", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def expected_storage(pg: PgServer, url: str) -> str:
    if pg.kind == "embedded-pg":  # the embedded server has no TimescaleDB
        return "plain PostgreSQL"
    with psycopg.connect(url) as conn:
        return "TimescaleDB" if timescaledb_available(conn) else "plain PostgreSQL"


def test_migrate_applies_every_migration_once(pg: PgServer, empty_db: str, tmp_path: Path) -> None:
    first = pledgewatch(empty_db, tmp_path, "migrate")
    assert first.returncode == 0, output(first)
    ids = sorted(p.stem for p in MIGRATIONS_DIR.iterdir() if p.suffix in (".sql", ".py")
                 and p.stem[:4].isdigit())
    assert ids[:3] == ["0001_ingestion", "0002_timescale", "0003_lending"] and len(ids) >= 6
    assert f"applied {len(ids)} migration(s): {', '.join(ids)}" in first.stdout
    storage = f"storage: {expected_storage(pg, empty_db)}"
    assert storage in first.stdout
    assert {"devices", "readings", "dead_letters", "device_status", "facilities", "lots",
            "limit_snapshots", "alerts"} <= tables(empty_db)

    second = pledgewatch(empty_db, tmp_path, "migrate")
    assert second.returncode == 0, output(second)
    assert "applied 0 migration(s)" in second.stdout
    assert "0001" not in second.stdout
    assert storage in second.stdout
    assert not (tmp_path / "postgres").exists(), "a configured database must not start an embedded one"


def test_gateway_refuses_an_unmigrated_database(empty_db: str, tmp_path: Path) -> None:
    proc = pledgewatch(empty_db, tmp_path, "gateway", "--metrics-port", "0")
    text = output(proc)
    assert proc.returncode != 0, text
    assert "not migrated" in text
    assert "pledgewatch migrate" in text
    assert "Traceback" not in text
    # It stopped at the check: it never announced itself as running.
    assert "gateway pledgewatch-gateway-1" not in text


@pytest.mark.parametrize("command", [["gateway", "--metrics-port", "0"], ["migrate"]])
def test_unreachable_database_is_a_clear_error(command: list[str], tmp_path: Path) -> None:
    proc = pledgewatch(UNREACHABLE_DB, tmp_path, *command)
    text = output(proc)
    assert proc.returncode == 2, text
    assert proc.stderr.startswith("error: cannot reach the database: ")
    assert len(proc.stderr.splitlines()) == 1, "one line, libpq's hint included"
    assert "Traceback" not in text


def test_devices_add_with_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    proc = pledgewatch(UNREACHABLE_DB, tmp_path, "devices", "add", "wh-1", "--tenant", "acme")
    text = output(proc)
    assert proc.returncode == 2, text
    assert "cannot reach the database" in text
    assert "Traceback" not in text


def password_of(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("MQTT password: ")]
    assert len(lines) == 1, stdout
    return lines[0].removeprefix("MQTT password: ").split()[0]


@pytest.mark.once_per_run  # a process start each; the database kind changes nothing here
def test_devices_add_shows_the_password_once_and_stores_only_a_hash(migrated_db: str,
                                                                     tmp_path: Path) -> None:
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add", "wh-9", "--tenant", "acme",
                       "--kind", "vehicle", "--bound-to", "truck-7")
    assert proc.returncode == 0, output(proc)
    password = password_of(proc.stdout)
    assert len(password) >= 24
    assert proc.stdout.count(password) == 1
    assert password not in proc.stderr
    assert "MQTT username: wh-9" in proc.stdout

    with psycopg.connect(migrated_db) as conn:
        rows = conn.execute("SELECT device_id, tenant, kind, bound_to, credentials_hash, enabled"
                            " FROM devices").fetchall()
    assert len(rows) == 1
    device_id, tenant, kind, bound_to, digest, enabled = rows[0]
    assert (device_id, tenant, kind, bound_to, enabled) == ("wh-9", "acme", "vehicle", "truck-7", True)
    assert digest.startswith("$argon2")
    assert password not in digest


    assert PasswordHasher().verify(digest, password)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(digest, password + "x")

    again = pledgewatch(migrated_db, tmp_path, "devices", "add", "wh-9", "--tenant", "other")
    assert_refused(again, "already exists")
    with psycopg.connect(migrated_db) as conn:
        after = conn.execute("SELECT tenant, credentials_hash FROM devices").fetchall()
    assert after == [("acme", digest)], "a refused add must not change the existing device"


def assert_refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit code 2, the reason said, no password issued, no traceback."""
    text = output(proc)
    assert proc.returncode == 2, text
    assert message in text
    assert "MQTT password" not in text
    assert "Traceback" not in text


@pytest.mark.once_per_run  # a process start each; the database kind changes nothing here
def test_two_devices_get_different_passwords(migrated_db: str, tmp_path: Path) -> None:
    a = pledgewatch(migrated_db, tmp_path, "devices", "add", "wh-a", "--tenant", "acme")
    b = pledgewatch(migrated_db, tmp_path, "devices", "add", "wh-b", "--tenant", "acme")
    assert a.returncode == 0 and b.returncode == 0, output(a) + output(b)
    assert password_of(a.stdout) != password_of(b.stdout)


@pytest.mark.once_per_run
@pytest.mark.parametrize(
    ("device_id", "tenant"),
    [("a/b", "acme"), ("x" * 65, "acme"), ("#", "acme"), ("wh 1", "acme"), ("+", "acme"),
     ("wh-1", "bad tenant"), ("wh-1", "a/b")],
    ids=["slash", "65-chars", "hash", "space", "plus", "tenant-space", "tenant-slash"],
)
def test_hostile_ids_are_refused(migrated_db: str, tmp_path: Path, device_id: str,
                                 tenant: str) -> None:
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add", device_id, "--tenant", tenant)
    assert_refused(proc, "must be 1-64 letters")
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (0,)


def test_devices_add_on_an_unmigrated_database_says_migrate(empty_db: str, tmp_path: Path) -> None:
    proc = pledgewatch(empty_db, tmp_path, "devices", "add", "wh-1", "--tenant", "acme")
    text = output(proc)
    assert proc.returncode == 2, text
    assert "not migrated" in text and "pledgewatch migrate" in text
    assert "Traceback" not in text
