"""The lending engine's I/O shell: load a facility's inputs from the store, persist what the pure
domain concluded, and tell listeners (PostgreSQL NOTIFY) what changed."""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
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
from lending.domain.inspection import Inspection
from lending.domain.limits import LimitSnapshot, LotLine
from lending.domain.memo import moved
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
from lending.domain.quantity import History, LotObservation, Refusal
from lending.domain.rules import RulePolicy
from lending.domain.sales import Sale
from telemetry.writer import notify_payloads

LENDING_CHANNEL = "pw_lending"  # payload: facility ids (comma-separated) or "*" for all
ALERTS_CHANNEL = "pw_alerts"  # payload: JSON {"id", "facility_id", "type", "status"}
PRICES_CHANNEL = "pw_prices"  # payload: JSON {commodity: earliest time posted (ISO 8601)}
LIMITS_CHANNEL = "pw_limits"  # payload: JSON {"facility_id", "limit", "available", "ltv"}

SERIES_METRICS = ("weight_kg", "rfid_count", "door_open")
LATEST_METRICS = ("temp_c", "humidity_pct", "lat", "lon", "tamper", "speed_kmh")  # a short track
EVENT_METRICS = ("door_open", "tamper")  # set flags are kept beyond the window (a backlog's too)
ARCHIVED_METRICS = ("weight_kg", "rfid_count")  # also kept for hours, compact, for the replay check
PRICE_DAYS = 120  # days of daily closes per commodity for the volatility estimate
REFUSALS_PER_DEVICE = 50  # dead letters per device loaded (the newest) for the integrity rules
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

# A device's first refresh: the newest readings by device time, and how far its arrivals go.
_FIRST_SQL = """
SELECT d.id, m.metric, r.time, r.value, r.received_at, r.boot, r.seq, a.arrived
  FROM unnest(%(ids)s::text[]) AS d(id)
 CROSS JOIN unnest(%(metrics)s::text[], %(limits)s::int[]) AS m(metric, n)
 CROSS JOIN LATERAL (
        SELECT max(received_at) AS arrived FROM readings
         WHERE device_id = d.id AND metric = m.metric) a
 CROSS JOIN LATERAL (
        SELECT time, value, received_at, boot, seq FROM readings
         WHERE device_id = d.id AND metric = m.metric
         ORDER BY time DESC LIMIT m.n) r
"""

# Later refreshes: what ARRIVED after the device's cursor (index readings_arrival), whatever its
# device time: the newest by device time of it and, for event metrics (a door, a tamper switch),
# the newest of its set flags too, so a flag inside a long backlog is not lost; ``arrived`` is the
# newest arrival among all of it. OFFSET 0 keeps the planner on the arrival index instead of
# walking the time index backwards.
_ARRIVED_SQL = """
SELECT d.id, m.metric, r.time, r.value, r.received_at, r.boot, r.seq, r.arrived
  FROM unnest(%(ids)s::text[], %(since)s::timestamptz[]) AS d(id, since)
 CROSS JOIN unnest(%(metrics)s::text[], %(limits)s::int[], %(events)s::bool[]) AS m(metric, n, ev)
 CROSS JOIN LATERAL (
        SELECT b.time, b.value, b.received_at, b.boot, b.seq, b.arrived FROM (
            SELECT a.time, a.value, a.received_at, a.boot, a.seq,
                   max(a.received_at) OVER () AS arrived,
                   row_number() OVER (ORDER BY a.time DESC) AS newest,
                   row_number() OVER (PARTITION BY a.value <> 0 ORDER BY a.time DESC) AS newest_kind
              FROM (SELECT time, value, received_at, boot, seq FROM readings
                     WHERE device_id = d.id AND metric = m.metric AND received_at > d.since
                    OFFSET 0) a) b
         WHERE b.newest <= m.n OR (m.ev AND b.value <> 0 AND b.newest_kind <= m.n)) r
"""

_Row = tuple[datetime, int, int, float, datetime]  # (time, boot, seq, value, received_at)


