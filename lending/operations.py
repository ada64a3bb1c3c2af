"""Portfolio operations on the store: load a portfolio, post prices, releases, repayments, sales,
and the alert lifecycle. Each write tells the engines which facilities to recompute (NOTIFY)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from lending.domain.alerts import Alert, needs_comment
from lending.domain.inspection import sensor_quantity_at
from lending.domain.model import DomainError, Lot, PricePoint, ReleaseOrder, ReleaseStatus
from lending.domain.pledges import PledgeConflict, pledge_conflicts
from lending.domain.quantity import TrustPolicy
from lending.domain.rules import duplicate_pledge_finding
from lending.portfolio_file import PortfolioIn
from lending.store import (
    ALERT_COLUMNS,
    ALERTS_CHANNEL,
    alert_from_row,
    facilities_for_commodities,
    insert_alert,
    notify_lending,
    notify_prices,
    terms_json,
)


class LendingError(ValueError):
    """An operation the portfolio refuses (unknown id, wrong state, duplicate pledge)."""


class InvalidRequest(LendingError):
    """Refused because of what the caller sent rather than the portfolio's state (the API: 422)."""


class CommentRequired(InvalidRequest):
    """A critical alert, or one only an officer closes, is resolved only with a comment."""


class DuplicatePledgeError(LendingError):
    def __init__(self, conflicts: Sequence[PledgeConflict]) -> None:
        self.conflicts = list(conflicts)
        super().__init__("duplicate pledge refused:\n" + "\n".join(
            "  " + c.describe() for c in conflicts))


@dataclass(frozen=True, slots=True)
class LoadResult:
    commodities: int
    borrowers: int
    facilities: int
    lots: int
    receivables: int
    prices: int


def existing_lots(conn: psycopg.Connection) -> list[Lot]:
    sensors: dict[str, list[str]] = {}
    for device, lot_id in conn.execute("SELECT device_id, lot_id FROM lot_sensors").fetchall():
        sensors.setdefault(lot_id, []).append(device)
    return [Lot(r[0], r[1], r[2], r[3], r[4], r[5], tuple(sensors.get(r[0], ())))
            for r in conn.execute("SELECT lot_id, facility_id, commodity, declared_quantity,"
                                  " unit_weight_kg, registration_no FROM lots").fetchall()]


def _attempt(c: PledgeConflict, now: datetime | None = None) -> dict[str, object]:
    """One refused claim on a pledged lot: which facility and lot tried, the number as given."""
    seen: dict[str, object] = {"lot": c.lot.id, "facility": c.lot.facility_id,
                               "registration_no": c.lot.registration_no,
                               "sensors": list(c.lot.sensors), "matched": c.what}
    return seen if now is None else {"at": now.isoformat(), **seen}


def _record_attempts(conn: psycopg.Connection, key: str, attempts: list[dict[str, object]]) -> bool:
    """Append ``attempts`` to the evidence of the open alert of ``key``; False when none is open."""
    row = conn.execute(
        "UPDATE alerts SET evidence = jsonb_set(evidence, '{attempts}',"
        " coalesce(evidence->'attempts', '[]'::jsonb) || %s::jsonb)"
        " WHERE key = %s AND status <> 'resolved' RETURNING id, facility_id, lot_id, type,"
        " severity, status", (Jsonb(attempts), key)).fetchone()
    if row is None:
        return False
    conn.execute("SELECT pg_notify(%s, %s)", (ALERTS_CHANNEL, json.dumps({
        "id": row[0], "facility_id": row[1], "lot_id": row[2], "type": row[3],
        "severity": row[4], "status": "escalated"})))
    return True


