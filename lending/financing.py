"""Supply-chain finance against the database: drawdowns decided in the transaction that locks the
facility, the blacklist, programme lines, confirmed payables as vouchers that split and move down
a core enterprise's chain, financing and settlement, and the sweep that raises overdue and late
alerts. The rules themselves are in :mod:`lending.domain.financing`.

Every function takes a connection and runs its own transaction. ``scope`` is the borrower an
enterprise caller is limited to (None: a bank user, the whole portfolio).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lending.domain.alerts import Alert, AlertType, Severity
from lending.domain.financing import (
    DrawdownContext,
    FinancingError,
    Leaf,
    OpenDrawdown,
    advance,
    allocate_repayment,
    decide_drawdown,
    maturity,
    money,
    officer_may_approve,
    settle,
    split,
)
from lending.operations import InvalidRequest, LendingError
from lending.store import ALERTS_CHANNEL, insert_alert, notify_lending

log = logging.getLogger(__name__)

Row = dict[str, Any]


class NotFound(LendingError):
    """No such object in the caller's scope (the API: 404)."""

    def __init__(self, kind: str, ident: object) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"no {kind} {ident!r}")


class IdempotencyMismatch(InvalidRequest):
    """An Idempotency-Key reused with a different request."""


def _refuse(exc: FinancingError) -> LendingError:
    return LendingError(str(exc))


# --- drawdowns ------------------------------------------------------------------------------------

DRAWDOWN_COLUMNS = (
    "d.drawdown_id, d.facility_id, f.borrower_id, d.amount, d.currency, d.tenor_days, d.purpose,"
    " d.source, d.status, d.reasons, d.repaid, d.amount - d.repaid AS owed, d.requested_by,"
    " d.requested_at, d.decided_by, d.decided_at, d.comment, d.maturity,"
    " (d.status = 'approved' AND d.maturity < now()) AS overdue")


