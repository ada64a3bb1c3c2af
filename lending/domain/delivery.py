"""Delivery evidence from telemetry: is the trade behind a receivable real? (pure: values in,
a verdict out).

A supplier's receivable may name its :class:`Shipment`: the vehicle, the seller's pledged lot the
goods came from, the quantity (in the lots' units) and the buyer's lot (warehouse) they go to. The
sensors then prove the delivery by themselves when all of these hold:

- **arrived and stopped**: after ``shipped_at`` the vehicle *entered* the buyer lot's geofence (a
  fix inside it right after one outside) and stopped there: fixes inside the fence, at a reported
  speed of at most ``stop_speed_kmh`` (or none reported), all within ``stop_radius_m`` of the first
  of them, for at least ``stop_minutes``, with no silence longer than ``max_gap_minutes``;
- **released**: an executed release order of the seller lot in the window whose quantity is the
  shipped quantity within ``tolerance`` (else several whose sum is);
- **the seller's lot fell**: its measured quantity (robust levels: the median over
  ``level_minutes``, as the lending engine's load-cell level) fell from its highest level up to
  ``shipped_at`` to its lowest level by the vehicle's arrival plus ``settle_hours`` by the shipped
  quantity, within ``tolerance``;
- **the buyer's lot rose**: its level rose from just before the arrival to its highest level
  within ``settle_hours`` after it by the shipped quantity, within ``tolerance``;
- and the track has no impossible jump (:func:`lending.domain.integrity.impossible_jumps`: a
  spoofed or replayed position proves nothing).

The verdict is ``verified`` then. It is ``contradicted`` (a possible fictitious trade) when the
sensors show the opposite of a required fact:

- ``never_left``: the deadline (``shipped_at + deadline_hours``) has passed and every fix of the
  window is inside the seller lot's geofence, the fixes covering ``shipped_at`` to the deadline
  without a silence longer than ``max_gap_minutes``;
- ``goods_never_moved``: no executed release of the seller lot and its level did not fall (by more
  than the tolerance), its readings covering the time up to the deadline — or, before the
  deadline, up to the vehicle's arrival at the buyer's (a truck that arrives with nothing loaded);
- ``quantity_mismatch`` once the deadline has passed: the vehicle arrived and stopped, the seller
  and buyer levels are known, and the release, the fall or the rise is not the shipped quantity.

Anything else is ``pending`` for an officer, with the reasons: no track, not arrived yet, no stop,
no release, a quantity outside the tolerance before the deadline, readings missing (a tracker or a
load cell that fell silent proves nothing either way).
Every reason is ``"<code>: <what the sensors said>"``; the evidence (JSON-serialisable: ISO times,
finite numbers or null) names the arrival time and position, the stop, the releases, the seller's
fall, the buyer's rise and every tolerance used.

Hostile input never raises: fixes with a non-finite or out-of-range position or time are dropped
(and counted), speeds that are not finite non-negative numbers count as unknown, points may come in
any order, naive datetimes are read as UTC, and an unusable geofence (fewer than three finite
vertices) counts as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from lending.domain.detectors import points_in_polygon
from lending.domain.integrity import IntegrityPolicy, haversine_km, impossible_jumps
from lending.domain.levels import Series, level_at
from lending.domain.model import DomainError, ReleaseOrder, ReleaseStatus
from lending.domain.quantity import Fix, TrustPolicy

Status = Literal["verified", "pending", "contradicted"]
Polygon = tuple[tuple[float, float], ...]
Floats = NDArray[np.float64]

LEVEL_MIN_SAMPLES = TrustPolicy().level_min_samples  # the lending engine's load-cell level
DEFAULT_LEVEL_MINUTES = TrustPolicy().weight_level_window.total_seconds() / 60.0
MAX_LEVEL_POINTS = 600  # levels evaluated at most at this many samples per range (cost bound)


class TrackPoint(NamedTuple):
    """One position of the vehicle: device time, latitude, longitude, reported speed (km/h)."""

    time: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None and t.utcoffset() is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Shipment:
    """The shipment a receivable names: ``quantity`` units from the seller's lot to the buyer's."""

    vehicle: str
    seller_lot_id: str
    quantity: float
    buyer_lot_id: str
    shipped_at: datetime

    def __post_init__(self) -> None:
        if not (isinstance(self.vehicle, str) and self.vehicle.strip()):
            raise DomainError("a shipment names its vehicle")
        if not (self.seller_lot_id and self.buyer_lot_id):
            raise DomainError("a shipment names the seller's and the buyer's lot")
        if self.seller_lot_id == self.buyer_lot_id:
            raise DomainError("a shipment goes from one lot to another, not to itself")
        if not (isinstance(self.quantity, int | float) and math.isfinite(self.quantity)
                and self.quantity > 0):
            raise DomainError(f"a shipped quantity must be a finite number > 0, got {self.quantity!r}")
        if self.shipped_at.tzinfo is None or self.shipped_at.utcoffset() is None:
            raise DomainError("the time of a shipment needs a time zone")


@dataclass(frozen=True, slots=True)
class DeliveryFacts:
    """What the store knows about a shipment's window ``[window_start, window_end]``.

    ``track``: the vehicle's positions (any order); the geofences are (lat, lon) vertices (None:
    the lot has none); ``releases``: release orders of the seller lot (only executed ones in the
    window count); the quantity series are the lots' measured quantities in units, one (time,
    quantity) per reading, any order; ``devices``: who reported the positions (for the evidence).
    """

    window_start: datetime
    window_end: datetime
    track: tuple[TrackPoint, ...] = ()
    seller_geofence: Polygon | None = None
    buyer_geofence: Polygon | None = None
    releases: tuple[ReleaseOrder, ...] = ()
    seller_quantity: tuple[tuple[datetime, float], ...] = ()
    buyer_quantity: tuple[tuple[datetime, float], ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryVerdict:
    """``verified``: the sensors prove the delivery; ``pending``: not (yet) — an officer decides;
    ``contradicted``: the sensors show the opposite (a possible fictitious trade)."""

    status: Status
    reasons: tuple[str, ...]
    evidence: dict[str, Any]


# --- helpers --------------------------------------------------------------------------------------

def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _epoch(t: object) -> float | None:
    if not isinstance(t, datetime):
        return None
    try:
        return _aware(t).timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _iso(epoch: float | None) -> str | None:
    if epoch is None or not math.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _num(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None


def _fence(polygon: Sequence[Sequence[float]] | None) -> Polygon | None:
    """The fence as finite (lat, lon) vertices, or None when it is missing or unusable."""
    if polygon is None:
        return None
    vertices = []
    for vertex in polygon:
        try:
            lat, lon = (_finite(v) for v in vertex)
        except (TypeError, ValueError):
            return None
        if lat is None or lon is None:
            return None
        vertices.append((lat, lon))
    return tuple(vertices) if len(vertices) >= 3 else None


class _Track(NamedTuple):
    t: Floats
    lat: Floats
    lon: Floats
    speed: Floats  # NaN: not reported
    dropped: int


def _clean_track(track: Sequence[TrackPoint]) -> _Track:
    rows = []
    for point in track:
        try:
            time, lat, lon, speed = point
        except (TypeError, ValueError):
            continue
        t, y, x = _epoch(time), _finite(lat), _finite(lon)
        if t is None or y is None or x is None or not (-90 <= y <= 90 and -180 <= x <= 180):
            continue
        v = _finite(speed)
        rows.append((t, y, x, v if v is not None and 0 <= v <= 1000 else math.nan))
    rows.sort(key=lambda r: r[0])
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return _Track(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], len(track) - len(rows))


def _clean_series(pairs: Sequence[tuple[datetime, float]]) -> Series:
    rows = []
    for pair in pairs:
        try:
            time, value = pair
        except (TypeError, ValueError):
            continue
        t, v = _epoch(time), _finite(value)
        if t is not None and v is not None:
            rows.append((t, v))
    rows.sort(key=lambda r: r[0])
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return Series(arr[:, 0], arr[:, 1], np.arange(len(rows), dtype=np.intp))


def _levels(s: Series, lo_t: float, hi_t: float, window_s: float) -> tuple[Floats, Floats]:
    """(times, levels) of ``s`` at its samples in [lo_t, hi_t]: each the median of the
    ``window_s`` ending there (at least :data:`LEVEL_MIN_SAMPLES`), at most
    :data:`MAX_LEVEL_POINTS` of them, evenly spread, the last sample always included."""
    idx = np.flatnonzero((s.t >= lo_t) & (s.t <= hi_t))
    if idx.size > MAX_LEVEL_POINTS:
        pick = np.unique(np.linspace(0, idx.size - 1, MAX_LEVEL_POINTS).round().astype(np.intp))
        idx = idx[pick]
    levels = np.array([level_at(s, int(i), window_s=window_s, min_samples=LEVEL_MIN_SAMPLES)
                       for i in idx], dtype=np.float64)
    return s.t[idx], levels


@dataclass(frozen=True, slots=True)
class _Stop:
    entered_at: float
    start: int  # first fix of the stop
    end: int  # last fix of the stop
    lat: float
    lon: float


def _stop_after_entry(tr: _Track, inside: NDArray[np.bool_], entry: int, *, stop_s: float,
                      radius_m: float, speed_kmh: float, max_gap_s: float) -> _Stop | None:
    """The first stop (see the module) in the fence run that begins at ``entry``."""
    anchor: int | None = None
    found: int | None = None
    j = entry
    while j < tr.t.size and inside[j]:
        still = math.isnan(tr.speed[j]) or tr.speed[j] <= speed_kmh
        gap = j > entry and tr.t[j] - tr.t[j - 1] > max_gap_s
        if not still:
            if found is not None:
                break
            anchor = None
        elif anchor is None or gap or haversine_km(
                (tr.lat[anchor], tr.lon[anchor]), (tr.lat[j], tr.lon[j])) * 1000.0 > radius_m:
            if found is not None:
                break
            anchor = j
        elif found is not None or tr.t[j] - tr.t[anchor] >= stop_s:
            found = j
        j += 1
    if anchor is None or found is None:
        return None
    lat = float(np.median(tr.lat[anchor:found + 1]))
    lon = float(np.median(tr.lon[anchor:found + 1]))
    return _Stop(float(tr.t[entry]), anchor, found, lat, lon)


def _covered(times: Floats, start: float, end: float, max_gap_s: float) -> bool:
    """Readings from within ``max_gap_s`` of ``start`` to within it of ``end``, never silent
    longer than that in between."""
    near = np.sort(times[(times >= start - max_gap_s) & (times <= end + max_gap_s)])
    return bool(near.size and near[0] <= start + max_gap_s and near[-1] >= end - max_gap_s
                and (np.diff(near) <= max_gap_s).all())


def _match_releases(releases: Sequence[ReleaseOrder], quantity: float, tol: float
                    ) -> list[ReleaseOrder]:
    """The release whose quantity is closest to ``quantity`` within ``tol``, else all of them
    when their sum is within it, else none."""
    if not releases:
        return []
    best = min(releases, key=lambda r: (abs(r.quantity - quantity), r.id))
    if abs(best.quantity - quantity) <= tol:
        return [best]
    if abs(sum(r.quantity for r in releases) - quantity) <= tol:
        return list(releases)
    return []


def _check(name: str, value: float, low: float, high: float = math.inf) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise DomainError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


# --- the judge ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Rules:
    """The judge's options, checked, in seconds and units; ``tol``: the tolerance in units."""

    quantity: float
    tol: float
    stop_s: float
    radius_m: float
    still_kmh: float
    level_s: float
    settle_s: float
    max_gap_s: float