def _alert_duplicates(conn: psycopg.Connection, conflicts: Sequence[PledgeConflict],
                      now: datetime) -> None:
    """Alert the facility whose goods someone tried to pledge again (committed on its own).
    While its duplicate-pledge alert is open, every further attempt is appended to the alert's
    ``attempts`` (when, which facility and lot tried, the number as given): none leaves no trace."""
    by_lot: dict[str, list[PledgeConflict]] = {}
    for c in conflicts:
        by_lot.setdefault(c.existing.id, []).append(c)
    for lot_id, found in by_lot.items():
        finding = duplicate_pledge_finding(found[0].existing.facility_id, lot_id,
                                           [c.describe() for c in found])
        attempts = [_attempt(c, now) for c in found]
        if _record_attempts(conn, finding.key, attempts):
            continue
        raised = insert_alert(conn, Alert(
            key=finding.key, type=finding.type, severity=finding.severity,
            facility_id=finding.facility_id, lot_id=lot_id, message=finding.message,
            evidence={**finding.evidence, "attempted": [_attempt(c) for c in found],
                      "attempts": attempts},
            raised_at=now, auto_resolve=False))
        if raised is None:  # another refused load opened it just now: add to that one
            _record_attempts(conn, finding.key, attempts)


def _registration_clashes(conn: psycopg.Connection, lots: Sequence[Lot]) -> list[PledgeConflict]:
    """The pledges whose registration number the DATABASE's key says ``lots`` repeat (its unique
    index refused a write the check in Python let through)."""
    new = {lot.id: lot for lot in lots}
    held = {lot.id: lot for lot in existing_lots(conn)}
    rows = conn.execute(
        "SELECT n.lot_id, l.lot_id FROM unnest(%s::text[], %s::text[]) AS n(lot_id, number)"
        " JOIN lots l ON l.registration_key = pledge_registration_key(n.number)"
        " AND l.lot_id <> n.lot_id",
        ([lot.id for lot in lots], [lot.registration_no for lot in lots])).fetchall()
    return [PledgeConflict(new[a], held[b], "registration number") for a, b in rows
            if a in new and b in held]


def load_portfolio(conn: psycopg.Connection, portfolio: PortfolioIn, now: datetime) -> LoadResult:
    """Insert or update everything in ``portfolio`` in one transaction.

    A lot whose id, registration number or sensor is already pledged to another facility is a
    duplicate pledge: nothing is written, the holding facility gets a critical alert, and
    :class:`DuplicatePledgeError` says which lot clashed with which.
    """
    lots = [lot.domain() for lot in portfolio.lots]
    try:
        with conn.transaction():
            # The check and the writes share one transaction holding the lock: a pledge committed
            # by another load in between cannot slip past the check.
            conn.execute("LOCK TABLE lots IN SHARE ROW EXCLUSIVE MODE")
            conflicts = pledge_conflicts(lots, existing_lots(conn))
            if conflicts:
                known = {r[0] for r in conn.execute("SELECT facility_id FROM facilities").fetchall()}
                alertable = [c for c in conflicts if c.existing.facility_id in known]
            else:
                _write_portfolio(conn, portfolio, lots)
    except psycopg.errors.UniqueViolation:
        # The database's registration key (lots_registration_key) refused what the check passed:
        # the same refusal, alert and error as the check's.
        with conn.transaction():
            conflicts = alertable = _registration_clashes(conn, lots)
        if not conflicts:
            raise
    if conflicts:
        with conn.transaction():
            _alert_duplicates(conn, alertable, now)
        raise DuplicatePledgeError(conflicts)
    return LoadResult(len(portfolio.commodities), len(portfolio.borrowers),
                      len(portfolio.facilities), len(lots), len(portfolio.receivables),
                      len(portfolio.prices))


