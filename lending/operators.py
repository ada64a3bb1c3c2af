"""Warehouse operators (migration 0021): the companies whose warehouses store pledged lots. An
operator is a party of its own: with an API key of its own it reads the lots it stores, the ledger
entries of their releases, inspections and stock lines, and uploads its stock ledger."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lending.operations import InvalidRequest, LendingError

OPERATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_NAME = 200


def check_operator_id(operator_id: str) -> str:
    """The id as given, or InvalidRequest: 1-64 letters, digits, '.', '_' or '-' (no ':', which
    separates the 'op:' of a ledger party)."""
    if not OPERATOR_ID.fullmatch(operator_id):
        raise InvalidRequest(f"operator id {operator_id!r} must be 1-64 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
    return operator_id


def add_operator(conn: psycopg.Connection, operator_id: str, name: str) -> dict[str, Any]:
    check_operator_id(operator_id)
    if not 0 < len(name) <= MAX_NAME or not name.strip():
        raise InvalidRequest(f"the operator's name must be 1-{MAX_NAME} characters")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO warehouse_operators (operator_id, name) VALUES (%s, %s)"
            " ON CONFLICT (operator_id) DO NOTHING RETURNING operator_id, name, created_at",
            (operator_id, name)).fetchone()
    if row is None:
        raise LendingError(f"warehouse operator {operator_id!r} already exists")
    return row


def ensure_operator(conn: psycopg.Connection, operator_id: str, name: str) -> None:
    """Add the operator unless it exists (the demo, on every start)."""
    conn.execute("INSERT INTO warehouse_operators (operator_id, name) VALUES (%s, %s)"
                 " ON CONFLICT (operator_id) DO NOTHING", (check_operator_id(operator_id), name))


def operators(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every operator with the number of lots it stores."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT o.operator_id, o.name, o.created_at,"
            " (SELECT count(*) FROM lots l WHERE l.operator_id = o.operator_id) AS lots"
            " FROM warehouse_operators o ORDER BY o.operator_id").fetchall()


def assign_lots(conn: psycopg.Connection, operator_id: str | None,
                lot_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Put the lots in the operator's care (None: in no operator's care), all or none: an unknown
    operator or lot refuses the whole call. Returns each lot with the operator it had before.
    Ledger entries written from now on name the operator among their parties; entries already in
    the log keep theirs."""
    if not lot_ids:
        raise InvalidRequest("name at least one lot")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if operator_id is not None and cur.execute(
                "SELECT 1 FROM warehouse_operators WHERE operator_id = %s",
                (check_operator_id(operator_id),)).fetchone() is None:
            raise LendingError(f"no warehouse operator {operator_id!r}")
        wanted = list(dict.fromkeys(lot_ids))
        before = {r["lot_id"]: r["operator_id"] for r in cur.execute(
            "SELECT lot_id, operator_id FROM lots WHERE lot_id = ANY(%s) FOR UPDATE",
            (wanted,)).fetchall()}
        unknown = [lot for lot in wanted if lot not in before]
        if unknown:
            raise LendingError(f"no lot {', '.join(repr(u) for u in unknown[:10])}"
                               + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                               + ": no lot was assigned")
        cur.execute("UPDATE lots SET operator_id = %s WHERE lot_id = ANY(%s)",
                    (operator_id, wanted))
    return [{"lot_id": lot, "previous": before[lot], "operator_id": operator_id}
            for lot in wanted]