@dataclass(frozen=True, slots=True)
class _Span:
    """The judged times, epoch seconds: the window ``[start, end]`` (``end`` never after now)."""

    start: float
    end: float
    shipped: float
    deadline: float
    now: float

    @property
    def past(self) -> bool:
        return self.now >= self.deadline


class _Vehicle(NamedTuple):
    stop: _Stop | None
    entered: bool
    never_left: bool | None
    jumps: list[dict[str, Any]]
    evidence: dict[str, Any]


class _Goods(NamedTuple):
    executed: list[ReleaseOrder]
    matched: list[ReleaseOrder]
    drop: float | None  # the seller's fall, units
    seller_covered: bool  # its readings cover the shipment up to the arrival or the deadline
    rise: float | None  # the buyer's rise after the arrival, units
    evidence: dict[str, Any]


def _vehicle(facts: DeliveryFacts, span: _Span, rules: _Rules,
             integrity: IntegrityPolicy) -> _Vehicle:
    """Where the vehicle went: its entry into the buyer's fence and stop there, when it left
    the seller's site, whether it never did, and impossible jumps."""
    tr = _clean_track(facts.track)
    keep = (tr.t >= span.start) & (tr.t <= span.end)
    tr = _Track(tr.t[keep], tr.lat[keep], tr.lon[keep], tr.speed[keep], tr.dropped)
    seller_fence, buyer_fence = _fence(facts.seller_geofence), _fence(facts.buyer_geofence)
    outside = np.zeros(tr.t.size, dtype=np.bool_)
    in_buyer = points_in_polygon(tr.lat, tr.lon, buyer_fence) if buyer_fence else outside
    in_seller = points_in_polygon(tr.lat, tr.lon, seller_fence) if seller_fence else outside
    stop: _Stop | None = None
    entered = False
    for i in range(1, tr.t.size if buyer_fence else 0):
        if in_buyer[i] and not in_buyer[i - 1] and tr.t[i] >= span.shipped:
            entered = True
            stop = _stop_after_entry(tr, in_buyer, i, stop_s=rules.stop_s,
                                     radius_m=rules.radius_m, speed_kmh=rules.still_kmh,
                                     max_gap_s=rules.max_gap_s)
            if stop is not None:
                break
    left_at = None
    never_left = None
    if seller_fence is not None and tr.t.size:
        until = stop.entered_at if stop is not None else span.end
        last_in = np.flatnonzero(in_seller & (tr.t <= until))
        if last_in.size and last_in[-1] + 1 < tr.t.size:
            left_at = float(tr.t[last_in[-1] + 1])
        never_left = bool(in_seller.all()) and _covered(tr.t, span.shipped, span.deadline,
                                                        rules.max_gap_s)
    fixes = [Fix(datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(t, UTC), y, x,
                 None if math.isnan(v) else v)
             for t, y, x, v in zip(tr.t.tolist(), tr.lat.tolist(), tr.lon.tolist(),
                                   tr.speed.tolist(), strict=True)]
    jumps = impossible_jumps(fixes, integrity)
    evidence: dict[str, Any] = {
        "track": {"points": int(tr.t.size), "dropped": tr.dropped,
                  "first": _iso(float(tr.t[0])) if tr.t.size else None,
                  "last": _iso(float(tr.t[-1])) if tr.t.size else None},
        "arrival": None if stop is None else {
            "entered_at": _iso(stop.entered_at), "stopped_from": _iso(float(tr.t[stop.start])),
            "stopped_until": _iso(float(tr.t[stop.end])),
            "stop_minutes": _num((tr.t[stop.end] - tr.t[stop.start]) / 60.0, 1),
            "lat": _num(stop.lat, 6), "lon": _num(stop.lon, 6)},
        "departure": None if left_at is None else {"left_seller_at": _iso(left_at)},
        "never_left": never_left,
        "impossible_track": jumps[-5:],
        "buyer_geofence_usable": buyer_fence is not None,
    }
    return _Vehicle(stop, entered, never_left, jumps, evidence)


