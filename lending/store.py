"""The lending engine's I/O shell: load a facility's inputs from the store, persist what the pure
domain concluded, and tell listeners (PostgreSQL NOTIFY) what changed."""

from __future__ import annotations

import json
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lending.domain.alerts import (
    Alert,
    AlertEvent,
    AlertStatus,
    AlertType,
    PledgeAlertCleared,
    PledgeAlertEscalated,
    PledgeAlertRaised,
    PledgeAlertResolved,
    Severity,
)
from lending.domain.assess import Assessment, FacilityInputs
from lending.domain.limits import LimitSnapshot, LotLine
from lending.domain.model import (
    Commodity,
    Facility,
    Lot,
    PricePoint,
    ProductTerms,
    Receivable,
    ReleaseOrder,
    ReleaseStatus,
)
from lending.domain.observation import observe

LENDING_CHANNEL = "pw_lending"  # payload: facility ids (comma-separated) or "*" for all
ALERTS_CHANNEL = "pw_alerts"  # payload: JSON {"id", "facility_id", "type", "status"}
PRICES_CHANNEL = "pw_prices"  # payload: JSON {commodity: earliest time posted (ISO 8601)}
LIMITS_CHANNEL = "pw_limits"  # payload: JSON {"facility_id", "limit", "available", "ltv"}

SERIES_METRICS = ("weight_kg", "rfid_count", "door_open")
LATEST_METRICS = ("temp_c", "humidity_pct", "lat", "lon", "tamper")
PRICE_DAYS = 120  # days of daily closes per commodity for the volatility estimate
SALES_DAYS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CURE_PERIOD_S = 10 * 365 * 86_400.0
NOTIFY_MAX = 7900


def _terms_to_json(terms: ProductTerms) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in fields(ProductTerms):
        value = getattr(terms, f.name)
        data[f.name] = value.total_seconds() if isinstance(value, timedelta) else value
    return data


def terms_from_json(data: Mapping[str, Any]) -> ProductTerms:
    known = {f.name for f in fields(ProductTerms)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown product terms: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values = dict(data)
    if "cure_period" in values:
        seconds = float(values["cure_period"])
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_CURE_PERIOD_S):
            raise ValueError(f"cure_period must be between 0 and {MAX_CURE_PERIOD_S:g} seconds "
                             f"(10 years), got {values['cure_period']!r}")
        values["cure_period"] = timedelta(seconds=seconds)
    if "receivable_max_days_past_due" in values:
        days = values["receivable_max_days_past_due"]
        if not (isinstance(days, int | float) and math.isfinite(days) and float(days).is_integer()):
            raise ValueError(f"receivable_max_days_past_due must be a whole number of days, got {days!r}")
        values["receivable_max_days_past_due"] = int(days)
    return ProductTerms(**values)


def terms_json(terms: ProductTerms) -> Jsonb:
    return Jsonb(_terms_to_json(terms))


# --- series cache --------------------------------------------------------------------------------

_SERIES_SQL = """
SELECT d.id, m.metric, r.time, r.value
  FROM unnest(%(ids)s::text[], %(since)s::timestamptz[]) AS d(id, since)
 CROSS JOIN unnest(%(metrics)s::text[], %(limits)s::int[]) AS m(metric, n)
 CROSS JOIN LATERAL (
        SELECT time, value FROM readings
         WHERE device_id = d.id AND metric = m.metric AND time > d.since
         ORDER BY time DESC LIMIT m.n) r
 ORDER BY r.time
"""


@dataclass
class SeriesCache:
    """Recent readings of each bound device, fetched incrementally (only what is newer); the
    :class:`lending.domain.observation.SeriesSource` that :func:`load_inputs` observes lots from."""

    window: int = 120
    series: dict[tuple[str, str], deque[tuple[datetime, float]]] = field(default_factory=dict)
    newest: dict[str, datetime] = field(default_factory=dict)

    def refresh(self, conn: psycopg.Connection, device_ids: Iterable[str]) -> None:
        ids = sorted(set(device_ids))
        if not ids:
            return
        epoch = EPOCH
        since = [self.newest.get(d, epoch) for d in ids]
        metrics = list(SERIES_METRICS) + list(LATEST_METRICS)
        limits = [self.window] * len(SERIES_METRICS) + [1] * len(LATEST_METRICS)
        rows = conn.execute(_SERIES_SQL, {"ids": ids, "since": since, "metrics": metrics,
                                          "limits": limits}).fetchall()
        for device, metric, time, value in rows:
            key = (device, metric)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = deque(maxlen=self.window)
            series.append((time, value))
            if time > self.newest.get(device, EPOCH):
                self.newest[device] = time

    def get(self, device: str, metric: str) -> Sequence[tuple[datetime, float]]:
        return self.series.get((device, metric), ())