def _write_portfolio(conn: psycopg.Connection, portfolio: PortfolioIn, lots: Sequence[Lot]) -> None:
    with conn.cursor() as cur:
        for c in portfolio.commodities:
            cur.execute(
                "INSERT INTO commodities VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name)"
                " DO UPDATE SET unit = EXCLUDED.unit, unit_kg = EXCLUDED.unit_kg,"
                " liquidation_days = EXCLUDED.liquidation_days,"
                " temp_min = EXCLUDED.temp_min, temp_max = EXCLUDED.temp_max,"
                " humidity_min = EXCLUDED.humidity_min, humidity_max = EXCLUDED.humidity_max",
                (c.name, c.unit, c.unit_kg, c.liquidation_days, *(c.temp_c or (None, None)),
                 *(c.humidity_pct or (None, None))))
        for b in sorted(portfolio.borrowers, key=lambda b: b.core is not None):
            cur.execute(
                "INSERT INTO borrowers (borrower_id, tenant, name, role, core_id) VALUES"
                " (%s, %s, %s, %s, %s) ON CONFLICT (borrower_id) DO UPDATE SET"
                " name = EXCLUDED.name, role = EXCLUDED.role, core_id = EXCLUDED.core_id",
                (b.id, b.tenant, b.name, str(b.role), b.core))
        for f in portfolio.facilities:
            d = f.domain()
            cur.execute(
                "INSERT INTO facilities VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (facility_id) DO UPDATE SET borrower_id = EXCLUDED.borrower_id,"
                " currency = EXCLUDED.currency, line = EXCLUDED.line,"
                " reserves = EXCLUDED.reserves,"
                " value_floor = EXCLUDED.value_floor, terms = EXCLUDED.terms",
                (d.id, d.borrower_id, d.currency, d.line, d.outstanding, d.reserves,
                 d.value_floor, terms_json(d.terms)))
        _copy_lots(cur, lots)
        for r in portfolio.receivables:
            cur.execute(
                "INSERT INTO receivables VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (receivable_id) DO UPDATE SET amount = EXCLUDED.amount,"
                " due = EXCLUDED.due, related_party = EXCLUDED.related_party,"
                " disputed = EXCLUDED.disputed, paid = EXCLUDED.paid",
                (r.id, r.facility, r.debtor, r.amount, r.due, r.related_party, r.disputed, r.paid))
        insert_prices(conn, [p.domain() for p in portfolio.prices])
        notify_lending(conn, None)


# A device id the devices table accepts (its CHECK); the same rule as the portfolio's sensor ids.
_DEVICE_SLUG = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_LOT_UPDATE = ("commodity, declared_quantity, unit_weight_kg, site, registration_no, vehicle,"
               " geofence, business_hours")


def _copy_lots(cur: psycopg.Cursor[tuple[object, ...]], lots: Sequence[Lot]) -> None:
    """Lots and their sensors in bulk: COPY into temporary tables, then one INSERT ... SELECT ...
    ON CONFLICT per table (an upsert, as before); linear in the number of lots. Each sensor not
    registered yet becomes a device of its borrower's tenant, bound to its lot, so the gateway
    accepts its telemetry (a device already registered is left as it is)."""
    cur.execute("CREATE TEMP TABLE pw_load_lots (lot_id text, facility_id text, commodity text,"
                " declared_quantity float8, unit_weight_kg float8, registration_no text,"
                " site text, vehicle text, geofence jsonb, business_hours int4range)"
                " ON COMMIT DROP")
    cur.execute("CREATE TEMP TABLE pw_load_sensors (device_id text, lot_id text) ON COMMIT DROP")
    columns = ("lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
               " registration_no, site, vehicle, geofence, business_hours")
    with cur.copy(f"COPY pw_load_lots ({columns}) FROM STDIN") as copy:
        for lot in lots:
            fence = Jsonb([list(p) for p in lot.geofence]) if lot.geofence else None
            copy.write_row((lot.id, lot.facility_id, lot.commodity, lot.declared_quantity,
                            lot.unit_weight_kg, lot.registration_no, lot.site, lot.vehicle, fence,
                            Range(*lot.business_hours, bounds="[)")))
    with cur.copy("COPY pw_load_sensors (device_id, lot_id) FROM STDIN") as copy:
        for lot in lots:
            for device in lot.sensors:
                copy.write_row((device, lot.id))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _LOT_UPDATE.split(", "))
    cur.execute(f"INSERT INTO lots ({columns}) SELECT {columns} FROM pw_load_lots"
                f" ON CONFLICT (lot_id) DO UPDATE SET {updates}")
    cur.execute("DELETE FROM lot_sensors WHERE lot_id IN (SELECT lot_id FROM pw_load_lots)")
    cur.execute("INSERT INTO lot_sensors (device_id, lot_id)"
                " SELECT device_id, lot_id FROM pw_load_sensors")
    cur.execute(
        "INSERT INTO devices (device_id, tenant, kind, bound_to)"
        " SELECT s.device_id, b.tenant,"
        " CASE WHEN l.vehicle IS NOT NULL THEN 'vehicle' ELSE 'warehouse' END, s.lot_id"
        " FROM pw_load_sensors s JOIN lots l USING (lot_id) JOIN facilities f USING (facility_id)"
        " JOIN borrowers b USING (borrower_id)"
        " WHERE b.tenant ~ %s AND s.device_id ~ %s"
        " ON CONFLICT (device_id) DO NOTHING", (_DEVICE_SLUG, _DEVICE_SLUG))