def _seller_drop(facts: DeliveryFacts, span: _Span, rules: _Rules, horizon: float
                 ) -> tuple[float | None, Series, dict[str, Any]]:
    """The seller lot's fall: from its highest level up to the shipment to its lowest by
    ``horizon``; None without a level both up to the shipment and after it."""
    seller = _clean_series(facts.seller_quantity)
    before_t, before = _levels(seller, span.start, span.shipped, rules.level_s)
    evidence: dict[str, Any] = {"samples": seller.size}
    if not before.size:
        return None, seller, evidence
    top = int(np.argmax(before))
    evidence |= {"before": _num(float(before[top])), "before_at": _iso(float(before_t[top]))}
    after_t, after = _levels(seller, float(before_t[top]), horizon, rules.level_s)
    if after.size <= 1:  # nothing but the highest level itself
        return None, seller, evidence
    low = int(np.argmin(after))
    drop = float(before[top]) - float(after[low])
    evidence |= {"after": _num(float(after[low])), "after_at": _iso(float(after_t[low])),
                 "drop": _num(drop)}
    return drop, seller, evidence


def _buyer_rise(facts: DeliveryFacts, span: _Span, rules: _Rules, arrival: float
                ) -> tuple[float | None, dict[str, Any]]:
    """The buyer lot's rise: from its level just before ``arrival`` to its highest within
    ``settle_s`` after it; None without a level both before and after."""
    buyer = _clean_series(facts.buyer_quantity)
    evidence: dict[str, Any] = {"samples": buyer.size}
    pre = np.flatnonzero(buyer.t <= arrival)
    post_t, post = _levels(buyer, arrival + 1e-6, min(span.end, arrival + rules.settle_s),
                           rules.level_s)
    if not (pre.size and post.size):
        return None, evidence
    base = level_at(buyer, int(pre[-1]), window_s=rules.level_s, min_samples=LEVEL_MIN_SAMPLES)
    peak = int(np.argmax(post))
    rise = float(post[peak]) - base
    evidence |= {"before": _num(base), "after": _num(float(post[peak])),
                 "after_at": _iso(float(post_t[peak])), "rise": _num(rise)}
    return rise, evidence


