"""Device provisioning: register a device and issue a credential (stored as an Argon2 hash),
one at a time or a whole fleet from a CSV file (one COPY, hashes computed across the cores)."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from argon2 import PasswordHasher

from telemetry.contract.topics import SLUG

# Device passwords are 192-bit random tokens, not chosen by people: a costlier hash adds nothing
# against guessing them. Argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane): ~20-30 ms a hash
# here, against ~200 ms at argon2-cffi's default (64 MiB, 3 passes), which made 100,000 devices
# take hours. Every device credential (one, many, rotated) is hashed with it; verifying with a
# default PasswordHasher works, the parameters are in the hash.
DEVICE_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
DEVICE_COLUMNS = ("device_id", "tenant", "kind")
MAX_DEVICES_FILE_BYTES = 64 * 1024 * 1024
MOSQUITTO_PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for its $7$ (PBKDF2-SHA512) format


class DeviceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NewDevice:
    device_id: str
    tenant: str
    kind: str


@dataclass(frozen=True, slots=True)
class Credential:
    device_id: str
    password: str
    digest: str  # Argon2, stored in the devices table
    broker_line: str  # the device's line of Mosquitto's password file


def _check_slugs(device_id: str, tenant: str, kind: str, where: str = "") -> None:
    for label, value in (("device id", device_id), ("tenant", tenant), ("kind", kind)):
        if not SLUG.fullmatch(value):
            raise DeviceError(f"{where}{label} {value[:80]!r} must be 1-64 letters, digits, '.',"
                              " '_' or '-'")


def provision(conn: psycopg.Connection, device_id: str, tenant: str, kind: str,
              bound_to: str | None = None) -> str:
    """Create the device; return its new password (never stored in clear)."""
    _check_slugs(device_id, tenant, kind)
    password = secrets.token_urlsafe(24)
    digest = DEVICE_HASHER.hash(password)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO devices (device_id, tenant, kind, credentials_hash, bound_to)"
                " VALUES (%s, %s, %s, %s, %s)",
                (device_id, tenant, kind, digest, bound_to),
            )
    except psycopg.errors.UniqueViolation:
        raise DeviceError(f"device {device_id!r} already exists") from None
    except psycopg.errors.UndefinedTable:
        raise DeviceError("the database is not migrated; run `pledgewatch migrate`") from None
    return password


def rotate(conn: psycopg.Connection, device_id: str) -> str | None:
    """Replace the device's credential; its new password, or None if there is no such device."""
    password = secrets.token_urlsafe(24)
    row = conn.execute("UPDATE devices SET credentials_hash = %s WHERE device_id = %s RETURNING 1",
                       (DEVICE_HASHER.hash(password), device_id)).fetchone()
    return None if row is None else password


def set_enabled(conn: psycopg.Connection, device_id: str, enabled: bool) -> bool:
    """Enable or disable a device (the gateway dead-letters a disabled device's messages)."""
    return conn.execute("UPDATE devices SET enabled = %s WHERE device_id = %s RETURNING 1",
                        (enabled, device_id)).fetchone() is not None


# --- a fleet at once ----------------------------------------------------------------------------

def read_devices_csv(path: Path) -> list[NewDevice]:
    """Devices from a CSV file with the columns device_id, tenant, kind (in any order); a
    :class:`DeviceError` (one line, naming the line) for anything else, and for an empty file."""
    if not path.is_file():
        raise DeviceError(f"{path}: no such file")
    if path.stat().st_size > MAX_DEVICES_FILE_BYTES:
        raise DeviceError(f"{path}: larger than {MAX_DEVICES_FILE_BYTES // 2**20} MiB")
    devices: list[NewDevice] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in DEVICE_COLUMNS if c not in header]
            if missing:
                raise DeviceError(f"{path}: line 1: missing columns: {', '.join(missing)}"
                                  f" (the header is {','.join(DEVICE_COLUMNS)})")
            extra = [c for c in header if c not in DEVICE_COLUMNS]
            if extra or len(header) != len(set(header)):
                raise DeviceError(f"{path}: line 1: the header is {','.join(DEVICE_COLUMNS)}"
                                  f" (got {','.join(h[:40] for h in header)[:200]!r})")
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise DeviceError(f"{path}: line {reader.line_num}: expected 3 fields")
                _check_slugs(row["device_id"], row["tenant"], row["kind"],
                             f"{path}: line {reader.line_num}: ")
                devices.append(NewDevice(row["device_id"], row["tenant"], row["kind"]))
    except UnicodeDecodeError:
        raise DeviceError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DeviceError(f"{path}: not a valid CSV: {exc}") from None
    if not devices:
        raise DeviceError(f"{path}: no devices in the file")
    twice = [d for d, n in Counter(d.device_id for d in devices).items() if n > 1]
    if twice:
        raise DeviceError(f"{path}: device ids listed twice: {', '.join(sorted(twice)[:10])}"
                          + (f" and {len(twice) - 10} more" if len(twice) > 10 else ""))
    return devices


