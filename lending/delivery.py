"""Delivery evidence, the I/O side: read what the store knows about a shipment's window and ask
the pure judge (:mod:`lending.domain.delivery`) for a verdict.

- the vehicle's position comes from the sensors bound (``lot_sensors``) to the lots carried by it
  (``lots.vehicle``), and from a registered device whose id is the vehicle id; only devices of the
  seller's or the buyer's tenant count, so a receivable cannot borrow another party's truck;
- the lots' geofences are the ``lots.geofence`` of the seller's and the buyer's lot;
- the releases are the seller lot's executed ``release_orders`` in the window
  (index ``release_orders_lot``);
- a lot's measured quantity is the lending engine's: its bound sensors' readings are observed
  (:func:`lending.domain.observation.observe`: which sensor's series counts) and turned into units
  of goods (:func:`lending.domain.quantity.compute_channels`: the load cell ÷ unit weight with
  readings a load cell cannot mean left out, or the RFID count where the load cell is faulty or
  absent).

Every read is bounded: from ``shipped_at − before`` to the earlier of ``now`` and
``shipped_at + after``, through the readings key ``(device_id, metric, time, …)``. Long windows are
read as per-bucket medians (quantities) and one fix per bucket (positions), at most a few thousand
rows per series, so a week of 1 Hz telemetry costs what an hour does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from lending.domain.delivery import (
    DeliveryFacts,
    DeliveryVerdict,
    Polygon,
    Shipment,
    TrackPoint,
    judge_delivery,
)
from lending.domain.model import Lot, ReleaseOrder, ReleaseStatus
from lending.domain.observation import observe
from lending.domain.quantity import compute_channels
from lending.operations import LendingError

BEFORE = timedelta(hours=3)  # read from this long before the shipment (loading, "before" levels)
SETTLE = timedelta(hours=6)  # the judge's default settle_hours: read this long past the deadline
QUANTITY_BUCKETS = 2000  # at most about this many quantity points per sensor and metric
TRACK_BUCKETS = 4000  # ... and positions per tracker
MAX_QUANTITY_BUCKET = timedelta(minutes=1)
MAX_TRACK_BUCKET = timedelta(seconds=30)
MIN_BUCKET = timedelta(seconds=1)
QUANTITY_METRICS = ("weight_kg", "rfid_count")
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)

_LOTS_SQL = """
SELECT l.lot_id, l.facility_id, l.commodity, l.declared_quantity, l.unit_weight_kg,
       l.registration_no, l.site, l.vehicle, l.geofence, b.tenant,
       coalesce((SELECT array_agg(s.device_id ORDER BY s.device_id) FROM lot_sensors s
                  WHERE s.lot_id = l.lot_id), '{}')
  FROM lots l JOIN facilities f USING (facility_id) JOIN borrowers b USING (borrower_id)
 WHERE l.lot_id = ANY(%s)
"""

# Trackers of the vehicle: sensors of the lots it carries, and a device named like it.
_TRACKERS_SQL = """
SELECT s.device_id FROM lots l JOIN lot_sensors s USING (lot_id) JOIN devices d USING (device_id)
 WHERE l.vehicle = %(vehicle)s AND d.tenant = ANY(%(tenants)s)
UNION
SELECT device_id FROM devices WHERE device_id = %(vehicle)s AND tenant = ANY(%(tenants)s)
 ORDER BY 1
"""

# One fix per tracker and bucket (its newest latitude), with the longitude and speed of the same
# message: the buckets are picked on the latitudes alone, so the other two are looked up (by the
# readings key) once per bucket, not once per reading.
_TRACK_SQL = """
SELECT la.time, la.value, lo.value, sp.value
  FROM (SELECT DISTINCT ON (device_id, date_bin(%(bucket)s, time, %(origin)s))
               device_id, time, value, boot, seq
          FROM readings
         WHERE device_id = ANY(%(devices)s) AND metric = 'lat'
           AND time >= %(start)s AND time <= %(end)s
         ORDER BY device_id, date_bin(%(bucket)s, time, %(origin)s), time DESC) la
  JOIN readings lo ON lo.device_id = la.device_id AND lo.metric = 'lon' AND lo.time = la.time
                  AND lo.boot = la.boot AND lo.seq = la.seq
  LEFT JOIN readings sp ON sp.device_id = la.device_id AND sp.metric = 'speed_kmh'
                       AND sp.time = la.time AND sp.boot = la.boot AND sp.seq = la.seq
"""

# The median of each sensor's weight and count per bucket, at the bucket's newest reading.
_QUANTITY_SQL = """
SELECT device_id, metric, max(time), percentile_cont(0.5) WITHIN GROUP (ORDER BY value)
  FROM readings
 WHERE device_id = ANY(%(devices)s) AND metric = ANY(%(metrics)s)
   AND time >= %(start)s AND time <= %(end)s
 GROUP BY device_id, metric, date_bin(%(bucket)s, time, %(origin)s)
 ORDER BY 1, 2, 3
"""

_RELEASES_SQL = """
SELECT release_id, lot_id, quantity, requested_at, approved_at, executed_at FROM release_orders
 WHERE lot_id = %s AND status = 'executed' AND executed_at >= %s AND executed_at <= %s
 ORDER BY executed_at, release_id
"""


class _Readings:
    """Readings by (device, metric), oldest first: a series source for the domain."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)

    def get(self, device: str, metric: str, /) -> Sequence[tuple[datetime, float]]:
        return self.series.get((device, metric), [])