class _Series:
    """One device's metric: readings in device-time order (the newest ``limit`` of them by
    device time, and for an event metric the newest ``limit`` set flags as well), whatever order
    they arrived in; a reading is kept once (its dedupe key). With an ``archive`` capacity it also
    keeps that many of its newest readings as compact arrays (epoch seconds, values) for the
    replay check, which looks further back than the window. A reading is known by its dedupe key
    among the rows kept (a binary search: rows sort by (time, boot, seq) first), so no set of keys
    is held beside them; nor are the (time, value) pairs and receive times, built when asked."""

    __slots__ = ("arch_t", "arch_v", "archive", "events", "limit", "rows")

    def __init__(self, limit: int, events: bool = False, archive: int = 0) -> None:
        self.limit = limit
        self.events = events
        self.archive = archive
        self.arch_t = np.empty(0, dtype=np.float64)
        self.arch_v = np.empty(0, dtype=np.float64)
        self.rows: list[_Row] = []

    def _known(self, key: tuple[datetime, int, int]) -> bool:
        rows = self.rows
        at = bisect_left(rows, key)  # (t, boot, seq) sorts just before the rows it prefixes
        if at == len(rows):
            return False
        row = rows[at]
        return row[0] == key[0] and row[1] == key[1] and row[2] == key[2]

    def merge(self, new: Iterable[_Row]) -> list[_Row]:
        """Insert the readings not seen before; returns them."""
        fresh: list[_Row] = []
        batch: set[tuple[datetime, int, int]] = set()
        for row in new:
            key = (row[0], row[1], row[2])
            if key not in batch and not self._known(key):
                batch.add(key)
                fresh.append(row)
        if not fresh:
            return fresh
        fresh.sort()
        if self.archive:
            self._archive(fresh)
        if self.rows and fresh[0] < self.rows[-1]:  # late data: insert in device-time order
            self.rows = sorted(self.rows + fresh)
        else:
            self.rows.extend(fresh)
        if len(self.rows) > self.limit:
            older, newest = self.rows[:-self.limit], self.rows[-self.limit:]
            flags = [r for r in older if r[3]][-self.limit:] if self.events else []
            self.rows = flags + newest  # flags are older than the newest: still in order
        return fresh

    def _archive(self, fresh: list[_Row]) -> None:
        t = np.fromiter((r[0].timestamp() for r in fresh), dtype=np.float64, count=len(fresh))
        v = np.fromiter((r[3] for r in fresh), dtype=np.float64, count=len(fresh))
        if self.arch_t.size and t[0] <= self.arch_t[-1]:  # late data: merge by device time
            t, index = np.unique(np.concatenate([self.arch_t, t]), return_index=True)
            v = np.concatenate([self.arch_v, v])[index]
        else:
            t, v = np.concatenate([self.arch_t, t]), np.concatenate([self.arch_v, v])
        self.arch_t, self.arch_v = t[-self.archive:], v[-self.archive:]

    def history(self) -> History | None:
        return History(self.arch_t, self.arch_v) if self.archive else None

    def pairs(self) -> list[tuple[datetime, float]]:
        return [(r[0], r[3]) for r in self.rows]

    def received(self) -> list[datetime]:
        return [r[4] for r in self.rows]