def request_hash(facility_id: str, amount: Decimal, currency: str, tenor_days: int,
                 purpose: str) -> str:
    canonical = json.dumps([facility_id, str(amount), currency, tenor_days, purpose],
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _drawdown(cur: psycopg.Cursor[Row], drawdown_id: str, scope: str | None = None) -> Row | None:
    return cur.execute(
        f"SELECT {DRAWDOWN_COLUMNS} FROM drawdowns d JOIN facilities f USING (facility_id)"
        " WHERE d.drawdown_id = %s AND (%s::text IS NULL OR f.borrower_id = %s)",
        (drawdown_id, scope, scope)).fetchone()


def get_drawdown(conn: psycopg.Connection, drawdown_id: str, scope: str | None = None) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = _drawdown(cur, drawdown_id, scope)
    if row is None:
        raise NotFound("drawdown", drawdown_id)
    return row


def _context(cur: psycopg.Cursor[Row], facility: Row, read: Row | None = None) -> DrawdownContext:
    """What the decision reads, in one statement: the latest limit, the open critical alerts and
    the blacklist entry. ``read``: that statement's row when the caller has already run it
    (:func:`request_drawdown` sends it with the lock)."""
    if read is None:
        read = cur.execute(_CONTEXT_SQL, {"fid": facility["facility_id"], "by": None,
                                          "key": None}).fetchone()
        assert read is not None
    return DrawdownContext(
        facility_currency=facility["currency"],
        credit_limit=None if read["credit_limit"] is None else Decimal(read["credit_limit"]),
        outstanding=Decimal(facility["outstanding"]),
        critical_alerts=list(read["critical"]),
        blacklisted=read["blacklisted"],
        grade=read["grade"],
        grade_auto_approve_max=(None if read["auto_approve_max"] is None
                                else Decimal(read["auto_approve_max"])))


# One statement, one snapshot taken after the facility's lock is held: the latest limit snapshot,
# the facility's open critical alerts, the borrower's blacklist entry, and the drawdown an earlier
# request with this caller's Idempotency-Key made (NULLs without a key), and the borrower's
# current credit grade with its auto-approval cap (NULLs when unrated or the product has none).
_CONTEXT_SQL = (
    "SELECT (SELECT credit_limit FROM limit_snapshots WHERE facility_id = %(fid)s"
    "        ORDER BY time DESC, id DESC LIMIT 1) AS credit_limit,"
    " ARRAY(SELECT type FROM alerts WHERE facility_id = %(fid)s AND status <> 'resolved'"
    "       AND severity = 'critical') AS critical,"
    " (SELECT reason FROM blacklist WHERE borrower_id = (SELECT borrower_id FROM facilities"
    "  WHERE facility_id = %(fid)s) AND removed_at IS NULL LIMIT 1) AS blacklisted,"
    " k.drawdown_id, k.request_hash, g.grade, g.auto_approve_max"
    " FROM (SELECT 1) one LEFT JOIN drawdowns k"
    "   ON k.requested_by = %(by)s AND k.idempotency_key = %(key)s"
    # the borrower's current credit grade and the product's auto-approval cap for it (rating)
    " LEFT JOIN LATERAL (SELECT r.grade,"
    "   CASE WHEN jsonb_typeof(f.terms->'by_grade'->r.grade->'auto_approve_max') = 'number'"
    "   THEN (f.terms->'by_grade'->r.grade->>'auto_approve_max')::numeric END AS auto_approve_max"
    "   FROM facilities f CROSS JOIN LATERAL (SELECT grade FROM borrower_ratings"
    "     WHERE borrower_id = f.borrower_id ORDER BY as_of DESC LIMIT 1) r"
    "   WHERE f.facility_id = %(fid)s) g ON true")


_LOCK_FACILITY = (
    "SELECT facility_id, borrower_id, currency, outstanding FROM facilities"
    " WHERE facility_id = %s AND (%s::text IS NULL OR borrower_id = %s) FOR UPDATE")


def _lock_facility(cur: psycopg.Cursor[Row], facility_id: str, scope: str | None) -> Row:
    facility = cur.execute(_LOCK_FACILITY, (facility_id, scope, scope)).fetchone()
    if facility is None:
        raise NotFound("facility", facility_id)
    return facility


def request_drawdown(conn: psycopg.Connection, facility_id: str, amount: Decimal | float,
                     currency: str, tenor_days: int, purpose: str, *, by: str,
                     idempotency_key: str, now: datetime,
                     scope: str | None = None) -> tuple[Row, bool]:
    """Decide a drawdown in the transaction that locks its facility: approved (and outstanding up)
    at once when it fits the live available limit and nothing bars it, else pending for an
    officer with the reasons. Returns (the drawdown, True) or, for a retry with the same
    Idempotency-Key, (the drawdown the first attempt made, False).

    Two round trips in a pipeline: BEGIN, the lock and what the decision reads (one statement,
    run after the lock is granted); then the INSERT returning the drawdown, the engines'
    notification and COMMIT."""
    try:
        cents = money(amount)
        due = maturity(now, tenor_days)
    except FinancingError as exc:
        raise InvalidRequest(str(exc)) from None
    digest = request_hash(facility_id, cents, currency, tenor_days, purpose)
    try:
        with conn.pipeline(), conn.cursor(row_factory=dict_row) as cur, \
                conn.cursor(row_factory=dict_row) as read:
            with conn.transaction():
                cur.execute(_LOCK_FACILITY, (facility_id, scope, scope))
                read.execute(_CONTEXT_SQL, {"fid": facility_id, "by": by,
                                            "key": idempotency_key})
                facility = cur.fetchone()  # one round trip for BEGIN, the lock and the read
                if facility is None:
                    raise NotFound("facility", facility_id)
                context = read.fetchone()
                assert context is not None
                earlier = _by_key(cur, by, idempotency_key, digest, found=context)
                if earlier is not None:
                    return earlier, False
                try:
                    decision = decide_drawdown(cents, currency, _context(cur, facility, context))
                except FinancingError as exc:
                    raise InvalidRequest(str(exc)) from None
                drawdown_id = f"dd-{secrets.token_hex(8)}"
                cur.execute(
                    "WITH d AS (INSERT INTO drawdowns (drawdown_id, facility_id, amount, currency,"
                    " tenor_days, purpose, status, reasons, requested_by, requested_at, decided_by,"
                    " decided_at, maturity, idempotency_key, request_hash)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING *) SELECT {DRAWDOWN_COLUMNS} FROM d"
                    " JOIN facilities f USING (facility_id)",
                    (drawdown_id, facility_id, cents, currency, tenor_days, purpose,
                     "approved" if decision.approved else "pending",
                     Jsonb(list(decision.reasons)), by, now,
                     "auto" if decision.approved else None,
                     now if decision.approved else None, due if decision.approved else None,
                     idempotency_key, digest))
                if decision.approved:
                    notify_lending(conn, [facility_id])
            row = cur.fetchone()  # sent with the COMMIT: no round trip of its own
            assert row is not None
            return row, True
    except psycopg.errors.UniqueViolation:
        # the same key raced in on another facility's lock: the first attempt's drawdown
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            earlier = _by_key(cur, by, idempotency_key, digest)
        if earlier is None:
            raise
        return earlier, False


def _by_key(cur: psycopg.Cursor[Row], by: str, key: str, digest: str,
            found: Row | None = None) -> Row | None:
    """The drawdown an earlier request with this caller's key made (IdempotencyMismatch if that
    request differed). ``found``: its drawdown_id and request_hash (both None: no such request)
    when the caller has read them already."""
    if found is None:
        found = cur.execute("SELECT drawdown_id, request_hash FROM drawdowns"
                            " WHERE requested_by = %s AND idempotency_key = %s",
                            (by, key)).fetchone()
    if found is None or found["drawdown_id"] is None:
        return None
    if found["request_hash"] != digest:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used for a different request; use a new key for a new one")
    return _drawdown(cur, found["drawdown_id"])


def decide_pending(conn: psycopg.Connection, drawdown_id: str, *, approve: bool, by: str,
                   comment: str | None, now: datetime) -> Row:
    """An officer approves or rejects a waiting drawdown. Approval is checked again under the
    facility's lock: never past the available limit, never for a blacklisted borrower."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        current = _drawdown(cur, drawdown_id)
        if current is None:
            raise NotFound("drawdown", drawdown_id)
        facility = _lock_facility(cur, current["facility_id"], None)
        status = cur.execute("SELECT status, amount, tenor_days FROM drawdowns"
                             " WHERE drawdown_id = %s FOR UPDATE", (drawdown_id,)).fetchone()
        assert status is not None
        if status["status"] != "pending":
            raise LendingError(f"drawdown {drawdown_id} is {status['status']}, not pending")
        if approve:
            try:
                officer_may_approve(Decimal(status["amount"]), _context(cur, facility))
            except FinancingError as exc:
                raise _refuse(exc) from None
        cur.execute(
            "UPDATE drawdowns SET status = %s, decided_by = %s, decided_at = %s, comment = %s,"
            " maturity = %s WHERE drawdown_id = %s",
            ("approved" if approve else "rejected", by, now, comment,
             maturity(now, status["tenor_days"]) if approve else None, drawdown_id))
        if approve:
            notify_lending(conn, [facility["facility_id"]])
        row = _drawdown(cur, drawdown_id)
        assert row is not None
        return row


def list_drawdowns(conn: psycopg.Connection, scope: str | None, limit: int, offset: int, *,
                   facility_id: str | None = None, status: str | None = None,
                   overdue: bool | None = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {DRAWDOWN_COLUMNS} FROM drawdowns d JOIN facilities f USING (facility_id)"
            " WHERE (%(scope)s::text IS NULL OR f.borrower_id = %(scope)s)"
            " AND (%(fid)s::text IS NULL OR d.facility_id = %(fid)s)"
            " AND (%(status)s::text IS NULL OR d.status = %(status)s)"
            " AND (%(overdue)s::bool IS NULL"
            "      OR (d.status = 'approved' AND d.maturity < now()) = %(overdue)s)"
            " ORDER BY d.requested_at DESC, d.drawdown_id LIMIT %(limit)s OFFSET %(offset)s",
            {"scope": scope, "fid": facility_id, "status": status, "overdue": overdue,
             "limit": limit, "offset": offset}).fetchall()


def repay(conn: psycopg.Connection, facility_id: str, amount: Decimal | float, now: datetime, *,
          by: str | None = None, scope: str | None = None) -> Row:
    """Post a repayment: it pays the facility's drawdowns that mature first (outstanding falls
    with them); more than is owed is kept as unapplied. Overdue alerts of drawdowns it clears are
    resolved."""
    try:
        cents = money(amount)
    except FinancingError as exc:
        raise InvalidRequest(f"a repayment must be a positive amount: {exc}") from None
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        _lock_facility(cur, facility_id, scope)
        open_rows = cur.execute(
            "SELECT drawdown_id, maturity, amount - repaid AS owed FROM drawdowns"
            " WHERE facility_id = %s AND status = 'approved' FOR UPDATE", (facility_id,)).fetchall()
        parts, unapplied = allocate_repayment(cents, [
            OpenDrawdown(r["drawdown_id"], r["maturity"], Decimal(r["owed"])) for r in open_rows])
        cleared: list[str] = []
        for drawdown_id, part in parts:
            done = cur.execute(
                "UPDATE drawdowns SET repaid = repaid + %s,"
                " status = CASE WHEN repaid + %s >= amount THEN 'repaid' ELSE status END"
                " WHERE drawdown_id = %s RETURNING status", (part, part, drawdown_id)).fetchone()
            if done is not None and done["status"] == "repaid":
                cleared.append(drawdown_id)
        row = cur.execute(
            "INSERT INTO repayments (facility_id, time, amount, allocation, unapplied, posted_by)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, facility_id, time, amount, allocation,"
            " unapplied, posted_by",
            (facility_id, now, cents, Jsonb([{"drawdown_id": d, "amount": str(p)} for d, p in parts]),
             unapplied, by)).fetchone()
        assert row is not None
        _resolve(conn, [_overdue_key(d) for d in cleared], "repaid", now)
        notify_lending(conn, [facility_id])
        outstanding = cur.execute("SELECT outstanding FROM facilities WHERE facility_id = %s",
                                  (facility_id,)).fetchone()
        assert outstanding is not None
        return {**row, "outstanding": outstanding["outstanding"]}


# --- blacklist ------------------------------------------------------------------------------------

BLACKLIST_COLUMNS = "id, borrower_id, reason, added_by, added_at, removed_by, removed_at"


def blacklist_add(conn: psycopg.Connection, borrower_id: str, reason: str, by: str,
                  now: datetime) -> Row:
    reason = reason.strip()
    if not 1 <= len(reason) <= 1000:
        raise InvalidRequest("a blacklist entry needs a reason of 1..1000 characters")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if cur.execute("SELECT 1 FROM borrowers WHERE borrower_id = %s",
                       (borrower_id,)).fetchone() is None:
            raise NotFound("borrower", borrower_id)
        row = cur.execute(
            "INSERT INTO blacklist (borrower_id, reason, added_by, added_at) VALUES (%s, %s, %s, %s)"
            f" ON CONFLICT (borrower_id) WHERE removed_at IS NULL DO NOTHING RETURNING {BLACKLIST_COLUMNS}",
            (borrower_id, reason, by, now)).fetchone()
        if row is None:
            raise LendingError(f"borrower {borrower_id} is already on the blacklist")
        return row


def blacklist_remove(conn: psycopg.Connection, borrower_id: str, by: str, now: datetime) -> Row:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE blacklist SET removed_by = %s, removed_at = %s WHERE borrower_id = %s"
            f" AND removed_at IS NULL RETURNING {BLACKLIST_COLUMNS}", (by, now, borrower_id)).fetchone()
        if row is None:
            raise NotFound("blacklist entry for borrower", borrower_id)
        return row


def blacklist(conn: psycopg.Connection, *, include_removed: bool = False) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {BLACKLIST_COLUMNS} FROM blacklist WHERE %s OR removed_at IS NULL"
            " ORDER BY added_at DESC, id DESC", (include_removed,)).fetchall()


# --- programmes -----------------------------------------------------------------------------------

PROGRAMME_COLUMNS = (
    "p.programme_id, p.core_id, p.facility_id, p.currency, p.line, p.advance_rate, p.created_by,"
    " p.created_at,"
    " coalesce((SELECT sum(v.amount) FROM vouchers v WHERE v.programme_id = p.programme_id"
    "   AND v.parent_id IS NULL AND NOT EXISTS (SELECT 1 FROM voucher_payments vp"
    "   WHERE vp.root_id = v.voucher_id)), 0) AS used,"
    " coalesce((SELECT sum(v.financed_amount) FROM vouchers v WHERE v.programme_id ="
    "   p.programme_id AND v.status = 'financed'), 0) AS financed")


def create_programme(conn: psycopg.Connection, programme_id: str, core_id: str, currency: str,
                     line: Decimal | float, advance_rate: float, by: str, now: datetime) -> Row:
    """A programme line for a core enterprise's chain. Its alerts sit on a facility of the core
    enterprise made with it (``prog-<id>``: no lots, nothing drawn)."""
    try:
        cents = money(line)
        advance(Decimal(1), advance_rate)
    except FinancingError as exc:
        raise InvalidRequest(str(exc)) from None
    facility_id = f"prog-{programme_id}"
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        core = cur.execute("SELECT role FROM borrowers WHERE borrower_id = %s",
                           (core_id,)).fetchone()
        if core is None:
            raise NotFound("borrower", core_id)
        if core["role"] != "core":
            raise InvalidRequest(f"borrower {core_id} is a {core['role']}, not a core enterprise")
        if cur.execute("SELECT 1 FROM programmes WHERE programme_id = %s",
                       (programme_id,)).fetchone() is not None:
            raise LendingError(f"programme {programme_id} already exists")
        cur.execute("INSERT INTO facilities (facility_id, borrower_id, currency, line, outstanding,"
                    " terms) VALUES (%s, %s, %s, 0, 0, '{}') ON CONFLICT DO NOTHING",
                    (facility_id, core_id, currency))
        cur.execute("INSERT INTO programmes (programme_id, core_id, facility_id, currency, line,"
                    " advance_rate, created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (programme_id, core_id, facility_id, currency, cents, advance_rate, by, now))
        notify_lending(conn, [facility_id])
        return _programme(cur, programme_id)


def _programme(cur: psycopg.Cursor[Row], programme_id: str) -> Row:
    row = cur.execute(f"SELECT {PROGRAMME_COLUMNS} FROM programmes p WHERE p.programme_id = %s",
                      (programme_id,)).fetchone()
    if row is None:
        raise NotFound("programme", programme_id)
    return row


def _programme_in_scope(scope: str | None) -> str:
    return ("TRUE" if scope is None else
            "(p.core_id = %(scope)s OR EXISTS (SELECT 1 FROM borrowers b WHERE"
            " b.borrower_id = %(scope)s AND b.core_id = p.core_id))")


def list_programmes(conn: psycopg.Connection, scope: str | None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {PROGRAMME_COLUMNS} FROM programmes p"
                           f" WHERE {_programme_in_scope(scope)} ORDER BY p.programme_id",
                           {"scope": scope}).fetchall()


def get_programme(conn: psycopg.Connection, programme_id: str, scope: str | None) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {PROGRAMME_COLUMNS} FROM programmes p WHERE p.programme_id ="
                          f" %(id)s AND {_programme_in_scope(scope)}",
                          {"id": programme_id, "scope": scope}).fetchone()
    if row is None:
        raise NotFound("programme", programme_id)
    return row


def chain(conn: psycopg.Connection, programme_id: str, scope: str | None) -> Row:
    """The chain from the core enterprise down: its members and every voucher (tier = depth of
    the holder's voucher below the confirmation), for the dashboard and the core enterprise."""
    programme = get_programme(conn, programme_id, scope)
    with conn.cursor(row_factory=dict_row) as cur:
        members = cur.execute(
            "SELECT borrower_id, name, role FROM borrowers WHERE borrower_id = %(core)s"
            " OR core_id = %(core)s ORDER BY role <> 'core', borrower_id",
            {"core": programme["core_id"]}).fetchall()
        vouchers = list_vouchers(conn, None if scope in (None, programme["core_id"]) else scope,
                                 10_000, 0, programme_id=programme_id)
    return {"programme": programme, "members": members, "vouchers": vouchers}


# --- receivables on a chain member: confirmation ----------------------------------------------------

def confirm_receivable(conn: psycopg.Connection, receivable_id: str, *, debtor_scope: str | None,
                       by: str, now: datetime, programme_id: str | None = None) -> Row:
    """The debtor (a core enterprise, with its own credentials) confirms a receivable owed by it:
    it becomes a voucher held by the supplier, maturing on the due date, within the programme's
    line. A bank user may confirm on the debtor's written confirmation."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rec = cur.execute(
            "SELECT r.receivable_id, r.facility_id, r.debtor_id, r.amount, r.due, r.confirmed_at,"
            " r.disputed, r.trade_status, r.programme_id, f.borrower_id AS seller_id"
            " FROM receivables r JOIN facilities f USING (facility_id)"
            " WHERE r.receivable_id = %s FOR UPDATE OF r", (receivable_id,)).fetchone()
        if rec is None or (debtor_scope is not None and rec["debtor_id"] != debtor_scope):
            raise NotFound("receivable owed by you", receivable_id)
        if rec["debtor_id"] is None:
            raise LendingError(f"receivable {receivable_id} names no chain member as its debtor")
        if rec["confirmed_at"] is not None:
            raise LendingError(f"receivable {receivable_id} is already confirmed")
        if rec["disputed"]:
            raise LendingError(f"receivable {receivable_id} is disputed")
        if rec["trade_status"] == "contradicted":
            raise LendingError(f"receivable {receivable_id}: telemetry contradicts its shipment")
        if rec["due"] <= now:
            raise LendingError(f"receivable {receivable_id} is already due")
        wanted = programme_id or rec["programme_id"]
        programmes = cur.execute(
            "SELECT programme_id, line, currency FROM programmes WHERE core_id = %s"
            " AND (%s::text IS NULL OR programme_id = %s) ORDER BY programme_id FOR UPDATE",
            (rec["debtor_id"], wanted, wanted)).fetchall()
        if not programmes:
            raise LendingError(f"no programme line for {rec['debtor_id']}'s chain")
        programme = programmes[0]
        used = _programme(cur, programme["programme_id"])["used"]
        amount = Decimal(rec["amount"])
        if used + amount > programme["line"]:
            raise LendingError(
                f"the programme line {programme['line']:,.2f} has {programme['line'] - used:,.2f}"
                f" left; this payable is {amount:,.2f}")
        if amount <= 0:
            raise LendingError("a payable of 0 cannot become a voucher")
        cur.execute("UPDATE receivables SET confirmed_at = %s, confirmed_by = %s,"
                    " programme_id = %s, verified = true, verified_at = coalesce(verified_at, %s),"
                    " verified_by = coalesce(verified_by, %s) WHERE receivable_id = %s",
                    (now, by, programme["programme_id"], now, f"debtor:{by}", receivable_id))
        voucher_id = f"v-{secrets.token_hex(8)}"
        cur.execute(
            "INSERT INTO vouchers (voucher_id, programme_id, receivable_id, parent_id, root_id,"
            " holder_id, amount, maturity, status, created_by, created_at)"
            " VALUES (%s, %s, %s, NULL, %s, %s, %s, %s, 'active', %s, %s)",
            (voucher_id, programme["programme_id"], receivable_id, voucher_id, rec["seller_id"],
             amount, rec["due"], by, now))
        notify_lending(conn, [rec["facility_id"]])
        return _voucher(cur, voucher_id, None)


# --- vouchers -------------------------------------------------------------------------------------

_VOUCHER_SELECT = (
    "SELECT v.voucher_id, v.programme_id, p.core_id, v.receivable_id, v.parent_id, v.root_id,"
    " v.holder_id, v.amount, v.maturity, v.status, v.financed_amount, v.financed_at,"
    " v.financed_by, v.settled_at, v.created_by, v.created_at, r.trade_status,"
    " (SELECT vp.paid_at FROM voucher_payments vp WHERE vp.root_id = v.root_id) AS paid_at"
    " FROM vouchers v JOIN programmes p USING (programme_id)"
    " JOIN receivables r ON r.receivable_id = v.receivable_id")


def _voucher_scope(scope: str | None) -> str:
    """An enterprise sees the vouchers it holds or held and, as a core enterprise, all of its
    programmes'. A visible voucher shows its whole path back to the confirmation."""
    if scope is None:
        return "TRUE"
    return "(p.core_id = %(scope)s OR v.holder_id = %(scope)s)"


# A voucher with its path from the core enterprise's confirmation down to it (the path's columns
# as arrays in the same order, so each keeps its type) and that confirmation: one statement.
_PATH_COLUMNS = ("voucher_id", "holder_id", "amount", "status", "created_at", "created_by")
_CONFIRMATION_COLUMNS = ("receivable_id", "debtor_id", "confirmed_at", "confirmed_by")
_VOUCHER_DETAIL = (
    "WITH RECURSIVE up AS (SELECT voucher_id, parent_id, holder_id, amount, status,"
    " created_at, created_by, 0 AS depth FROM vouchers WHERE voucher_id = %(id)s"
    " UNION ALL SELECT v.voucher_id, v.parent_id, v.holder_id, v.amount, v.status,"
    " v.created_at, v.created_by, up.depth + 1 FROM vouchers v"
    " JOIN up ON v.voucher_id = up.parent_id) "
    + _VOUCHER_SELECT.replace(" FROM vouchers v ", "".join(
        f", ARRAY(SELECT {c} FROM up ORDER BY depth DESC) AS path_{c}" for c in _PATH_COLUMNS)
        + "".join(f", r.{c} AS confirmation_{c}" for c in _CONFIRMATION_COLUMNS)
        + " FROM vouchers v ", 1))
assert _VOUCHER_SELECT.count(" FROM vouchers v ") == 1


def _send_voucher(cur: psycopg.Cursor[Row], voucher_id: str, scope: str | None) -> None:
    """Send the read of :func:`_voucher` (in a pipeline: no round trip of its own); take the
    answer with :func:`_fetch_voucher`."""
    cur.execute(f"{_VOUCHER_DETAIL} WHERE v.voucher_id = %(id)s AND {_voucher_scope(scope)}",
                {"id": voucher_id, "scope": scope})


def _fetch_voucher(cur: psycopg.Cursor[Row], voucher_id: str) -> Row:
    row = cur.fetchone()
    if row is None:
        raise NotFound("voucher", voucher_id)
    columns = [row.pop(f"path_{c}") for c in _PATH_COLUMNS]
    steps = [dict(zip(_PATH_COLUMNS, step, strict=True)) for step in zip(*columns, strict=True)]
    row["path"] = steps
    # a tier is a step down the chain: a part the holder kept when it split stays its tier
    holders = [step["holder_id"] for step in steps]
    row["tier"] = 1 + sum(a != b for a, b in itertools.pairwise(holders))
    row["confirmation"] = {c: row.pop(f"confirmation_{c}") for c in _CONFIRMATION_COLUMNS}
    return row


def _voucher(cur: psycopg.Cursor[Row], voucher_id: str, scope: str | None) -> Row:
    _send_voucher(cur, voucher_id, scope)
    return _fetch_voucher(cur, voucher_id)


def get_voucher(conn: psycopg.Connection, voucher_id: str, scope: str | None) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        return _voucher(cur, voucher_id, scope)


def list_vouchers(conn: psycopg.Connection, scope: str | None, limit: int, offset: int, *,
                  programme_id: str | None = None, holder_id: str | None = None,
                  status: str | None = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"{_VOUCHER_SELECT} WHERE {_voucher_scope(scope)}"
            " AND (%(programme)s::text IS NULL OR v.programme_id = %(programme)s)"
            " AND (%(holder)s::text IS NULL OR v.holder_id = %(holder)s)"
            " AND (%(status)s::text IS NULL OR v.status = %(status)s)"
            " ORDER BY v.created_at DESC, v.voucher_id LIMIT %(limit)s OFFSET %(offset)s",
            {"scope": scope, "programme": programme_id, "holder": holder_id, "status": status,
             "limit": limit, "offset": offset}).fetchall()


def _spend(cur: psycopg.Cursor[Row], voucher_id: str, holder: str | None, to: str, *,
           recipient: str | None = None) -> Row:
    """Spend an active voucher exactly once: one conditional UPDATE; a concurrent spender waits
    on the row and then finds it no longer active. The row carries its programme's core_id and,
    as ``recipient_core_id``, the core enterprise of the chain ``recipient`` belongs to."""
    row = cur.execute(
        "UPDATE vouchers v SET status = %s WHERE voucher_id = %s AND status = 'active'"
        " AND (%s::text IS NULL OR holder_id = %s)"
        " RETURNING voucher_id, programme_id, receivable_id, root_id, holder_id, amount, maturity,"
        " (SELECT p.core_id FROM programmes p WHERE p.programme_id = v.programme_id) AS core_id,"
        " (SELECT b.core_id FROM borrowers b WHERE b.borrower_id = %s) AS recipient_core_id",
        (to, voucher_id, holder, holder, recipient)).fetchone()
    if row is None:
        state = cur.execute("SELECT status, holder_id FROM vouchers WHERE voucher_id = %s",
                            (voucher_id,)).fetchone()
        if state is None or (holder is not None and state["holder_id"] != holder):
            raise NotFound("voucher you hold", voucher_id)
        raise LendingError(f"voucher {voucher_id} is {state['status']}: it can be spent only once")
    return row


def transfer_voucher(conn: psycopg.Connection, voucher_id: str, to_id: str,
                     amount: Decimal | float, *, holder: str, by: str, now: datetime) -> Row:
    """The holder transfers ``amount`` of a voucher to a member of the same core enterprise's
    chain: the voucher is spent into the transferred part and, if any, the part the holder keeps.
    Returns the new holder's voucher (with its path).

    Two round trips in a pipeline: BEGIN and the spend (with the recipient's chain); then the
    children (one INSERT), the read of the new voucher (:func:`_send_voucher`) and COMMIT."""
    try:
        cents = money(amount)
    except FinancingError as exc:
        raise InvalidRequest(str(exc)) from None
    with conn.pipeline(), conn.cursor(row_factory=dict_row) as cur:
        with conn.transaction():
            new_id = _transfer(cur, voucher_id, to_id, cents, holder, by, now)
            _send_voucher(cur, new_id, None)
        return _fetch_voucher(cur, new_id)  # read with the COMMIT: no round trip of its own


def _transfer(cur: psycopg.Cursor[Row], voucher_id: str, to_id: str, cents: Decimal,
              holder: str, by: str, now: datetime) -> str:
    """Spend the voucher into its children (in the caller's transaction); the new holder's id."""
    # rolled back with any refusal below; the row carries the recipient's core enterprise
    spent = _spend(cur, voucher_id, holder, "spent", recipient=to_id)
    if to_id == holder:
        raise InvalidRequest("a voucher is transferred to another chain member, not to yourself")
    if spent["maturity"] <= now:
        raise LendingError(f"voucher {voucher_id} has matured: it is paid, not transferred")
    core_id = spent["core_id"]
    assert core_id is not None
    if spent["recipient_core_id"] != core_id:
        raise InvalidRequest(f"{to_id} is not a member of {core_id}'s chain")
    try:
        parts = split(Decimal(spent["amount"]), cents)
    except FinancingError as exc:
        raise InvalidRequest(str(exc)) from None
    new_id = f"v-{secrets.token_hex(8)}"
    children = [(new_id, to_id, parts.transferred)]
    if parts.kept > 0:
        children.append((f"v-{secrets.token_hex(8)}", holder, parts.kept))
    cur.execute(
        "INSERT INTO vouchers (voucher_id, programme_id, receivable_id, parent_id, root_id,"
        " holder_id, amount, maturity, status, created_by, created_at) VALUES "
        + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, 'active', %s, %s)"] * len(children)),
        [value for child_id, child_holder, child_amount in children
         for value in (child_id, spent["programme_id"], spent["receivable_id"], voucher_id,
                       spent["root_id"], child_holder, child_amount, spent["maturity"], by,
                       now)])
    return new_id


