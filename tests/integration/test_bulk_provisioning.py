"""A large book against a real PostgreSQL: 5,000 lots in bulk (COPY), their sensors registered as
devices, upserts and duplicate pledges as before; `devices add --file` registering a fleet with its
credentials written once; the Mosquitto lines accepted by a real Mosquitto."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from argon2 import PasswordHasher
from paho.mqtt.enums import CallbackAPIVersion

from lending.operations import DuplicatePledgeError, load_portfolio
from lending.portfolio_file import parse_portfolio
from pledgewatch.broker.mosquitto import Mosquitto
from telemetry.provisioning import DeviceError, NewDevice, issue_credentials, provision_many
from tests.integration.test_cli import output, pledgewatch

pytestmark = pytest.mark.integration

BASE = ("commodities:\n  - {name: wheat, unit: t, unit_kg: 1000, liquidation_days: 20}\n"
        "borrowers:\n  - {id: big-b, name: Big Borrower, tenant: bigco}\n"
        "  - {id: other-b, name: Other, tenant: otherco}\n"
        "facilities:\n  - {id: fac-a, borrower: big-b, line: 1e9}\n"
        "  - {id: fac-o, borrower: other-b, line: 1e9}\n")
HEADER = "id,facility,commodity,declared_quantity,unit_weight_kg,registration_no,sensors,vehicle\n"


def lots_csv(n: int, facility: str = "fac-a", quantity: int = 100, prefix: str = "lot",
             registry: str = "ZDW") -> str:
    return HEADER + "".join(
        f"{prefix}-{i},{facility},wheat,{quantity},25,{registry}-{i:07d},wh-{i};rfid-{i},"
        f"{'truck-1' if i == 0 else ''}\n" for i in range(n))


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.once_per_run
def test_five_thousand_lots_load_in_bulk_and_their_sensors_become_devices(
        migrated_db: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(migrated_db) as conn:
        conn.execute("INSERT INTO devices (device_id, tenant, kind) VALUES ('wh-1', 'elsewhere',"
                     " 'line')")
        conn.commit()
        load_portfolio(conn, parse_portfolio(BASE, "yaml"), now)
        started = time.perf_counter()
        result = load_portfolio(conn, parse_portfolio(lots_csv(5_000), "csv"), now)
        took = time.perf_counter() - started
    assert result.lots == 5_000
    assert took < 10.0, f"5,000 lots took {took:.1f}s"
    assert rows(migrated_db, "SELECT count(*), count(DISTINCT registration_key) FROM lots") == [
        (5_000, 5_000)]
    assert rows(migrated_db, "SELECT count(*) FROM lot_sensors") == [(10_000,)]
    assert rows(migrated_db, "SELECT device_id, tenant, kind, bound_to FROM devices"
                " WHERE device_id IN ('wh-0', 'rfid-4999', 'wh-1') ORDER BY 1") == [
        ("rfid-4999", "bigco", "warehouse", "lot-4999"), ("wh-0", "bigco", "vehicle", "lot-0"),
        ("wh-1", "elsewhere", "line", None)], "a registered device is left as it is"
    assert rows(migrated_db, "SELECT count(*) FROM devices") == [(10_000,)]

    # Loading again is an upsert: quantities follow, a lot's sensors are replaced.
    again = lots_csv(5_000, quantity=90).replace(",wh-1;rfid-1,", ",wh-1;new-1,")
    with psycopg.connect(migrated_db) as conn:
        load_portfolio(conn, parse_portfolio(again, "csv"), now)
    assert rows(migrated_db, "SELECT count(*), min(declared_quantity), max(declared_quantity)"
                " FROM lots") == [(5_000, 90.0, 90.0)]
    assert rows(migrated_db, "SELECT device_id FROM lot_sensors WHERE lot_id = 'lot-1'"
                " ORDER BY 1") == [("new-1",), ("wh-1",)]
    assert rows(migrated_db, "SELECT tenant, bound_to FROM devices WHERE device_id = 'new-1'"
                ) == [("bigco", "lot-1")]
    assert rows(migrated_db, "SELECT count(*) FROM lot_sensors") == [(10_000,)]

    # A sensor the load registered gets credentials later; one of another tenant does not.
    with psycopg.connect(migrated_db) as conn:
        wh0 = NewDevice("wh-0", "bigco", "vehicle")
        with pytest.raises(DeviceError, match="another tenant\\): wh-1;"):
            provision_many(conn, [wh0, NewDevice("wh-1", "bigco", "x")],
                           issue_credentials(["wh-0", "wh-1"], workers=1))
        assert provision_many(conn, [wh0], issue_credentials(["wh-0"], workers=1)) == 1
        with pytest.raises(DeviceError, match="with credentials"):
            provision_many(conn, [wh0], issue_credentials(["wh-0"], workers=1))
    assert rows(migrated_db, "SELECT tenant, bound_to, credentials_hash LIKE '$argon2id$%'"
                " FROM devices WHERE device_id = 'wh-0'") == [("bigco", "lot-0", True)]


@pytest.mark.once_per_run
def test_a_duplicate_pledge_in_a_bulk_load_writes_nothing_and_alerts(migrated_db: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(migrated_db) as conn:
        load_portfolio(conn, parse_portfolio(BASE, "yaml"), now)
        load_portfolio(conn, parse_portfolio(lots_csv(2_000), "csv"), now)
        # Another facility, other lot ids and sensors, one number written differently: zdw 0001999.
        claim = lots_csv(2_000, facility="fac-o", prefix="o", registry="OTH").replace(
            "wh-", "o-wh-").replace("rfid-", "o-rfid-").replace("OTH-0001999", "zdw 0001999")
        with pytest.raises(DuplicatePledgeError, match="lot o-1999 for facility fac-o"):
            load_portfolio(conn, parse_portfolio(claim, "csv"), now)
    assert rows(migrated_db, "SELECT count(*) FROM lots WHERE facility_id = 'fac-o'") == [(0,)]
    assert rows(migrated_db, "SELECT count(*) FROM devices WHERE tenant = 'otherco'") == [(0,)]
    assert rows(migrated_db, "SELECT type, lot_id FROM alerts") == [("duplicate_pledge",
                                                                     "lot-1999")]


def hashes(url: str) -> dict[str, str]:
    return {str(d): str(h) for d, h in rows(url, "SELECT device_id, credentials_hash FROM devices")}


# --- devices add --file -------------------------------------------------------------------------

def devices_file(tmp_path: Path, n: int, start: int = 0) -> Path:
    path = tmp_path / f"devices-{start}.csv"
    path.write_text("device_id,tenant,kind\n" + "".join(
        f"wh-{i:05d},acme,warehouse\n" for i in range(start, start + n)), encoding="utf-8")
    return path


@pytest.mark.once_per_run
def test_devices_add_file_registers_a_fleet_and_writes_the_passwords_once(
        migrated_db: str, tmp_path: Path) -> None:
    creds, passwd = tmp_path / "creds.csv", tmp_path / "passwd-lines"
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add", "--file",
                       str(devices_file(tmp_path, 40)), "--credentials-out", str(creds),
                       "--passwd-out", str(passwd))
    assert proc.returncode == 0, output(proc)
    assert "40 device(s) registered" in proc.stdout
    lines = creds.read_text().splitlines()
    assert lines[0] == "device_id,username,password" and len(lines) == 41
    assert creds.stat().st_mode & 0o777 == 0o600 and passwd.stat().st_mode & 0o777 == 0o600
    device, user, password = lines[22].split(",")
    assert device == user == "wh-00021" and len(password) >= 32
    assert password not in output(proc)
    stored = hashes(migrated_db)
    assert len(stored) == 40
    assert PasswordHasher().verify(stored["wh-00021"], password)
    assert passwd.read_text().splitlines()[21].startswith("wh-00021:$7$101$")

    # Again (and overlapping): refused before any hashing, nothing written, nothing changed.
    again = tmp_path / "again.csv"
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add", "--file",
                       str(devices_file(tmp_path, 20, start=30)), "--credentials-out", str(again))
    assert proc.returncode == 2 and "another tenant): wh-00030" in proc.stderr, output(proc)
    assert not again.exists()
    assert hashes(migrated_db) == stored
    # An existing credentials file is never overwritten.
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add", "--file",
                       str(devices_file(tmp_path, 5, start=500)), "--credentials-out", str(creds))
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert len(creds.read_text().splitlines()) == 41


@pytest.mark.once_per_run
@pytest.mark.parametrize(("content", "args", "expected"), [
    ("device_id,tenant\nd1,acme\n", (), "missing columns: kind"),
    ("device_id,tenant,kind\nd1,a,x\nd2,a,x\nd1,a,x\n", (), "listed twice: d1"),
    ("device_id,tenant,kind\nd1,a,x\n", ("--no-creds",), "needs --credentials-out"),
], ids=["missing-column", "duplicate", "no-credentials-out"])  # the rest: tests/unit
def test_a_bad_device_file_is_one_line_exit_2_and_nothing_written(
        migrated_db: str, tmp_path: Path, content: str, args: tuple[str, ...],
        expected: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(content, encoding="utf-8")
    creds = tmp_path / "creds.csv"
    extra = [] if "--no-creds" in args else ["--credentials-out", str(creds)]
    proc = pledgewatch(migrated_db, tmp_path, "devices", "add",
                       *[a for a in args if a != "--no-creds"], "--file", str(path), *extra)
    assert proc.returncode == 2, output(proc)
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in output(proc)
    assert not creds.exists()
    assert rows(migrated_db, "SELECT count(*) FROM devices") == [(0,)]


def test_a_real_mosquitto_accepts_the_generated_password_lines(tmp_path: Path) -> None:
    issued = issue_credentials([f"wh-bulk-{i}" for i in range(70)], workers=2)  # a process pool
    assert [c.device_id for c in issued] == [f"wh-bulk-{i}" for i in range(70)]
    assert len({c.password for c in issued}) == 70
    good, other = issued[1], issued[2]
    broker = Mosquitto(tmp_path / "mosquitto", users={"probe": "probe-password"}).start()
    try:
        assert broker.process is not None
        with (tmp_path / "mosquitto" / "passwd").open("a") as handle:
            handle.write(f"{good.broker_line}\n{other.broker_line}\n")
        broker.process.send_signal(signal.SIGHUP)  # reload the password file
        time.sleep(0.5)

        def connect(user: str, password: str) -> int:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{os.getpid()}")
            client.username_pw_set(user, password)
            try:
                return int(client.connect("127.0.0.1", broker.port, keepalive=5) or 0) or _connack(
                    client)
            finally:
                client.disconnect()

        assert connect(good.device_id, good.password) == 0
        assert connect(good.device_id, other.password) != 0
    finally:
        broker.stop()


def _connack(client: mqtt.Client) -> int:
    """The CONNACK's reason code (0: accepted)."""
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        client.loop(0.1)
    assert codes, "no CONNACK"
    return codes[0]