def mosquitto_password_line(username: str, password: str) -> str:
    """``username:$7$101$salt$hash``: the line ``mosquitto_passwd -b`` writes (Mosquitto 2.0)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_PBKDF2_ITERATIONS)
    return (f"{username}:$7${MOSQUITTO_PBKDF2_ITERATIONS}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def _credential(device_id: str) -> Credential:
    password = secrets.token_urlsafe(24)
    return Credential(device_id, password, DEVICE_HASHER.hash(password),
                      mosquitto_password_line(device_id, password))


def issue_credentials(device_ids: Sequence[str], workers: int | None = None) -> list[Credential]:
    """A new password per device with its hashes; the Argon2 work spread over ``workers``
    processes (default: every core) when there are enough devices to pay for starting them."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(device_ids) < 64:
        return [_credential(d) for d in device_ids]
    chunk = max(1, min(256, len(device_ids) // (workers * 8)))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_credential, device_ids, chunksize=chunk))


def existing_devices(conn: psycopg.Connection, devices: Sequence[NewDevice]) -> list[str]:
    """The ids among ``devices`` that cannot be issued credentials: registered with credentials
    already, or under another tenant. (A sensor a portfolio load registered has none yet.)"""
    rows = conn.execute(
        "SELECT d.device_id FROM unnest(%s::text[], %s::text[]) AS n(device_id, tenant)"
        " JOIN devices d USING (device_id)"
        " WHERE d.credentials_hash IS NOT NULL OR d.tenant <> n.tenant ORDER BY 1",
        ([x.device_id for x in devices], [x.tenant for x in devices])).fetchall()
    return [r[0] for r in rows]


def provision_many(conn: psycopg.Connection, devices: Sequence[NewDevice],
                   credentials: Sequence[Credential]) -> int:
    """Register ``devices`` with their credentials' hashes in one transaction (one COPY); a device
    registered without credentials (a portfolio's sensor) of the same tenant gets them. A
    :class:`DeviceError` and nothing registered if any has credentials or another tenant."""
    digests = {c.device_id: c.digest for c in credentials}
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE pw_new_devices (device_id text, tenant text, kind text,"
                        " credentials_hash text) ON COMMIT DROP")
            with cur.copy("COPY pw_new_devices FROM STDIN") as copy:
                for d in devices:
                    copy.write_row((d.device_id, d.tenant, d.kind, digests[d.device_id]))
            taken = cur.execute(
                "SELECT n.device_id FROM pw_new_devices n JOIN devices d USING (device_id)"
                " WHERE d.credentials_hash IS NOT NULL OR d.tenant <> n.tenant"
                " ORDER BY 1 LIMIT 11").fetchall()
            if taken:
                raise _already_exist([r[0] for r in taken])
            cur.execute("INSERT INTO devices (device_id, tenant, kind, credentials_hash)"
                        " SELECT device_id, tenant, kind, credentials_hash FROM pw_new_devices"
                        " ON CONFLICT (device_id) DO UPDATE SET kind = EXCLUDED.kind,"
                        " credentials_hash = EXCLUDED.credentials_hash"
                        " WHERE devices.credentials_hash IS NULL")
            return cur.rowcount
    except psycopg.errors.UniqueViolation:  # registered by someone else since the check
        raise DeviceError("some of these devices were registered meanwhile; nothing was"
                          " registered") from None
    except psycopg.errors.UndefinedTable:
        raise DeviceError("the database is not migrated; run `pledgewatch migrate`") from None


def _already_exist(ids: Sequence[str]) -> DeviceError:
    more = " and more" if len(ids) > 10 else ""
    return DeviceError(f"already registered (with credentials, or another tenant):"
                       f" {', '.join(ids[:10])}{more}; nothing was registered")


def create_secret_file(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines`` to a new file readable only by its owner; an existing file is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DeviceError(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise DeviceError(f"{path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(line + "\n" for line in lines)