def insert_prices(conn: psycopg.Connection, points: Sequence[PricePoint]) -> int:
    if not points:
        return 0
    known = {r[0] for r in conn.execute("SELECT name FROM commodities").fetchall()}
    unknown = sorted({p.commodity for p in points} - known)
    if unknown:
        raise LendingError(f"unknown commodities: {', '.join(unknown)} (define them in a portfolio"
                           " file first)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO prices VALUES (%s, %s, %s, %s) ON CONFLICT (commodity, time)"
            " DO UPDATE SET price = EXCLUDED.price, currency = EXCLUDED.currency",
            [(p.commodity, p.time, p.price, p.currency) for p in points])
    notify_prices(conn, points)
    return len(points)


def post_prices(conn: psycopg.Connection, points: Sequence[PricePoint]) -> set[str]:
    """Store prices; the facilities holding those commodities are recomputed."""
    with conn.transaction():
        insert_prices(conn, points)
        affected = facilities_for_commodities(conn, sorted({p.commodity for p in points}))
        notify_lending(conn, affected)
    return affected


def _release(conn: psycopg.Connection, release_id: str) -> tuple[ReleaseOrder, str]:
    row = conn.execute(
        "SELECT r.release_id, r.lot_id, r.quantity, r.status, r.requested_at, r.approved_at,"
        " r.executed_at, l.facility_id FROM release_orders r JOIN lots l USING (lot_id)"
        " WHERE release_id = %s FOR UPDATE OF r", (release_id,)).fetchone()
    if row is None:
        raise LendingError(f"no release order {release_id!r}")
    return ReleaseOrder(row[0], row[1], row[2], ReleaseStatus(row[3]), row[4], row[5],
                        row[6]), row[7]


def request_release(conn: psycopg.Connection, release_id: str, lot_id: str, quantity: float,
                    now: datetime) -> ReleaseOrder:
    try:
        order = ReleaseOrder(release_id, lot_id, quantity, requested_at=now)
    except DomainError as exc:
        raise LendingError(str(exc)) from None
    with conn.transaction():
        lot = conn.execute("SELECT declared_quantity FROM lots WHERE lot_id = %s FOR UPDATE",
                           (lot_id,)).fetchone()
        if lot is None:
            raise LendingError(f"no lot {lot_id!r}")
        pending = conn.execute(
            "SELECT coalesce(sum(quantity), 0) FROM release_orders WHERE lot_id = %s"
            " AND status IN ('requested', 'approved')", (lot_id,)).fetchone()[0]  # type: ignore[index]
        if quantity + pending > lot[0]:
            raise LendingError(f"lot {lot_id} holds {lot[0]:g} units and {pending:g} are already "
                               f"requested or approved; cannot release {quantity:g} more")
        inserted = conn.execute(
            "INSERT INTO release_orders (release_id, lot_id, quantity, status, requested_at)"
            " VALUES (%s, %s, %s, 'requested', %s) ON CONFLICT DO NOTHING RETURNING 1",
            (release_id, lot_id, quantity, now)).fetchone()
        if inserted is None:
            raise LendingError(f"release order {release_id!r} already exists")
    return order


def advance_release(conn: psycopg.Connection, release_id: str, to: ReleaseStatus,
                    now: datetime) -> ReleaseOrder:
    """Approve, execute or reject a release. Executing it takes the goods off the lot's declared
    quantity, so the limit follows the smaller collateral."""
    with conn.transaction():
        order, facility_id = _release(conn, release_id)
        try:
            moved = order.advance(to, now)
        except DomainError as exc:
            raise LendingError(str(exc)) from None
        conn.execute("UPDATE release_orders SET status = %s, approved_at = %s, executed_at = %s"
                     " WHERE release_id = %s",
                     (str(moved.status), moved.approved_at, moved.executed_at, release_id))
        if to is ReleaseStatus.EXECUTED:
            held = conn.execute("SELECT declared_quantity FROM lots WHERE lot_id = %s FOR UPDATE",
                                (order.lot_id,)).fetchone()[0]  # type: ignore[index]
            if order.quantity > held:
                raise LendingError(f"lot {order.lot_id} holds {held:g} units; release "
                                   f"{release_id} of {order.quantity:g} cannot be executed")
            conn.execute("UPDATE lots SET declared_quantity = declared_quantity - %s"
                         " WHERE lot_id = %s", (order.quantity, order.lot_id))
        notify_lending(conn, [facility_id])
    return moved