def _goods(shipment: Shipment, facts: DeliveryFacts, span: _Span, rules: _Rules,
           arrival: float | None) -> _Goods:
    """The releases executed in the window and the one(s) matching the shipment, the seller's
    fall and the buyer's rise."""
    executed = sorted(
        (r for r in facts.releases
         if r.lot_id == shipment.seller_lot_id and r.status is ReleaseStatus.EXECUTED
         and (done := _epoch(r.executed_at)) is not None and span.start <= done <= span.end),
        key=lambda r: (_epoch(r.executed_at) or 0.0, r.id))
    matched = _match_releases(executed, rules.quantity, rules.tol)
    horizon = span.end if arrival is None else min(span.end, arrival + rules.settle_s)
    drop, seller, seller_ev = _seller_drop(facts, span, rules, horizon)
    seller_to = arrival if arrival is not None else min(span.deadline, span.end)
    covered = drop is not None and _covered(seller.t, span.shipped, seller_to, rules.max_gap_s)
    rise, buyer_ev = (
        (None, {"samples": _clean_series(facts.buyer_quantity).size}) if arrival is None
        else _buyer_rise(facts, span, rules, arrival))
    evidence = {
        "releases": [{"id": r.id, "quantity": r.quantity,
                      "executed_at": _iso(_epoch(r.executed_at))} for r in executed],
        "matched_releases": [r.id for r in matched],
        "released_quantity": _num(sum(r.quantity for r in matched)) if matched else None,
        "seller": seller_ev, "buyer": buyer_ev,
    }
    return _Goods(executed, matched, drop, covered, rise, evidence)