def finance_voucher(conn: psycopg.Connection, voucher_id: str, *, holder: str | None, by: str,
                    now: datetime) -> Row:
    """The holder sells its voucher to the bank at the programme's advance rate: the bank pays the
    advance now and collects the face value from the core enterprise at maturity."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        spent = _spend(cur, voucher_id, holder, "financed")
        if spent["maturity"] <= now:
            raise LendingError(f"voucher {voucher_id} has matured: it is paid, not financed")
        terms = cur.execute(
            "SELECT p.advance_rate, r.trade_status FROM programmes p JOIN receivables r"
            " ON r.receivable_id = %s WHERE p.programme_id = %s",
            (spent["receivable_id"], spent["programme_id"])).fetchone()
        assert terms is not None
        if terms["trade_status"] == "contradicted":
            raise LendingError(f"voucher {voucher_id}: telemetry contradicts the trade behind it")
        paid = advance(Decimal(spent["amount"]), float(terms["advance_rate"]))
        cur.execute("UPDATE vouchers SET financed_amount = %s, financed_at = %s, financed_by = %s"
                    " WHERE voucher_id = %s", (paid, now, by, voucher_id))
        return _voucher(cur, voucher_id, None)


def pay_payable(conn: psycopg.Connection, root_id: str, amount: Decimal | float, *,
                payer_scope: str | None, by: str, now: datetime) -> Row:
    """The core enterprise pays a confirmed payable: the bank is repaid what it financed, holders
    get the rest; every voucher under it is settled and late alerts are resolved."""
    try:
        cents = money(amount)
    except FinancingError as exc:
        raise InvalidRequest(str(exc)) from None
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        root = cur.execute(
            "SELECT v.voucher_id, v.amount, p.core_id, p.facility_id FROM vouchers v"
            " JOIN programmes p USING (programme_id) WHERE v.voucher_id = %s"
            " AND v.parent_id IS NULL FOR UPDATE OF v", (root_id,)).fetchone()
        if root is None or (payer_scope is not None and root["core_id"] != payer_scope):
            raise NotFound("payable you owe", root_id)
        if cur.execute("SELECT 1 FROM voucher_payments WHERE root_id = %s",
                       (root_id,)).fetchone() is not None:
            raise LendingError(f"payable {root_id} is already paid")
        leaves = cur.execute(
            "SELECT voucher_id, holder_id, amount, financed_amount FROM vouchers"
            " WHERE root_id = %s AND status IN ('active', 'financed') FOR UPDATE",
            (root_id,)).fetchall()
        try:
            payouts = settle(cents, Decimal(root["amount"]), [
                Leaf(r["voucher_id"], r["holder_id"], Decimal(r["amount"]),
                     None if r["financed_amount"] is None else Decimal(r["financed_amount"]))
                for r in leaves])
        except FinancingError as exc:
            raise InvalidRequest(str(exc)) from None
        cur.execute("UPDATE vouchers SET status = 'settled', settled_at = %s WHERE root_id = %s"
                    " AND status IN ('active', 'financed')", (now, root_id))
        row = cur.execute(
            "INSERT INTO voucher_payments (root_id, amount, paid_at, paid_by, payouts)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING root_id, amount, paid_at, paid_by, payouts",
            (root_id, cents, now, by, Jsonb([{"voucher_id": p.voucher_id, "payee": p.payee,
                                             "amount": str(p.amount)} for p in payouts]))).fetchone()
        assert row is not None
        keys = [str(r["key"]) for r in cur.execute(
            "SELECT key FROM alerts WHERE key LIKE %s AND status <> 'resolved'",
            (f"{AlertType.PAYABLE_LATE}:voucher:{root_id}%",)).fetchall()]
        _resolve(conn, keys, "paid", now)
        return row


# --- alerts from time: overdue drawdowns, late payables --------------------------------------------

def _overdue_key(drawdown_id: str) -> str:
    return f"{AlertType.DRAWDOWN_OVERDUE}:drawdown:{drawdown_id}"


def _late_key(root_id: str, facility_id: str | None = None) -> str:
    return f"{AlertType.PAYABLE_LATE}:voucher:{root_id}" + (f":{facility_id}" if facility_id else "")


def _resolve(conn: psycopg.Connection, keys: Sequence[str], why: str, now: datetime) -> None:
    if not keys:
        return
    rows = conn.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = 'system',"
        " comment = %s, cleared = true WHERE key = ANY(%s) AND status <> 'resolved'"
        " RETURNING id, facility_id, lot_id, type, severity", (now, why, list(keys))).fetchall()
    for alert_id, facility_id, lot_id, kind, severity in rows:
        conn.execute("SELECT pg_notify(%s, %s)", (ALERTS_CHANNEL, json.dumps({
            "id": alert_id, "facility_id": facility_id, "lot_id": lot_id, "type": kind,
            "severity": severity, "status": "resolved"})))


@dataclass
class SweepResult:
    overdue: int = 0
    late: int = 0
    trades: int = 0


def sweep(conn: psycopg.Connection, now: datetime,
          check_trade: Callable[[psycopg.Connection, Row, datetime], Row | None] | None = None,
          ) -> SweepResult:
    """Raise what time alone makes true: a drawdown past its maturity (an overdue alert on its
    facility) and a confirmed payable past its maturity and unpaid (a critical alert on the
    programme and a warning on every holder's facility). Idempotent: an open alert is not raised
    twice."""
    result = SweepResult()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        for d in cur.execute(
                "SELECT drawdown_id, facility_id, amount - repaid AS owed, currency, maturity"
                " FROM drawdowns WHERE status = 'approved' AND maturity < %s", (now,)).fetchall():
            days = (now - d["maturity"]).days
            alert = Alert(
                key=_overdue_key(d["drawdown_id"]), type=AlertType.DRAWDOWN_OVERDUE,
                severity=Severity.CRITICAL if days >= 30 else Severity.WARNING,
                facility_id=d["facility_id"], lot_id=None,
                message=(f"drawdown {d['drawdown_id']} is past its maturity "
                         f"{d['maturity']:%Y-%m-%d}: {d['owed']:,.2f} {d['currency']} unpaid"),
                evidence={"drawdown_id": d["drawdown_id"], "owed": str(d["owed"]),
                          "maturity": d["maturity"].isoformat(), "days_past_due": days},
                raised_at=now, auto_resolve=False)
            if insert_alert(conn, alert) is not None:
                result.overdue += 1
        for v in cur.execute(
                "SELECT v.voucher_id, v.amount, v.maturity, p.facility_id, p.programme_id,"
                " p.currency, p.core_id FROM vouchers v JOIN programmes p USING (programme_id)"
                " WHERE v.parent_id IS NULL AND v.maturity < %s AND NOT EXISTS"
                " (SELECT 1 FROM voucher_payments vp WHERE vp.root_id = v.voucher_id)",
                (now,)).fetchall():
            holders = cur.execute(
                "SELECT DISTINCT ON (v.holder_id) v.holder_id, f.facility_id FROM vouchers v"
                " JOIN facilities f ON f.borrower_id = v.holder_id"
                " LEFT JOIN programmes p ON p.facility_id = f.facility_id"
                " WHERE v.root_id = %s AND v.status IN ('active', 'financed')"
                " AND p.programme_id IS NULL ORDER BY v.holder_id, f.facility_id",
                (v["voucher_id"],)).fetchall()
            evidence = {"voucher_id": v["voucher_id"], "programme_id": v["programme_id"],
                        "amount": str(v["amount"]), "maturity": v["maturity"].isoformat(),
                        "core_id": v["core_id"], "holders": [h["holder_id"] for h in holders]}
            message = (f"{v['core_id']} has not paid payable {v['voucher_id']} "
                       f"({v['amount']:,.2f} {v['currency']}) due {v['maturity']:%Y-%m-%d}")
            targets = [(v["facility_id"], None, Severity.CRITICAL)] + [
                (h["facility_id"], h["facility_id"], Severity.WARNING) for h in holders]
            for facility_id, suffix, severity in targets:
                raised = insert_alert(conn, Alert(
                    key=_late_key(v["voucher_id"], suffix), type=AlertType.PAYABLE_LATE,
                    severity=severity, facility_id=facility_id, lot_id=None, message=message,
                    evidence=evidence, raised_at=now, auto_resolve=False))
                if raised is not None:
                    result.late += 1
    if check_trade is not None:
        result.trades = check_trades(conn, now, check_trade)
    return result


# --- trade proven by sensors ----------------------------------------------------------------------

def check_trades(conn: psycopg.Connection, now: datetime,
                 judge: Callable[[psycopg.Connection, Row, datetime], Row | None]) -> int:
    """Judge receivables whose shipment is not yet proven: ``judge`` returns None (no verdict
    yet) or {status: verified|pending|contradicted, evidence}. Verified makes the receivable
    eligible by itself; contradicted flags a possible fictitious trade (a critical alert)."""
    changed = 0
    with conn.cursor(row_factory=dict_row) as cur:
        pending = cur.execute(
            "SELECT r.receivable_id, r.facility_id, r.shipment, r.amount, r.debtor, r.debtor_id"
            " FROM receivables r WHERE r.trade_status = 'pending' ORDER BY r.receivable_id"
            " LIMIT 500").fetchall()
    for rec in pending:
        try:
            verdict = judge(conn, rec, now)
        except Exception:  # one bad shipment must not stop the others
            log.exception("judging the shipment of receivable %s failed", rec["receivable_id"])
            continue
        if verdict is None or verdict["status"] == "pending":
            if verdict is not None:
                with conn.transaction():
                    conn.execute("UPDATE receivables SET trade_evidence = %s, trade_checked_at = %s"
                                 " WHERE receivable_id = %s",
                                 (Jsonb({**(verdict.get("evidence") or {}),
                                         "reasons": list(verdict.get("reasons") or [])}),
                                  now, rec["receivable_id"]))
            continue
        record_trade_verdict(conn, rec["receivable_id"], verdict["status"],
                             verdict.get("evidence") or {}, verdict.get("reasons") or [], now)
        changed += 1
    return changed


def record_trade_verdict(conn: psycopg.Connection, receivable_id: str, status: str,
                         evidence: dict[str, Any], reasons: Sequence[str], now: datetime) -> Row:
    if status not in ("verified", "contradicted", "pending"):
        raise InvalidRequest(f"unknown trade status {status!r}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE receivables SET trade_status = %s, trade_evidence = %s, trade_checked_at = %s,"
            " verified = CASE WHEN %s = 'verified' THEN true ELSE verified END,"
            " verified_at = CASE WHEN %s = 'verified' THEN coalesce(verified_at, %s)"
            "   ELSE verified_at END,"
            " verified_by = CASE WHEN %s = 'verified' THEN coalesce(verified_by, 'telemetry')"
            "   ELSE verified_by END"
            " WHERE receivable_id = %s RETURNING receivable_id, facility_id, amount, debtor",
            (status, Jsonb({**evidence, "reasons": list(reasons)}), now, status, status, now,
             status, receivable_id)).fetchone()
        if row is None:
            raise NotFound("receivable", receivable_id)
        if status == "contradicted":
            insert_alert(conn, Alert(
                key=f"{AlertType.FICTITIOUS_TRADE}:receivable:{receivable_id}",
                type=AlertType.FICTITIOUS_TRADE, severity=Severity.CRITICAL,
                facility_id=row["facility_id"], lot_id=None,
                message=(f"possible fictitious trade: receivable {receivable_id} "
                         f"({row['amount']:,.2f} on {row['debtor']}): " + "; ".join(reasons)),
                evidence={"receivable_id": receivable_id, **evidence, "reasons": list(reasons)},
                raised_at=now, auto_resolve=False))
        notify_lending(conn, [row["facility_id"]])
        return row


class FinancingSweeper:
    """Runs :func:`sweep` every ``every_s`` seconds on its own connection until stopped."""

    def __init__(self, database_url: str, every_s: float = 30.0,
                 check_trade: Callable[[psycopg.Connection, Row, datetime], Row | None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.database_url, self.every_s, self.check_trade = database_url, every_s, check_trade
        self.clock = clock
        self.runs = 0
        self.last = SweepResult()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    while not stop.is_set():
                        now = self.clock() if self.clock else datetime.now(UTC)
                        self.last = sweep(conn, now, self.check_trade)
                        self.runs += 1
                        stop.wait(self.every_s)
            except psycopg.OperationalError as exc:
                log.warning("financing sweep: database unavailable (%s); retrying", exc)
                stop.wait(min(self.every_s, 5.0))

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="financing-sweep",
                                  daemon=True)
        thread.start()
        return thread