def record_sale(conn: psycopg.Connection, facility_id: str, amount: float,
                at: datetime) -> dict[str, object]:
    """Store a sales signal (it feeds sales velocity and the sales-collapse rule); the stored row."""
    if not (0 <= amount < 1e15):
        raise LendingError(f"a sale must be an amount >= 0, got {amount!r}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO sales (facility_id, time, amount) SELECT facility_id, %s, %s"
            " FROM facilities WHERE facility_id = %s RETURNING id, facility_id, time, amount",
            (at, amount, facility_id)).fetchone()
        if row is None:
            raise LendingError(f"no facility {facility_id!r}")
        notify_lending(conn, [facility_id])
    return row


def get_alert(conn: psycopg.Connection, alert_id: int) -> Alert:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s FOR UPDATE",
                          (alert_id,)).fetchone()
    if row is None:
        raise LendingError(f"no alert {alert_id}")
    return alert_from_row(row)


def acknowledge_alert(conn: psycopg.Connection, alert_id: int, by: str, now: datetime) -> Alert:
    with conn.transaction():
        try:
            alert = get_alert(conn, alert_id).acknowledge(now, by)
        except DomainError as exc:
            raise LendingError(str(exc)) from None
        conn.execute("UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s,"
                     " acknowledged_by = %s WHERE id = %s", (now, by, alert_id))
        conn.execute("SELECT pg_notify('pw_alerts', %s)", (json.dumps(
            {"id": alert_id, "facility_id": alert.facility_id, "status": "acknowledged"}),))
    return alert


def resolve_alert(conn: psycopg.Connection, alert_id: int, by: str, comment: str | None,
                  now: datetime) -> Alert:
    """Resolve an alert. A critical one, or one only an officer closes (outbound, geofence exit,
    tamper, spoofing, duplicate pledge), needs a comment that says why: :class:`CommentRequired`
    otherwise (the API answers 422, the CLI exits 2)."""
    comment = (comment or "").strip() or None
    with conn.transaction():
        current = get_alert(conn, alert_id)
        if current.active and comment is None and needs_comment(current):
            raise CommentRequired(f"alert {alert_id} ({current.severity} {current.type}) is resolved"
                                  " only with a comment saying why (--comment / \"comment\")")
        try:
            alert = current.resolve(now, by, comment)
        except DomainError as exc:
            raise LendingError(str(exc)) from None
        conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
                     " comment = %s WHERE id = %s", (now, by, comment, alert_id))
        conn.execute("SELECT pg_notify('pw_alerts', %s)", (json.dumps(
            {"id": alert_id, "facility_id": alert.facility_id, "status": "resolved"}),))
    return alert


def list_alerts(conn: psycopg.Connection, facility_id: str | None = None,
                include_resolved: bool = False, limit: int = 100) -> list[Alert]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE (%(f)s::text IS NULL OR facility_id = %(f)s)"
            " AND (%(all)s OR status <> 'resolved') ORDER BY id DESC LIMIT %(n)s",
            {"f": facility_id, "all": include_resolved, "n": limit}).fetchall()
    return [alert_from_row(r) for r in rows]



# --- field inspections ------------------------------------------------------------------------

INSPECTION_COLUMNS = ("i.id, i.lot_id, i.facility_id, i.counted_quantity, i.counted_at,"
                      " i.counted_by, i.note, i.sensor_quantity, i.recorded_by, i.created_at")
MAX_INSPECTION_NOTE = 2000
MAX_COUNTED_BY = 200