def _vehicle_reasons(vehicle: _Vehicle, span: _Span) -> tuple[list[str], list[str]]:
    """(pending reasons, contradictions) about the vehicle."""
    pending, contradictions = [], []
    if not vehicle.evidence["track"]["points"]:
        pending.append("no_track: no position of the vehicle in the window")
    elif not vehicle.evidence["buyer_geofence_usable"]:
        pending.append("buyer_geofence_unknown: the buyer's lot has no usable geofence")
    elif vehicle.stop is None and vehicle.entered:
        pending.append("no_stop: the vehicle entered the buyer's geofence but did not stop there")
    elif vehicle.stop is None:
        pending.append("not_arrived: the vehicle has not entered the buyer's geofence since the "
                       "shipment")
    if vehicle.jumps:
        pending.append(f"impossible_track: {len(vehicle.jumps)} position jump(s) no truck can "
                       "make")
    if span.past and vehicle.never_left:
        contradictions.append("never_left: the vehicle stayed inside the seller's site geofence "
                              f"from {_iso(span.shipped)} to the deadline {_iso(span.deadline)}")
    return pending, contradictions


def _goods_reasons(goods: _Goods, span: _Span, rules: _Rules, arrived: bool
                   ) -> tuple[list[str], list[str]]:
    """(pending reasons, contradictions) about the releases and the two lots' quantities."""
    q, tol = rules.quantity, rules.tol
    pending, contradictions = [], []
    if not goods.executed:
        pending.append("no_executed_release: no release of the seller's lot was executed in the "
                       "window")
    elif not goods.matched:
        total = sum(r.quantity for r in goods.executed)
        pending.append(f"quantity_mismatch: releases of {total:g} units executed, the shipment "
                       f"says {q:g} (tolerance {tol:g})")
    if goods.drop is None:
        pending.append("seller_quantity_unknown: no measured quantity of the seller's lot both "
                       "up to the shipment and after it")
    elif abs(goods.drop - q) > tol:
        pending.append(f"seller_drop_mismatch: the seller's lot fell by {goods.drop:,.1f} units, "
                       f"the shipment says {q:g}")
    if arrived and goods.rise is None:
        pending.append("buyer_quantity_unknown: no measured quantity of the buyer's lot both "
                       "before and after the arrival")
    elif goods.rise is not None and abs(goods.rise - q) > tol:
        pending.append(f"buyer_rise_mismatch: the buyer's lot rose by {goods.rise:,.1f} units, "
                       f"the shipment says {q:g}")
    still = (not goods.executed and goods.drop is not None and goods.drop <= tol
             and goods.seller_covered)
    if still and (span.past or arrived):
        when = "by the vehicle's arrival" if arrived and not span.past else "by the deadline"
        contradictions.append(f"goods_never_moved: no release executed and the seller's lot did "
                              f"not fall ({goods.drop or 0.0:,.1f} units) {when}")
    off = [r for r in pending if r.split(":", 1)[0] in
           ("quantity_mismatch", "seller_drop_mismatch", "buyer_rise_mismatch")]
    known = goods.drop is not None and goods.rise is not None
    if span.past and arrived and known and goods.executed and off:
        contradictions.append(f"quantity_mismatch: by the deadline the movements do not match "
                              f"the shipped {q:g} units ({'; '.join(off)})")
    return pending, contradictions