def _bucket(span: timedelta, buckets: int, largest: timedelta) -> timedelta:
    return max(MIN_BUCKET, min(largest, span / buckets))


def _fence(raw: Any) -> Polygon | None:
    try:
        fence = tuple((float(p[0]), float(p[1])) for p in raw) if raw else ()
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return fence if len(fence) >= 3 else None


def _lots(conn: psycopg.Connection, shipment: Shipment) -> dict[str, tuple[Lot, str]]:
    """The seller's and the buyer's lot with their tenants; LendingError when one is unknown."""
    found = {}
    for (lid, fid, commodity, declared, unit_kg, reg, site, vehicle, fence, tenant,
         sensors) in conn.execute(_LOTS_SQL, ([shipment.seller_lot_id, shipment.buyer_lot_id],)):
        found[lid] = (Lot(lid, fid, commodity, float(declared), float(unit_kg), reg,
                          tuple(sensors), site, vehicle, _fence(fence)), tenant)
    for lot_id in (shipment.seller_lot_id, shipment.buyer_lot_id):
        if lot_id not in found:
            raise LendingError(f"no lot {lot_id!r}")
    return found


def _track(conn: psycopg.Connection, devices: Sequence[str], start: datetime,
           end: datetime) -> tuple[TrackPoint, ...]:
    if not devices:
        return ()
    rows = conn.execute(_TRACK_SQL, {
        "devices": list(devices), "start": start, "end": end, "origin": ORIGIN,
        "bucket": _bucket(end - start, TRACK_BUCKETS, MAX_TRACK_BUCKET)}).fetchall()
    points = [TrackPoint(t, float(lat), float(lon), None if speed is None else float(speed))
              for t, lat, lon, speed in rows]
    points.sort(key=lambda p: p.time)
    return tuple(points)


def _quantity(conn: psycopg.Connection, lot: Lot, start: datetime, end: datetime,
              now: datetime) -> tuple[tuple[datetime, float], ...]:
    """The lot's measured quantity in units over the window, as the lending engine measures it:
    the load-cell channel, or the RFID count where there is no usable load cell."""
    if not lot.sensors:
        return ()
    source = _Readings()
    for device, metric, time, value in conn.execute(_QUANTITY_SQL, {
            "devices": list(lot.sensors), "metrics": list(QUANTITY_METRICS), "start": start,
            "end": end, "origin": ORIGIN,
            "bucket": _bucket(end - start, QUANTITY_BUCKETS, MAX_QUANTITY_BUCKET)}):
        source.series[(device, metric)].append((time, float(value)))
    channels = compute_channels(lot, observe(lot, source, {}, now, timedelta(0)))
    chosen = (channels.weights if channels.weights.size and not channels.load_cell_fault
              else channels.counts)
    return tuple((datetime.fromtimestamp(float(t), UTC), float(v))
                 for t, v in zip(chosen.t, chosen.v, strict=True))


def _releases(conn: psycopg.Connection, lot_id: str, start: datetime,
              end: datetime) -> tuple[ReleaseOrder, ...]:
    return tuple(ReleaseOrder(r[0], r[1], float(r[2]), ReleaseStatus.EXECUTED, r[3], r[4], r[5])
                 for r in conn.execute(_RELEASES_SQL, (lot_id, start, end)).fetchall())


def gather_delivery_facts(conn: psycopg.Connection, shipment: Shipment, now: datetime, *,
                          before: timedelta = BEFORE,
                          after: timedelta = timedelta(hours=48) + SETTLE) -> DeliveryFacts:
    """What the store knows about ``shipment`` from ``shipped_at − before`` to the earlier of
    ``now`` and ``shipped_at + after`` (see the module). ``LendingError`` for an unknown lot.

    The caller scopes access: the shipment's lots must be ones its caller may see."""
    start = shipment.shipped_at - before
    end = max(start, min(now, shipment.shipped_at + after))
    with conn.transaction():
        lots = _lots(conn, shipment)
        seller, seller_tenant = lots[shipment.seller_lot_id]
        buyer, buyer_tenant = lots[shipment.buyer_lot_id]
        trackers = [r[0] for r in conn.execute(_TRACKERS_SQL, {
            "vehicle": shipment.vehicle, "tenants": sorted({seller_tenant, buyer_tenant})})]
        return DeliveryFacts(
            window_start=start, window_end=end,
            track=_track(conn, trackers, start, end),
            seller_geofence=seller.geofence, buyer_geofence=buyer.geofence,
            releases=_releases(conn, seller.id, start, end),
            seller_quantity=_quantity(conn, seller, start, end, now),
            buyer_quantity=_quantity(conn, buyer, start, end, now),
            devices=tuple(trackers),
        )


def assess_delivery(conn: psycopg.Connection, shipment: Shipment, now: datetime, *,
                    tolerance: float = 0.05, stop_minutes: float = 5.0,
                    deadline_hours: float = 48.0) -> DeliveryVerdict:
    """:func:`gather_delivery_facts`, then :func:`lending.domain.delivery.judge_delivery`:
    ``verified`` (the sensors prove the delivery), ``pending`` (not yet: an officer decides) or
    ``contradicted`` (the sensors show the opposite: a possible fictitious trade)."""
    facts = gather_delivery_facts(conn, shipment, now,
                                  after=timedelta(hours=deadline_hours) + SETTLE)
    return judge_delivery(shipment, facts, now, tolerance=tolerance, stop_minutes=stop_minutes,
                          deadline_hours=deadline_hours,
                          settle_hours=SETTLE.total_seconds() / 3600.0)