@dataclass(frozen=True, slots=True)
class _Readings:
    """Readings by (device, metric), oldest first: a series source for the domain."""

    series: dict[tuple[str, str], list[tuple[datetime, float]]]

    def get(self, device: str, metric: str, /) -> Sequence[tuple[datetime, float]]:
        return self.series.get((device, metric), [])


def _sensor_quantity(conn: psycopg.Connection, lot: Lot, at: datetime,
                     policy: TrustPolicy) -> float | None:
    """What the lot's sensors said at ``at`` (see :func:`lending.domain.inspection.sensor_quantity_at`):
    each bound sensor's latest weight and count within the sample window before ``at``."""
    rows = conn.execute(
        "SELECT d.id, m.metric, r.time, r.value FROM unnest(%s::text[]) AS d(id)"
        " CROSS JOIN unnest(ARRAY['weight_kg', 'rfid_count']) AS m(metric)"
        " CROSS JOIN LATERAL (SELECT time, value FROM readings WHERE device_id = d.id"
        " AND metric = m.metric AND time <= %s AND time > %s ORDER BY time DESC LIMIT 1) r",
        (list(lot.sensors), at, at - policy.inspection_sample_window)).fetchall()
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for device, metric, time, value in rows:
        series.setdefault((device, metric), []).append((time, float(value)))
    return sensor_quantity_at(lot, _Readings(series), at, policy)


def record_inspection(conn: psycopg.Connection, lot_id: str, counted_quantity: float, *,
                      counted_by: str, recorded_by: str, now: datetime,
                      counted_at: datetime | None = None, note: str = "",
                      policy: TrustPolicy | None = None) -> dict[str, object]:
    """Record a physical count of a lot (made at ``counted_at``, now if None), with what its
    sensors said then; the lot's facility is recomputed (the count outranks every sensor)."""
    policy = policy or TrustPolicy()
    at = counted_at or now
    if not (isinstance(counted_quantity, int | float) and math.isfinite(counted_quantity)
            and 0 <= counted_quantity <= 1e12):
        raise InvalidRequest(f"a count must be a number of units between 0 and 1e12, got "
                             f"{counted_quantity!r}")
    if at.tzinfo is None:
        raise InvalidRequest("the time of a count needs a time zone")
    if at > now + policy.inspection_max_future:
        raise InvalidRequest(f"a count cannot be dated in the future ({at.isoformat()})")
    counted_by = counted_by.strip()
    if not 0 < len(counted_by) <= MAX_COUNTED_BY:
        raise InvalidRequest(f"who counted must be 1 to {MAX_COUNTED_BY} characters")
    if len(note) > MAX_INSPECTION_NOTE:
        raise InvalidRequest(f"a note is at most {MAX_INSPECTION_NOTE} characters")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        found = conn.execute(
            "SELECT lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
            " registration_no, coalesce((SELECT array_agg(device_id ORDER BY device_id)"
            " FROM lot_sensors s WHERE s.lot_id = l.lot_id), '{}'), vehicle"
            " FROM lots l WHERE lot_id = %s FOR SHARE", (lot_id,)).fetchone()
        if found is None:
            raise LendingError(f"no lot {lot_id!r}")
        lot = Lot(found[0], found[1], found[2], float(found[3]), float(found[4]), found[5],
                  tuple(found[6]), vehicle=found[7])
        sensors = _sensor_quantity(conn, lot, at, policy)
        row = cur.execute(
            "INSERT INTO inspections AS i (lot_id, facility_id, counted_quantity, counted_at,"
            " counted_by, note, sensor_quantity, recorded_by, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {INSPECTION_COLUMNS}",
            (lot.id, lot.facility_id, float(counted_quantity), at, counted_by, note, sensors,
             recorded_by, now)).fetchone()
        assert row is not None
        notify_lending(conn, [lot.facility_id])
    return row


