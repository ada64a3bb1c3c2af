"""Device provisioning: register a device and issue a credential (stored as an Argon2 hash)."""

from __future__ import annotations

import secrets

import psycopg
from argon2 import PasswordHasher

from telemetry.contract.topics import SLUG


class DeviceError(ValueError):
    pass


def provision(conn: psycopg.Connection, device_id: str, tenant: str, kind: str,
              bound_to: str | None = None) -> str:
    """Create the device; return its new password (never stored in clear)."""
    for label, value in (("device id", device_id), ("tenant", tenant), ("kind", kind)):
        if not SLUG.fullmatch(value):
            raise DeviceError(f"{label} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    password = secrets.token_urlsafe(24)
    digest = PasswordHasher().hash(password)
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
                       (PasswordHasher().hash(password), device_id)).fetchone()
    return None if row is None else password


def set_enabled(conn: psycopg.Connection, device_id: str, enabled: bool) -> bool:
    """Enable or disable a device (the gateway dead-letters a disabled device's messages)."""
    return conn.execute("UPDATE devices SET enabled = %s WHERE device_id = %s RETURNING 1",
                        (enabled, device_id)).fetchone() is not None
