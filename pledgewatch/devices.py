"""Device provisioning: register a device and issue a credential (stored as an Argon2 hash)."""

from __future__ import annotations

import secrets

import psycopg
from argon2 import PasswordHasher

from gateway.topics import SLUG


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