@dataclass
class SeriesCache:
    """Recent readings of each bound device, fetched incrementally by ARRIVAL: each refresh reads
    what the store received since the device's cursor (its newest receive time seen, less
    ``arrival_overlap`` for transactions that commit out of order), so a backlog that arrives
    after live readings is read too and slotted into the series by device time. The
    :class:`lending.domain.observation.SeriesSource` (and ``ArrivalSource``) that
    :func:`load_inputs` observes lots from."""

    window: int = 720  # readings kept per sensor and metric: 1 h at 5 s, the ledger's longest window
    track_window: int = 120  # readings kept of each other metric (position, tamper, climate)
    arrival_window: int = 240  # (device time, receive time) pairs kept per device, newest arrivals
    arrival_overlap: timedelta = timedelta(seconds=10)
    replay_history: int = 2160  # weights and counts kept compact for the replay check: 3 h at 5 s
    series: dict[tuple[str, str], _Series] = field(default_factory=dict)
    arrived: dict[str, datetime] = field(default_factory=dict)  # device -> newest receive time
    recent: dict[str, deque[tuple[datetime, datetime]]] = field(default_factory=dict)
    # device -> a number that moves whenever anything cached of it changes (observations reuse)
    versions: dict[str, int] = field(default_factory=dict)
    # While notices are followed (:meth:`follow`): devices read since their last notice, which
    # a refresh skips (every write of a device's readings or status notifies, pw_ingest).
    clean: set[str] | None = None

    def follow(self) -> None:
        """From now on the caller reports every device notice (:meth:`dirty`): a refresh reads
        only devices named since they were last read (and those never read). Forgets what was
        read: call it when (re)starting to listen, and before a safety pass."""
        self.clean = set()

    def unfollow(self) -> None:
        """Notices are no longer followed: every refresh reads every device asked for."""
        self.clean = None

    def dirty(self, device_ids: Iterable[str]) -> None:
        """These devices have new data (a notice named them)."""
        if self.clean is not None:
            self.clean.difference_update(device_ids)

    def _limit(self, metric: str) -> int:
        return self.window if metric in SERIES_METRICS else self.track_window

    def _archive(self, metric: str) -> int:
        return self.replay_history if metric in ARCHIVED_METRICS else 0

    def refresh(self, conn: psycopg.Connection, device_ids: Iterable[str]) -> None:
        clean = self.clean
        ids = sorted(set(device_ids) if clean is None else set(device_ids) - clean)
        if not ids:
            return
        if clean is not None:
            clean.update(ids)  # read now: a notice taken after this names them again
        metrics = list(SERIES_METRICS) + list(LATEST_METRICS)
        limits = [max(self._limit(m), self._archive(m)) for m in metrics]
        events = [m in EVENT_METRICS for m in metrics]
        known = [d for d in ids if d in self.arrived]
        first = [d for d in ids if d not in self.arrived]
        rows: list[tuple[Any, ...]] = []
        if first:
            rows += conn.execute(_FIRST_SQL, {"ids": first, "metrics": metrics,
                                              "limits": limits}).fetchall()
        if known:
            since = [self.arrived[d] - self.arrival_overlap for d in known]
            rows += conn.execute(_ARRIVED_SQL, {"ids": known, "since": since, "metrics": metrics,
                                                "limits": limits, "events": events}).fetchall()
        grouped: dict[tuple[str, str], list[_Row]] = defaultdict(list)
        for device, metric, time, value, received, boot, seq, arrived in rows:
            grouped[(device, metric)].append((time, boot, seq, value, received))
            if arrived is not None and arrived > self.arrived.get(device, EPOCH):
                self.arrived[device] = arrived
        for device in first:  # no reading yet: read from the start next time
            self.arrived.setdefault(device, EPOCH + self.arrival_overlap)
        heard: dict[str, set[tuple[datetime, datetime]]] = defaultdict(set)
        for (device, metric), new in grouped.items():
            series = self.series.get((device, metric))
            if series is None:
                series = self.series[(device, metric)] = _Series(
                    self._limit(metric), metric in EVENT_METRICS, self._archive(metric))
            for row in series.merge(new):
                heard[device].add((row[0], row[4]))
        for device in ids:
            if device in heard or device not in self.versions:
                self.versions[device] = self.versions.get(device, 0) + 1
        for device, pairs in heard.items():
            recent = self.recent.get(device)
            if recent is None:
                recent = self.recent[device] = deque(maxlen=self.arrival_window)
            recent.extend(sorted(pairs, key=lambda p: (p[1], p[0])))

    def get(self, device: str, metric: str) -> Sequence[tuple[datetime, float]]:
        series = self.series.get((device, metric))
        return series.pairs() if series is not None else ()

    def received(self, device: str, metric: str) -> Sequence[datetime]:
        """When each reading of :meth:`get` arrived (the gateway's receive time)."""
        series = self.series.get((device, metric))
        return series.received() if series is not None else ()

    def history(self, device: str, metric: str) -> History | None:
        """The longer, compact record of a weight or count series (for the replay check)."""
        series = self.series.get((device, metric))
        return series.history() if series is not None else None

    def arrivals(self, device: str) -> Sequence[tuple[datetime, datetime]]:
        """The device's most recent arrivals: (device time, receive time), in arrival order."""
        return tuple(self.recent.get(device, ()))


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

    def history(self, commodity: str) -> tuple[PricePoint, ...]:
        """Daily closes, oldest first: a tuple, so the valuation can remember its volatility."""
        days = self.closes.get(commodity, {})
        return tuple(days[d] for d in sorted(days))



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
    if "trusted_collateral_value" not in values:  # stored before LTV was trust-weighted
        values["trusted_collateral_value"] = sum(lot.value * lot.trust for lot in values["lots"])
    return LimitSnapshot(**values)


_SALES_SQL = """
SELECT facility_id, sum(amount)::float8, max(time), max(recorded_at) FROM sales
 WHERE facility_id = ANY(%(ids)s) AND time > %(since)s
 GROUP BY facility_id, date_bin('1 day', time + %(offset)s, TIMESTAMPTZ '2000-01-01 00:00+00')
 ORDER BY 1, 3
"""


