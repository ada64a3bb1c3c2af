"""Bank user accounts and API keys (enterprises, warehouse operators) in the store (used by the API
and the CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.password_policy import check_password
from api.security import NewApiKey, hash_password, new_api_key, verify_password
from lending.operations import InvalidRequest, LendingError


def create_user(conn: psycopg.Connection, username: str, password: str, role: str) -> dict[str, Any]:
    """A new user; WeakPassword when the password policy refuses the password."""
    check_password(password, username)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING username, role, disabled, created_at",
            (username, hash_password(password), role)).fetchone()
    if row is None:
        raise LendingError(f"user {username!r} already exists")
    return row


def set_password(conn: psycopg.Connection, username: str, password: str) -> None:
    """Store a new hash (no policy check: :func:`update_user` is the checked path). The
    ``token_epoch`` trigger (migration 0011) revokes the user's tokens."""
    conn.execute("UPDATE users SET password_hash = %s WHERE username = %s",
                 (hash_password(password), username))


def authenticate(conn: psycopg.Connection, username: str, password: str) -> tuple[str, int] | None:
    """The user's role and token epoch if the password is right and the account enabled."""
    row = conn.execute("SELECT password_hash, role, disabled, token_epoch FROM users"
                       " WHERE username = %s", (username,)).fetchone()
    ok = verify_password(row[0] if row else None, password)
    return (str(row[1]), int(row[3])) if ok and row is not None and not row[2] else None


def users(conn: psycopg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT username, role, disabled, created_at FROM users"
                           " ORDER BY username LIMIT %s OFFSET %s", (limit, offset)).fetchall()


def update_user(conn: psycopg.Connection, username: str, disabled: bool | None,
                password: str | None) -> dict[str, Any] | None:
    """Disable/enable and/or set a password (WeakPassword if the policy refuses it). Either
    change revokes the tokens issued before it (``token_epoch``, migration 0011)."""
    if password is not None:
        check_password(password, username)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("UPDATE users SET disabled = coalesce(%s, disabled) WHERE username = %s"
                          " RETURNING username, role, disabled, created_at",
                          (disabled, username)).fetchone()
        if row is not None and password is not None:
            set_password(conn, username, password)
    return row


KEY_COLUMNS = "key_id, borrower_id, operator_id, name, created_by, created_at, revoked_at"


def issue_api_key(conn: psycopg.Connection, borrower_id: str | None, name: str,
                  created_by: str, *, operator_id: str | None = None
                  ) -> tuple[NewApiKey, dict[str, Any]]:
    """A key for one borrower (an enterprise) or one warehouse operator: exactly one of the two."""
    if (borrower_id is None) == (operator_id is None):
        raise InvalidRequest("a key is for exactly one borrower or one warehouse operator")
    if borrower_id is not None and conn.execute(
            "SELECT 1 FROM borrowers WHERE borrower_id = %s", (borrower_id,)).fetchone() is None:
        raise LendingError(f"no borrower {borrower_id!r}")
    if operator_id is not None and conn.execute(
            "SELECT 1 FROM warehouse_operators WHERE operator_id = %s",
            (operator_id,)).fetchone() is None:
        raise LendingError(f"no warehouse operator {operator_id!r}")
    key = new_api_key()
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"INSERT INTO api_keys (key_id, key_sha256, borrower_id, operator_id, name, created_by)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {KEY_COLUMNS}",
            (key.key_id, key.sha256, borrower_id, operator_id, name, created_by)).fetchone()
    assert row is not None
    return key, row


def api_keys(conn: psycopg.Connection, borrower_id: str | None, limit: int,
             offset: int, *, operator_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE (%(b)s::text IS NULL OR borrower_id = %(b)s)"
            " AND (%(op)s::text IS NULL OR operator_id = %(op)s)"
            " ORDER BY created_at DESC, key_id LIMIT %(n)s OFFSET %(o)s",
            {"b": borrower_id, "op": operator_id, "n": limit, "o": offset}).fetchall()


def revoke_api_key(conn: psycopg.Connection, key_id: str, now: datetime) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s"
            f" RETURNING {KEY_COLUMNS}", (now, key_id)).fetchone()