# --- loading ---------------------------------------------------------------------------------------

def facilities_for_devices(conn: psycopg.Connection, device_ids: Sequence[str]) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT l.facility_id FROM lot_sensors s JOIN lots l USING (lot_id)"
        " WHERE s.device_id = ANY(%s)", (list(device_ids),)).fetchall()
    return {r[0] for r in rows}


def facilities_for_commodities(conn: psycopg.Connection, commodities: Sequence[str]) -> set[str]:
    rows = conn.execute("SELECT DISTINCT facility_id FROM lots WHERE commodity = ANY(%s)",
                        (list(commodities),)).fetchall()
    return {r[0] for r in rows}


def all_facilities(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT facility_id FROM facilities").fetchall()}


def _facility(row: Sequence[Any]) -> Facility:
    fid, bid, cur, line, out, res, floor, terms = row
    return Facility(fid, bid, float(line), float(out), cur, float(res), float(floor),
                    terms_from_json(terms))


def _lot(row: Sequence[Any], sensors: Sequence[str]) -> Lot:
    (lid, fid, commodity, declared, unit_w, reg, site, vehicle, geofence, hours) = row
    fence = tuple((float(p[0]), float(p[1])) for p in geofence) if geofence else None
    return Lot(lid, fid, commodity, float(declared), float(unit_w), reg, tuple(sorted(sensors)),
               site, vehicle, fence, (hours.lower if hours.lower is not None else 0,
                                      hours.upper if hours.upper is not None else 24))


def load_commodities(conn: psycopg.Connection) -> dict[str, Commodity]:
    rows = conn.execute("SELECT name, unit, unit_kg, liquidation_days, temp_min, temp_max,"
                        " humidity_min, humidity_max FROM commodities").fetchall()
    out = {}
    for name, unit, unit_kg, days, tmin, tmax, hmin, hmax in rows:
        temp = (tmin, tmax) if tmin is not None and tmax is not None else None
        hum = (hmin, hmax) if hmin is not None and hmax is not None else None
        out[name] = Commodity(name, unit, days, temp, hum, unit_kg)
    return out


_CLOSES_SQL = """
SELECT DISTINCT ON (c.name, date_bin('1 day', p.time, TIMESTAMPTZ '2000-01-01'))
       c.name, p.time, p.price, p.currency
  FROM unnest(%(names)s::text[], %(since)s::timestamptz[]) AS c(name, since)
  JOIN prices p ON p.commodity = c.name AND p.time > c.since
 ORDER BY c.name, date_bin('1 day', p.time, TIMESTAMPTZ '2000-01-01'), p.time DESC
"""


_LATEST_PRICE_SQL = """
SELECT c.name, p.time, p.price, p.currency FROM unnest(%s::text[]) AS c(name)
 CROSS JOIN LATERAL (SELECT time, price, currency FROM prices WHERE commodity = c.name
                      ORDER BY time DESC LIMIT 1) p
"""


@dataclass
class PriceCache:
    """Each commodity's daily closes over the last ``days`` days (today's close is the latest
    tick), fetched incrementally: a live feed's ticks are read once, not on every recompute. A
    commodity with no price in that window keeps its last price ever posted (and, with a single
    close, only the base haircut)."""

    days: int = PRICE_DAYS
    closes: dict[str, dict[int, PricePoint]] = field(default_factory=dict)
    newest: dict[str, datetime] = field(default_factory=dict)

    def refresh(self, conn: psycopg.Connection, commodities: Iterable[str], now: datetime) -> None:
        names = sorted(set(commodities))
        if not names:
            return
        horizon = now - timedelta(days=self.days)
        since = [self.newest.get(n, horizon) for n in names]
        rows = conn.execute(_CLOSES_SQL, {"names": names, "since": since}).fetchall()
        unpriced = [n for n in names if not self.closes.get(n) and n not in {r[0] for r in rows}]
        if unpriced:  # nothing in the window: the last price ever posted still values the goods
            rows += conn.execute(_LATEST_PRICE_SQL, (unpriced,)).fetchall()
        for name, time, price, currency in rows:
            day = int(time.timestamp() // 86_400)
            self.closes.setdefault(name, {})[day] = PricePoint(name, time, price, currency)
            if time > self.newest.get(name, EPOCH):
                self.newest[name] = time
        oldest = int(horizon.timestamp() // 86_400)
        for days in self.closes.values():
            for day in [d for d in days if d < oldest and d != max(days)]:
                del days[day]

    def rewind(self, commodity: str, since: datetime) -> None:
        """Prices were posted for ``commodity`` from ``since`` on (perhaps older than the newest
        seen): re-read from just before then on the next refresh."""
        if commodity in self.newest:
            self.newest[commodity] = min(self.newest[commodity], since - timedelta(microseconds=1))

    def history(self, commodity: str) -> list[PricePoint]:
        days = self.closes.get(commodity, {})
        return [days[d] for d in sorted(days)]



def alert_from_row(row: Mapping[str, Any]) -> Alert:
    return Alert(
        key=row["key"], type=AlertType(row["type"]), severity=Severity(row["severity"]),
        facility_id=row["facility_id"], lot_id=row["lot_id"], message=row["message"],
        evidence=row["evidence"], raised_at=row["raised_at"], status=AlertStatus(row["status"]),
        auto_resolve=row["auto_resolve"], cleared=row["cleared"], cure_deadline=row["cure_deadline"],
        acknowledged_at=row["acknowledged_at"], acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"], resolved_by=row["resolved_by"], comment=row["comment"],
        id=row["id"],
    )


ALERT_COLUMNS = ("id, key, type, severity, facility_id, lot_id, status, message, evidence, "
                 "auto_resolve, cleared, cure_deadline, raised_at, acknowledged_at, acknowledged_by,"
                 " resolved_at, resolved_by, comment")


def latest_alerts(conn: psycopg.Connection, facility_ids: Sequence[str]) -> dict[str, dict[str, Alert]]:
    """The newest alert of each key, per facility."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT DISTINCT ON (key) {ALERT_COLUMNS} FROM alerts WHERE facility_id = ANY(%s)"
            " ORDER BY key, id DESC", (list(facility_ids),)).fetchall()
    out: dict[str, dict[str, Alert]] = defaultdict(dict)
    for row in rows:
        alert = alert_from_row(row)
        out[alert.facility_id][alert.key] = alert
    return out


def snapshot_from_inputs(data: Mapping[str, Any]) -> LimitSnapshot:
    values = dict(data)
    values["time"] = datetime.fromisoformat(values["time"])
    values["ltv"] = math.inf if values["ltv"] is None else values["ltv"]
    values["lots"] = tuple(LotLine(**lot) for lot in values["lots"])
    return LimitSnapshot(**values)


def latest_snapshots(conn: psycopg.Connection, facility_ids: Sequence[str]) -> dict[str, LimitSnapshot]:
    rows = conn.execute(
        """SELECT f.id, s.inputs FROM unnest(%s::text[]) AS f(id)
           CROSS JOIN LATERAL (SELECT inputs FROM limit_snapshots WHERE facility_id = f.id
                                ORDER BY time DESC, id DESC LIMIT 1) s""",
        (list(facility_ids),)).fetchall()
    return {fid: snapshot_from_inputs(inputs) for fid, inputs in rows}


@dataclass
class Loaded:
    inputs: dict[str, FacilityInputs]


def load_inputs(conn: psycopg.Connection, facility_ids: Iterable[str], now: datetime,
                cache: SeriesCache, price_cache: PriceCache,
                door_window: timedelta = timedelta(hours=2)) -> Loaded:
    """Everything :func:`lending.domain.assess.assess` needs for each facility, loaded in bulk."""
    ids = sorted(set(facility_ids))
    facilities = [_facility(r) for r in conn.execute(
        "SELECT facility_id, borrower_id, currency, line, outstanding, reserves, value_floor, terms"
        " FROM facilities WHERE facility_id = ANY(%s)", (ids,)).fetchall()]
    lot_rows = conn.execute(
        "SELECT lot_id, facility_id, commodity, declared_quantity, unit_weight_kg, registration_no,"
        " site, vehicle, geofence, business_hours FROM lots WHERE facility_id = ANY(%s)"
        " ORDER BY lot_id", (ids,)).fetchall()
    sensors: dict[str, list[str]] = defaultdict(list)
    for device, lot_id in conn.execute(
            "SELECT s.device_id, s.lot_id FROM lot_sensors s JOIN lots l USING (lot_id)"
            " WHERE l.facility_id = ANY(%s)", (ids,)).fetchall():
        sensors[lot_id].append(device)
    lots = [_lot(r, sensors[r[0]]) for r in lot_rows]
    devices = {d for lot in lots for d in lot.sensors}
    cache.refresh(conn, devices)
    status = {d: (online, seen) for d, online, seen in conn.execute(
        "SELECT device_id, online, last_seen FROM device_status WHERE device_id = ANY(%s)",
        (sorted(devices),)).fetchall()}
    commodities = load_commodities(conn)
    held = {lot.commodity for lot in lots}
    price_cache.refresh(conn, held, now)
    prices = {name: price_cache.history(name) for name in held}
    releases = [ReleaseOrder(r[0], r[1], r[2], ReleaseStatus(r[3]), r[4], r[5], r[6])
                for r in conn.execute(
                    "SELECT release_id, r.lot_id, quantity, status, requested_at, approved_at,"
                    " executed_at FROM release_orders r JOIN lots l USING (lot_id)"
                    " WHERE l.facility_id = ANY(%s) AND (executed_at IS NULL"
                    " OR executed_at > %s)", (ids, now - timedelta(days=7))).fetchall()]
    receivables = [Receivable(r[0], r[1], r[2], float(r[3]), r[4], r[5], r[6], r[7], r[8])
                   for r in conn.execute(
                       "SELECT receivable_id, facility_id, debtor, amount, due, related_party,"
                       " disputed, paid, verified FROM receivables"
                       " WHERE facility_id = ANY(%s) AND NOT paid",
                       (ids,)).fetchall()]
    sales: dict[str, list[float]] = defaultdict(list)
    for fid, _day, amount in conn.execute(
            "SELECT facility_id, date_bin('1 day', time, TIMESTAMPTZ '2000-01-01') AS day,"
            " sum(amount) FROM sales WHERE facility_id = ANY(%s) AND time > %s"
            " GROUP BY 1, 2 ORDER BY 1, 2", (ids, now - timedelta(days=SALES_DAYS))).fetchall():
        sales[fid].append(float(amount))
    alerts = latest_alerts(conn, ids)
    previous = latest_snapshots(conn, ids)
    lots_of: dict[str, list[Lot]] = defaultdict(list)
    for lot in lots:
        lots_of[lot.facility_id].append(lot)
    lot_facility = {lot.id: lot.facility_id for lot in lots}
    out = {}
    for facility in facilities:
        mine = lots_of[facility.id]
        out[facility.id] = FacilityInputs(
            facility=facility, lots=mine, commodities=commodities,
            observations={lot.id: observe(lot, cache, status, now, door_window) for lot in mine},
            prices=prices,
            releases=[r for r in releases if lot_facility.get(r.lot_id) == facility.id],
            receivables=[r for r in receivables if r.facility_id == facility.id],
            sales_velocity=sales.get(facility.id, []),
            latest_alerts=alerts.get(facility.id, {}),
            previous=previous.get(facility.id),
        )
    return Loaded(out)


# --- persisting ------------------------------------------------------------------------------------

def _ltv_or_none(ltv: float) -> float | None:
    return None if math.isinf(ltv) else ltv


def save_snapshot(conn: psycopg.Connection, snapshot: LimitSnapshot, reasons: Sequence[str]) -> None:
    conn.execute(
        "INSERT INTO limit_snapshots (facility_id, time, credit_limit, available, outstanding,"
        " collateral_value, ltv, reasons, inputs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (snapshot.facility_id, snapshot.time, round(snapshot.limit, 2),
         round(snapshot.available, 2), round(snapshot.outstanding, 2),
         round(snapshot.collateral_value, 2), _ltv_or_none(snapshot.ltv), Jsonb(list(reasons)),
         Jsonb(snapshot.inputs())))
    conn.execute("SELECT pg_notify(%s, %s)", (LIMITS_CHANNEL, json.dumps({
        "facility_id": snapshot.facility_id, "limit": snapshot.limit,
        "available": snapshot.available, "ltv": _ltv_or_none(snapshot.ltv)})))


def _notify_alert(conn: psycopg.Connection, alert_id: int, alert: Alert, status: str) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (ALERTS_CHANNEL, json.dumps({
        "id": alert_id, "facility_id": alert.facility_id, "lot_id": alert.lot_id,
        "type": str(alert.type), "severity": str(alert.severity), "status": status})))


def _json(value: Any) -> Any:
    """``value`` as plain JSON: dates as ISO strings, tuples as lists, non-finite numbers as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def insert_alert(conn: psycopg.Connection, alert: Alert) -> int | None:
    """Insert an open alert; None when one is already open for its key (another engine won)."""
    row = conn.execute(
        "INSERT INTO alerts (key, type, severity, facility_id, lot_id, status, message, evidence,"
        " auto_resolve, cleared, cure_deadline, raised_at) VALUES"
        " (%s, %s, %s, %s, %s, 'open', %s, %s, %s, false, %s, %s)"
        " ON CONFLICT (key) WHERE status <> 'resolved' DO NOTHING RETURNING id",
        (alert.key, str(alert.type), str(alert.severity), alert.facility_id, alert.lot_id,
         alert.message, Jsonb(_json(alert.evidence)),
         alert.auto_resolve, alert.cure_deadline, alert.raised_at)).fetchone()
    if row is None:
        return None
    _notify_alert(conn, row[0], alert, "open")
    return int(row[0])


def apply_alert_events(conn: psycopg.Connection, events: Sequence[AlertEvent]) -> list[int]:
    """Persist alert events; returns the ids of newly raised alerts."""
    raised = []
    for event in events:
        alert = event.alert
        if isinstance(event, PledgeAlertRaised):
            new_id = insert_alert(conn, alert)
            if new_id is not None:
                raised.append(new_id)
        elif isinstance(event, PledgeAlertResolved) and alert.id is not None:
            conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
                         " comment = %s, cleared = true WHERE id = %s AND status <> 'resolved'",
                         (alert.resolved_at, alert.resolved_by, alert.comment, alert.id))
            _notify_alert(conn, alert.id, alert, "resolved")
        elif isinstance(event, PledgeAlertEscalated) and alert.id is not None:
            conn.execute("UPDATE alerts SET severity = %s, message = %s, evidence = %s"
                         " WHERE id = %s", (str(alert.severity), alert.message,
                                            Jsonb(_json(alert.evidence)), alert.id))
            _notify_alert(conn, alert.id, alert, "escalated")
        elif isinstance(event, PledgeAlertCleared) and alert.id is not None:
            conn.execute("UPDATE alerts SET cleared = true WHERE id = %s", (alert.id,))
    return raised


def persist(conn: psycopg.Connection, assessment: Assessment) -> list[int]:
    """Store a facility's assessment: a snapshot when the limit moved, and its alert events."""
    changed = assessment.limit_changed
    if changed is not None:
        save_snapshot(conn, assessment.snapshot, changed.reasons)
    return apply_alert_events(conn, assessment.alert_events)


def notify_prices(conn: psycopg.Connection, points: Sequence[PricePoint]) -> None:
    """Tell the engines' price caches what was posted (the earliest time per commodity)."""
    earliest: dict[str, datetime] = {}
    for p in points:
        if p.commodity not in earliest or p.time < earliest[p.commodity]:
            earliest[p.commodity] = p.time
    payload = json.dumps({c: t.isoformat() for c, t in sorted(earliest.items())})
    if len(payload) > NOTIFY_MAX:  # too many commodities for one payload: rewind them all
        payload = json.dumps({"*": min(earliest.values()).isoformat()})
    conn.execute("SELECT pg_notify(%s, %s)", (PRICES_CHANNEL, payload))


def notify_lending(conn: psycopg.Connection, facility_ids: Iterable[str] | None) -> None:
    """Ask the engines to recompute these facilities (None: all of them)."""
    payload = "*" if facility_ids is None else ",".join(sorted(set(facility_ids)))
    if len(payload) > NOTIFY_MAX:
        payload = "*"
    if payload:
        conn.execute("SELECT pg_notify(%s, %s)", (LENDING_CHANNEL, payload))