def load_sales(conn: psycopg.Connection, facility_ids: Sequence[str], now: datetime,
               policy: RulePolicy) -> dict[str, list[Sale]]:
    """Each facility's sales per local day of its sites (the total, the day's last sale time and
    when its last sale arrived), over the policy's look-back plus the days not yet closed."""
    since = now - timedelta(days=max(1, policy.sales_history_days) + 2) - policy.sales_close_grace
    offset = timedelta(hours=policy.utc_offset_hours)
    out: dict[str, list[Sale]] = defaultdict(list)
    for fid, total, last, recorded in conn.execute(
            _SALES_SQL, {"ids": list(facility_ids), "since": since, "offset": offset}).fetchall():
        out[fid].append(Sale(last, float(total), recorded))
    return out


def latest_snapshots(conn: psycopg.Connection, facility_ids: Sequence[str]) -> dict[str, LimitSnapshot]:
    rows = conn.execute(
        """SELECT f.id, s.inputs FROM unnest(%s::text[]) AS f(id)
           CROSS JOIN LATERAL (SELECT inputs FROM limit_snapshots WHERE facility_id = f.id
                                ORDER BY time DESC, id DESC LIMIT 1) s""",
        (list(facility_ids),)).fetchall()
    return {fid: snapshot_from_inputs(inputs) for fid, inputs in rows}


_INSPECTIONS_SQL = """
SELECT DISTINCT ON (i.lot_id) i.id, i.lot_id, i.counted_quantity, i.counted_at, i.counted_by,
       i.sensor_quantity, i.note,
       (SELECT coalesce(sum(r.quantity), 0) FROM release_orders r
         WHERE r.lot_id = i.lot_id AND r.status = 'executed' AND r.executed_at > i.counted_at)
  FROM inspections i WHERE i.lot_id = ANY(%s)
 ORDER BY i.lot_id, i.counted_at DESC, i.id DESC
"""


def latest_inspections(conn: psycopg.Connection, lot_ids: Sequence[str]) -> dict[str, Inspection]:
    """The latest physical count of each lot (by when it was counted), with the units released
    since."""
    return {lot_id: Inspection(lot_id, float(counted), at, by,
                               None if sensors is None else float(sensors), float(released),
                               note, int(iid))
            for iid, lot_id, counted, at, by, sensors, note, released in conn.execute(
                _INSPECTIONS_SQL, (list(lot_ids),)).fetchall()}


_REFUSED_SQL = """
SELECT d.id, r.received_at, r.reason, r.detail
  FROM unnest(%(ids)s::text[]) AS d(id)
 CROSS JOIN LATERAL (
        SELECT received_at, reason, detail FROM dead_letters
         WHERE device_id = d.id AND received_at > %(since)s
         ORDER BY received_at DESC LIMIT %(n)s) r
 ORDER BY r.received_at
"""


def load_refusals(conn: psycopg.Connection, device_ids: Iterable[str],
                  since: datetime) -> dict[str, list[Refusal]]:
    """Each device's messages the gateway refused (dead letters) received after ``since``, oldest
    first (at most :data:`REFUSALS_PER_DEVICE` of them)."""
    out: dict[str, list[Refusal]] = defaultdict(list)
    for device, received, reason, detail in conn.execute(
            _REFUSED_SQL, {"ids": sorted(set(device_ids)), "since": since,
                           "n": REFUSALS_PER_DEVICE}).fetchall():
        out[device].append(Refusal(received, reason, detail))
    return out


@dataclass
class Loaded:
    inputs: dict[str, FacilityInputs]


_ObservationKey = tuple[Lot, tuple[int, ...], tuple[Any, ...], tuple[Any, ...], timedelta]


@dataclass
class ObservationCache:
    """Each lot's last observation and what it was built from: the lot, its devices' cache
    versions (:attr:`SeriesCache.versions`), status and refused messages, the door window. When
    none of that changed and no door opening was in the window (the only part of
    :func:`lending.domain.observation.observe` that reads the clock: an opening outside the window
    stays outside as time passes), the observation as of a later ``now`` is the same one with its
    ``now`` moved: its series are the same objects, which lets the assessment reuse the lot's
    work (:func:`lending.domain.assess.reusable`)."""

    lots: dict[str, tuple[_ObservationKey, LotObservation]] = field(default_factory=dict)

    def observe(self, lot: Lot, cache: SeriesCache, status: Mapping[str, Any], now: datetime,
                door_window: timedelta, refused: Mapping[str, Sequence[Refusal]]) -> LotObservation:
        key: _ObservationKey = (
            lot, tuple(cache.versions.get(d, 0) for d in lot.sensors),
            tuple(status.get(d) for d in lot.sensors),
            tuple(tuple(refused.get(d, ())) for d in lot.sensors), door_window)
        known = self.lots.get(lot.id)
        if (known is not None and known[0] == key and not known[1].door_open_at
                and now >= known[1].now):
            obs = moved(known[1], now=now)
        else:
            obs = observe(lot, cache, status, now, door_window, refused)
        self.lots[lot.id] = (key, obs)
        return obs

    def forget(self, lot_ids: Iterable[str]) -> None:
        for lot_id in lot_ids:
            self.lots.pop(lot_id, None)