def list_inspections(conn: psycopg.Connection, lot_id: str | None = None,
                     limit: int = 100) -> list[dict[str, object]]:
    """Inspections newest first (by when they were counted), of one lot or all."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {INSPECTION_COLUMNS} FROM inspections i"
            " WHERE (%(lot)s::text IS NULL OR i.lot_id = %(lot)s)"
            " ORDER BY i.counted_at DESC, i.id DESC LIMIT %(n)s",
            {"lot": lot_id, "n": limit}).fetchall()


RECEIVABLE_COLUMNS = ("receivable_id, facility_id, debtor, amount, due, related_party, disputed,"
                      " paid, verified, verified_at, verified_by, posted_by, debtor_id,"
                      " programme_id, confirmed_at, confirmed_by, shipment, trade_status,"
                      " trade_evidence")


def insert_receivable(conn: psycopg.Connection, receivable_id: str, facility_id: str, debtor: str,
                      amount: float, due: datetime, related_party: bool = False,
                      disputed: bool = False, *, verified: bool, posted_by: str,
                      now: datetime | None = None, debtor_id: str | None = None,
                      shipment: dict[str, object] | None = None) -> dict[str, object]:
    """Record an invoice (a receivable) of a facility's borrower; the facility is recomputed.
    An unverified one (posted by the enterprise) is not eligible until an officer verifies it, its
    debtor confirms it, or telemetry proves the shipment it names (``trade_status`` pending)."""
    if not (0 <= amount < 1e15):
        raise LendingError(f"a receivable must be an amount >= 0, got {amount!r}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        seller = cur.execute("SELECT borrower_id FROM facilities WHERE facility_id = %s",
                             (facility_id,)).fetchone()
        if seller is None:
            raise LendingError(f"no facility {facility_id!r}")
        if debtor_id is not None:
            found = cur.execute("SELECT 1 FROM borrowers WHERE borrower_id = %s",
                                (debtor_id,)).fetchone()
            if found is None:
                raise InvalidRequest(f"no borrower {debtor_id!r} to owe this receivable")
            if debtor_id == seller["borrower_id"]:
                raise InvalidRequest("a borrower cannot owe a receivable to itself")
        if shipment is not None:
            _check_shipment(cur, seller["borrower_id"], debtor_id, shipment)
        row = cur.execute(
            "INSERT INTO receivables (receivable_id, facility_id, debtor, amount, due,"
            " related_party, disputed, verified, verified_at, verified_by, posted_by, debtor_id,"
            " shipment, trade_status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {RECEIVABLE_COLUMNS}",
            (receivable_id, facility_id, debtor, amount, due, related_party, disputed, verified,
             (now or datetime.now(UTC)) if verified else None, posted_by if verified else None,
             posted_by, debtor_id, None if shipment is None else Jsonb(shipment),
             "none" if shipment is None else "pending")).fetchone()
        if row is None:
            raise LendingError(f"receivable {receivable_id!r} already exists")
        notify_lending(conn, [facility_id])
    return row


def _check_shipment(cur: psycopg.Cursor[dict[str, Any]], seller_id: str, debtor_id: str | None,
                    shipment: dict[str, object]) -> None:
    """The goods leave one of the seller's lots and arrive in one of the debtor's."""
    lots = {r["lot_id"]: r["borrower_id"] for r in cur.execute(
        "SELECT l.lot_id, f.borrower_id FROM lots l JOIN facilities f USING (facility_id)"
        " WHERE l.lot_id = ANY(%s)",
        ([shipment["seller_lot_id"], shipment["buyer_lot_id"]],)).fetchall()}
    if lots.get(shipment["seller_lot_id"]) != seller_id:
        raise InvalidRequest(f"shipment: {shipment['seller_lot_id']} is not a lot of the seller")
    if debtor_id is None or lots.get(shipment["buyer_lot_id"]) != debtor_id:
        raise InvalidRequest(f"shipment: {shipment['buyer_lot_id']} is not a lot of the debtor"
                             " (a shipment needs debtor_id)")


def verify_receivable(conn: psycopg.Connection, receivable_id: str, by: str,
                      now: datetime) -> dict[str, object]:
    """An officer has checked the invoice: it becomes eligible (if nothing else bars it)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE receivables SET verified = true, verified_at = coalesce(verified_at, %s),"
            " verified_by = coalesce(verified_by, %s) WHERE receivable_id = %s"
            f" RETURNING {RECEIVABLE_COLUMNS}", (now, by, receivable_id)).fetchone()
        if row is None:
            raise LendingError(f"no receivable {receivable_id!r}")
        notify_lending(conn, [str(row["facility_id"])])
    return row
