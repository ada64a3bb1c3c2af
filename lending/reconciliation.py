"""T+0 reconciliation against the database: a statement is stored with its lines, matched against
the drawdowns and repayments of its accounts and period (:mod:`lending.domain.reconciliation`), and
every break is kept and raises an alert on its facility (one open alert per distinct break: the
same break in the next day's statement adds nothing). The warehouse operator's stock ledger is
stored for goods three ways."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lending.domain.alerts import Alert, AlertType, Severity
from lending.domain.reconciliation import (
    BankLine,
    Break,
    GoodsLine,
    PlatformMove,
    goods_three_ways,
    reconcile,
)
from lending.financing import NotFound
from lending.operations import LendingError
from lending.store import insert_alert

Row = dict[str, Any]

# money out that nothing explains, or money booked twice, is worse than a late or missing booking
SEVERITY = {"missing_in_platform": Severity.CRITICAL, "duplicate": Severity.CRITICAL,
            "amount_mismatch": Severity.CRITICAL, "missing_in_bank": Severity.WARNING,
            "date_mismatch": Severity.WARNING}


def platform_moves(conn: psycopg.Connection, facilities: Sequence[str], start: Any,
                   end: Any) -> list[PlatformMove]:
    """Drawdowns paid out and repayments received on ``facilities`` with a value date in
    [start, end] (UTC dates). Opening balances are not moves."""
    rows = conn.execute(
        "SELECT d.drawdown_id, d.facility_id, d.amount, d.currency, 'debit',"
        " (d.decided_at AT TIME ZONE 'UTC')::date FROM drawdowns d"
        " WHERE d.facility_id = ANY(%(f)s) AND d.source = 'request'"
        " AND d.status IN ('approved', 'repaid')"
        " AND (d.decided_at AT TIME ZONE 'UTC')::date BETWEEN %(s)s AND %(e)s"
        " UNION ALL SELECT 'rp-' || r.id, r.facility_id, r.amount, f.currency, 'credit',"
        " (r.time AT TIME ZONE 'UTC')::date FROM repayments r JOIN facilities f USING (facility_id)"
        " WHERE r.facility_id = ANY(%(f)s)"
        " AND (r.time AT TIME ZONE 'UTC')::date BETWEEN %(s)s AND %(e)s",
        {"f": list(facilities), "s": start, "e": end}).fetchall()
    return [PlatformMove(str(r[0]), str(r[1]), Decimal(r[2]), str(r[3]), r[4], r[5])
            for r in rows]


def import_statement(conn: psycopg.Connection, data: bytes, fmt: str, lines: Sequence[BankLine],
                     *, source: str, by: str, now: datetime,
                     date_tolerance_days: int = 0) -> Row:
    """Store and reconcile one statement; the import row with its counts and breaks."""
    digest = hashlib.sha256(data).hexdigest()
    start = min(line.value_date for line in lines)
    end = max(line.value_date for line in lines)
    facilities = sorted({line.facility_id for line in lines})
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        earlier = cur.execute("SELECT id FROM statement_imports WHERE sha256 = %s",
                              (digest,)).fetchone()
        if earlier is not None:
            raise LendingError(f"this statement was already imported (#{earlier['id']})")
        result = reconcile(lines, platform_moves(conn, facilities, start, end),
                           date_tolerance_days=date_tolerance_days)
        row = cur.execute(
            "INSERT INTO statement_imports (sha256, format, source, lines, period_from, period_to,"
            " imported_by, imported_at, matched, breaks, counts) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (digest, fmt, source[:200], len(lines), start, end, by, now, len(result.matched),
             len(result.breaks), Jsonb(result.counts()))).fetchone()
        assert row is not None
        import_id = int(row["id"])
        matched = dict(result.matched)
        with cur.copy("COPY statement_lines (import_id, line, facility_id, reference, amount,"
                      " currency, direction, value_date, matched_to) FROM STDIN") as copy:
            for line in lines:
                copy.write_row((import_id, line.line, line.facility_id, line.reference,
                                line.amount, line.currency, line.direction, line.value_date,
                                matched.get(line.line)))
        known = {r["facility_id"] for r in cur.execute(
            "SELECT facility_id FROM facilities WHERE facility_id = ANY(%s)",
            ([b.facility_id for b in result.breaks],)).fetchall()}
        for brk in result.breaks:
            alert_id = _alert(conn, brk, import_id, now) if brk.facility_id in known else None
            cur.execute(
                "INSERT INTO reconciliation_breaks (import_id, kind, facility_id, reference,"
                " detail, bank_line, platform_reference, alert_id) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s)",
                (import_id, brk.kind, brk.facility_id, brk.reference, brk.detail, brk.bank_line,
                 brk.platform_reference, alert_id))
    return get_import(conn, import_id)


def _alert(conn: psycopg.Connection, brk: Break, import_id: int, now: datetime) -> int | None:
    key = f"{AlertType.RECONCILIATION_BREAK}:{brk.kind}:{brk.facility_id}:{brk.reference}"
    new_id = insert_alert(conn, Alert(
        key=key, type=AlertType.RECONCILIATION_BREAK, severity=SEVERITY[brk.kind],
        facility_id=brk.facility_id, lot_id=None,
        message=f"reconciliation: {brk.kind.replace('_', ' ')} {brk.reference}: {brk.detail}",
        evidence={"import_id": import_id, "kind": brk.kind, "reference": brk.reference,
                  "bank_line": brk.bank_line, "platform_reference": brk.platform_reference},
        raised_at=now, auto_resolve=False))
    if new_id is not None:
        return new_id
    row = conn.execute("SELECT id FROM alerts WHERE key = %s AND status <> 'resolved'",
                       (key,)).fetchone()
    return None if row is None else int(row[0])


def get_import(conn: psycopg.Connection, import_id: int) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, format, source, lines, period_from, period_to, imported_by, imported_at,"
            " matched, breaks, counts FROM statement_imports WHERE id = %s",
            (import_id,)).fetchone()
        if row is None:
            raise NotFound("statement import", import_id)
        row["break_list"] = cur.execute(
            "SELECT id, kind, facility_id, reference, detail, bank_line, platform_reference,"
            " alert_id FROM reconciliation_breaks WHERE import_id = %s ORDER BY id",
            (import_id,)).fetchall()
    return row


def list_imports(conn: psycopg.Connection, limit: int, offset: int) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, format, source, lines, period_from, period_to, imported_by, imported_at,"
            " matched, breaks, counts FROM statement_imports ORDER BY id DESC"
            " LIMIT %s OFFSET %s", (limit, offset)).fetchall()


class NotOperatorsLot(NotFound):
    """A stock line for a lot that is not in the importing operator's warehouses (or does not
    exist: the operator cannot tell the two apart). The API: 404."""

    def __init__(self, lots: Sequence[str], operator_id: str) -> None:
        self.kind, self.ident = "lot", lots[0]
        LendingError.__init__(self, f"lot {_listed(lots)} is not in warehouse operator "
                                    f"{operator_id!r}'s care: nothing of the file was stored")


def _listed(ids: Sequence[str]) -> str:
    return (", ".join(ids[:10])
            + (f" and {len(ids) - 10} more" if len(ids) > 10 else ""))


def import_stock(conn: psycopg.Connection, rows: Sequence[tuple[str, float, datetime]], *,
                 by: str, now: datetime, operator_id: str | None = None) -> int:
    """Store the warehouse operator's stock ledger (every lot must be pledged). Imported by the
    operator itself (``operator_id``), every line must be for a lot in its warehouses; otherwise
    nothing of the file is stored."""
    with conn.transaction(), conn.cursor() as cur:
        lots = {r[0] for r in cur.execute(
            "SELECT lot_id FROM lots WHERE lot_id = ANY(%s)"
            " AND (%s::text IS NULL OR operator_id = %s)",
            ([r[0] for r in rows], operator_id, operator_id)).fetchall()}
        unknown = sorted({r[0] for r in rows} - lots)
        if unknown and operator_id is not None:
            raise NotOperatorsLot(unknown, operator_id)
        if unknown:
            raise LendingError(f"no pledged lot {_listed(unknown)}")
        with cur.copy("COPY stock_ledger (lot_id, quantity, as_of, imported_by, imported_at)"
                      " FROM STDIN") as copy:
            for lot_id, quantity, as_of in rows:
                copy.write_row((lot_id, quantity, as_of, by, now))
    return len(rows)


def goods(conn: psycopg.Connection, facility_id: str | None = None, *,
          tolerance: float = 0.02) -> list[GoodsLine]:
    """Per lot: the pledged quantity, the sensor-verified one (the facility's latest limit
    snapshot) and the operator's (its latest stock-ledger line), with the differences."""
    rows = conn.execute(
        "SELECT l.lot_id, l.facility_id, l.declared_quantity,"
        " (SELECT (e->>'verified')::float8 FROM limit_snapshots s,"
        "   jsonb_array_elements(s.inputs->'lots') e WHERE s.facility_id = l.facility_id"
        "   AND e->>'lot_id' = l.lot_id ORDER BY s.time DESC, s.id DESC LIMIT 1),"
        " (SELECT k.quantity FROM stock_ledger k WHERE k.lot_id = l.lot_id"
        "   ORDER BY k.as_of DESC, k.id DESC LIMIT 1)"
        " FROM lots l WHERE %(f)s::text IS NULL OR l.facility_id = %(f)s ORDER BY l.lot_id",
        {"f": facility_id}).fetchall()
    return [goods_three_ways(r[0], r[1], float(r[2]), r[3], r[4], tolerance=tolerance)
            for r in rows]