@dataclass
class SnapshotCache:
    """Each facility's latest stored snapshot, by its row id: a load asks the store only for the
    newest id per facility and parses the inputs of those that changed."""

    latest: dict[str, tuple[int, LimitSnapshot]] = field(default_factory=dict)

    def load(self, conn: psycopg.Connection, facility_ids: Sequence[str]) -> dict[str, LimitSnapshot]:
        rows = conn.execute(
            """SELECT f.id, s.id FROM unnest(%s::text[]) AS f(id)
               CROSS JOIN LATERAL (SELECT id FROM limit_snapshots WHERE facility_id = f.id
                                    ORDER BY time DESC, id DESC LIMIT 1) s""",
            (list(facility_ids),)).fetchall()
        newest: dict[str, int] = dict(rows)
        for fid in facility_ids:
            if fid not in newest:
                self.latest.pop(fid, None)
        stale = [sid for fid, sid in newest.items()
                 if fid not in self.latest or self.latest[fid][0] != sid]
        if stale:
            for fid, sid, inputs in conn.execute(
                    "SELECT facility_id, id, inputs FROM limit_snapshots WHERE id = ANY(%s)",
                    (stale,)).fetchall():
                self.latest[fid] = (sid, snapshot_from_inputs(inputs))
        return {fid: self.latest[fid][1] for fid in newest if fid in self.latest}

    def remember(self, conn: psycopg.Connection, snapshots: Sequence[LimitSnapshot]) -> None:
        """The snapshots just stored (this transaction): their row ids, so the next load need
        not read them back."""
        if not snapshots:
            return
        by_time: dict[datetime, list[LimitSnapshot]] = defaultdict(list)
        for snap in snapshots:
            by_time[snap.time].append(snap)
        for time, group in by_time.items():
            mine = {snap.facility_id: snap for snap in group}
            for fid, sid in conn.execute(
                    "SELECT DISTINCT ON (facility_id) facility_id, id FROM limit_snapshots"
                    " WHERE facility_id = ANY(%s) AND time = %s ORDER BY facility_id, id DESC",
                    (list(mine), time)).fetchall():
                self.latest[fid] = (sid, mine[fid])


def load_inputs(conn: psycopg.Connection, facility_ids: Iterable[str], now: datetime,
                cache: SeriesCache, price_cache: PriceCache,
                door_window: timedelta = timedelta(hours=2),
                policy: RulePolicy | None = None,
                observations: ObservationCache | None = None,
                snapshots: SnapshotCache | None = None) -> Loaded:
    """Everything :func:`lending.domain.assess.assess` needs for each facility, loaded in bulk
    (``policy``: whose sites' day and look-back the sales are totalled by; ``observations`` and
    ``snapshots``: the engine's caches of unchanged lots' observations and latest snapshots)."""
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
    refused = load_refusals(conn, devices, now - (policy or RulePolicy()).integrity.fault_window)
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
    sales = load_sales(conn, ids, now, policy or RulePolicy())
    alerts = latest_alerts(conn, ids)
    previous = snapshots.load(conn, ids) if snapshots is not None else latest_snapshots(conn, ids)
    inspections = latest_inspections(conn, [lot.id for lot in lots])
    lots_of: dict[str, list[Lot]] = defaultdict(list)
    for lot in lots:
        lots_of[lot.facility_id].append(lot)
    lot_facility = {lot.id: lot.facility_id for lot in lots}
    releases_of: dict[str, list[ReleaseOrder]] = defaultdict(list)
    for release in releases:
        if release.lot_id in lot_facility:
            releases_of[lot_facility[release.lot_id]].append(release)
    receivables_of: dict[str, list[Receivable]] = defaultdict(list)
    for receivable in receivables:
        receivables_of[receivable.facility_id].append(receivable)
    out = {}
    for facility in facilities:
        mine = lots_of[facility.id]
        out[facility.id] = FacilityInputs(
            facility=facility, lots=mine, commodities=commodities,
            observations={lot.id: observe(lot, cache, status, now, door_window, refused)
                          for lot in mine} if observations is None else
                         {lot.id: observations.observe(lot, cache, status, now, door_window, refused)
                          for lot in mine},
            prices=prices,
            releases=releases_of.get(facility.id, []),
            receivables=receivables_of.get(facility.id, []),
            sales=sales.get(facility.id, []),
            latest_alerts=alerts.get(facility.id, {}),
            previous=previous.get(facility.id),
            inspections={lot.id: inspections[lot.id] for lot in mine if lot.id in inspections},
        )
    return Loaded(out)