def judge_delivery(shipment: Shipment, facts: DeliveryFacts, now: datetime, *,
                   tolerance: float = 0.05, stop_minutes: float = 5.0,
                   deadline_hours: float = 48.0, stop_radius_m: float = 150.0,
                   stop_speed_kmh: float = 3.0, level_minutes: float = DEFAULT_LEVEL_MINUTES,
                   settle_hours: float = 6.0, max_gap_minutes: float = 30.0,
                   integrity: IntegrityPolicy | None = None) -> DeliveryVerdict:
    """The verdict on ``shipment`` from ``facts`` as of ``now`` (see the module): ``tolerance``
    is a share of the shipped quantity; ``integrity`` sets what counts as an impossible jump."""
    q = float(shipment.quantity)
    share = _check("tolerance", tolerance, 0.0, 1.0)
    rules = _Rules(
        quantity=q, tol=share * q, stop_s=_check("stop_minutes", stop_minutes, 0.0) * 60.0,
        radius_m=_check("stop_radius_m", stop_radius_m, 0.0),
        still_kmh=_check("stop_speed_kmh", stop_speed_kmh, 0.0),
        level_s=_check("level_minutes", level_minutes, 0.0) * 60.0,
        settle_s=_check("settle_hours", settle_hours, 0.0) * 3600.0,
        max_gap_s=_check("max_gap_minutes", max_gap_minutes, 0.0) * 60.0)
    now_t = _aware(now).timestamp()
    shipped = shipment.shipped_at.timestamp()
    w_start, w_end = _epoch(facts.window_start), _epoch(facts.window_end)
    span = _Span(start=min(shipped, w_start if w_start is not None else shipped),
                 end=min(now_t, w_end) if w_end is not None else now_t, shipped=shipped,
                 deadline=shipped + _check("deadline_hours", deadline_hours, 0.0) * 3600.0,
                 now=now_t)
    vehicle = _vehicle(facts, span, rules, integrity or IntegrityPolicy())
    arrival = vehicle.stop.entered_at if vehicle.stop is not None else None
    goods = _goods(shipment, facts, span, rules, arrival)
    pending, contradictions = _vehicle_reasons(vehicle, span)
    more_pending, more_contradictions = _goods_reasons(goods, span, rules, arrival is not None)
    if now_t < shipped:
        pending.insert(0, f"not_shipped_yet: the shipment is dated {_iso(shipped)}, after now")
    pending += more_pending
    contradictions += more_contradictions
    drop, rise = goods.drop, goods.rise
    evidence: dict[str, Any] = {
        "shipment": {"vehicle": shipment.vehicle, "seller_lot_id": shipment.seller_lot_id,
                     "buyer_lot_id": shipment.buyer_lot_id, "quantity": q,
                     "shipped_at": _iso(shipped)},
        "now": _iso(now_t), "deadline": _iso(span.deadline),
        "window": [_iso(span.start), _iso(span.end)], "devices": list(facts.devices),
        "tolerances": {"quantity_share": share, "quantity_units": _num(rules.tol),
                       "stop_minutes": stop_minutes, "stop_radius_m": rules.radius_m,
                       "stop_speed_kmh": rules.still_kmh, "deadline_hours": deadline_hours,
                       "level_minutes": level_minutes, "settle_hours": settle_hours,
                       "max_gap_minutes": max_gap_minutes},
        **{k: v for k, v in vehicle.evidence.items() if k != "buyer_geofence_usable"},
        **goods.evidence,
        "checks": {
            "arrived_and_stopped": arrival is not None,
            "left_seller": vehicle.evidence["departure"] is not None,
            "release_matched": bool(goods.matched),
            "seller_fell": drop is not None and abs(drop - q) <= rules.tol,
            "buyer_rose": rise is not None and abs(rise - q) <= rules.tol,
            "track_plausible": not vehicle.jumps,
        },
    }
    if contradictions:
        return DeliveryVerdict("contradicted", tuple(contradictions + pending), _jsonable(evidence))
    if pending:
        return DeliveryVerdict("pending", tuple(pending), _jsonable(evidence))
    return DeliveryVerdict("verified", (
        (f"arrived_and_stopped: entered the buyer's geofence at {_iso(arrival)} and stopped "
         f"{evidence['arrival']['stop_minutes']} min"),
        (f"release_matched: {', '.join(r.id for r in goods.matched)} "
         f"({sum(r.quantity for r in goods.matched):g} units)"),
        f"seller_fell: by {drop or 0.0:,.1f} units",
        f"buyer_rose: by {rise or 0.0:,.1f} units",
    ), _jsonable(evidence))


def reason_codes(verdict: DeliveryVerdict) -> tuple[str, ...]:
    """The codes of a verdict's reasons (the part before the colon)."""
    return tuple(r.split(":", 1)[0] for r in verdict.reasons)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