# --- persisting ------------------------------------------------------------------------------------

def _ltv_or_none(ltv: float) -> float | None:
    return None if math.isinf(ltv) else ltv


def save_snapshot(conn: psycopg.Connection, snapshot: LimitSnapshot, reasons: Sequence[str]) -> None:
    conn.execute(
        "INSERT INTO limit_snapshots (facility_id, time, credit_limit, available, outstanding,"
        " collateral_value, trusted_collateral_value, ltv, reasons, inputs)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (snapshot.facility_id, snapshot.time, round(snapshot.limit, 2),
         round(snapshot.available, 2), round(snapshot.outstanding, 2),
         round(snapshot.collateral_value, 2), round(snapshot.trusted_collateral_value, 2),
         _ltv_or_none(snapshot.ltv), Jsonb(list(reasons)), Jsonb(snapshot.inputs())))
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
            conn.execute("UPDATE alerts SET severity = %s, message = %s, evidence = %s,"
                         " cleared = %s WHERE id = %s",
                         (str(alert.severity), alert.message, Jsonb(_json(alert.evidence)),
                          alert.cleared, alert.id))
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


_SNAPSHOT_COPY = ("COPY limit_snapshots (facility_id, time, credit_limit, available, outstanding,"
                  " collateral_value, trusted_collateral_value, ltv, reasons, inputs) FROM STDIN")


def save_snapshots(conn: psycopg.Connection,
                   changed: Sequence[tuple[LimitSnapshot, Sequence[str]]]) -> None:
    """:func:`save_snapshot` for many at once: one COPY, then their ``pw_limits`` notices (in
    this order) in one statement."""
    if not changed:
        return
    with conn.cursor() as cur, cur.copy(_SNAPSHOT_COPY) as copy:
        for snapshot, reasons in changed:
            copy.write_row((
                snapshot.facility_id, snapshot.time, round(snapshot.limit, 2),
                round(snapshot.available, 2), round(snapshot.outstanding, 2),
                round(snapshot.collateral_value, 2), round(snapshot.trusted_collateral_value, 2),
                _ltv_or_none(snapshot.ltv), Jsonb(list(reasons)), Jsonb(snapshot.inputs())))
    conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS n(p, i)"
                 " ORDER BY i", (LIMITS_CHANNEL, [json.dumps({
                     "facility_id": s.facility_id, "limit": s.limit, "available": s.available,
                     "ltv": _ltv_or_none(s.ltv)}) for s, _ in changed]))


def persist_all(conn: psycopg.Connection, assessments: Sequence[Assessment]) -> list[list[int]]:
    """:func:`persist` for many facilities: the snapshots of those whose limit moved in one COPY,
    then each facility's alert events; returns the ids raised, per assessment."""
    save_snapshots(conn, [(a.snapshot, a.limit_changed.reasons) for a in assessments
                          if a.limit_changed is not None])
    return [apply_alert_events(conn, a.alert_events) if a.alert_events else []
            for a in assessments]


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
    """Ask the engines to recompute these facilities (None: all of them). A long list is split
    over several notifications, each under PostgreSQL's 8000-byte payload limit, all delivered
    at commit; ``*`` is sent only for None (everything changed)."""
    if facility_ids is None:
        conn.execute("SELECT pg_notify(%s, '*')", (LENDING_CHANNEL,))
        return
    for payload in notify_payloads(filter(None, facility_ids), NOTIFY_MAX):
        # one id longer than a payload cannot be named: everything, rather than nothing
        named = payload if len(payload.encode()) <= NOTIFY_MAX else "*"
        conn.execute("SELECT pg_notify(%s, %s)", (LENDING_CHANNEL, named))
