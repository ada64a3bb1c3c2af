"""Verified quantity of a lot and how far to trust it.

The sensors bound to a lot report a load-cell weight (→ units by the unit weight) and an RFID
count. The two are fused into one verified quantity; a trust factor in [0, 1] falls when the
readings are stale, a sensor is offline or tampered with, the weight is flat-lined, or the two
channels disagree. The lending limit counts ``min(verified, declared) × trust``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from lending.domain.detectors import is_flatline, point_in_polygon
from lending.domain.model import Commodity, Lot


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """How fast trust falls; a product parameter like the ratios."""

    stale_after: timedelta = timedelta(minutes=5)  # no reading for this long: trust starts falling
    worthless_after: timedelta = timedelta(minutes=30)  # ... and reaches 0
    offline_factor: float = 0.5
    tamper_factor: float = 0.1
    flatline_factor: float = 0.2
    flatline_points: int = 20  # identical weights in a row that count as a flat line
    mismatch_tolerance: float = 0.05  # weight vs count disagreement (share of declared) tolerated
    mismatch_clear: float = 0.03  # ... below which a mismatch alert clears
    no_sensor_trust: float = 0.0
    seal_only_factor: float = 0.9  # goods in transit verified by an intact seal, not weighed
    outside_geofence_factor: float = 0.0  # goods outside their pledged area are not collateral
    out_of_spec_factor: float = 0.5  # goods kept out of their condition spec may be spoiled


@dataclass(frozen=True, slots=True)
class LotObservation:
    """What the lot's sensors said, as of ``now``. Series are oldest first."""

    now: datetime
    weight_times: tuple[datetime, ...] = ()
    weight_kg: tuple[float, ...] = ()
    rfid_times: tuple[datetime, ...] = ()
    rfid_count: tuple[float, ...] = ()
    last_seen: dict[str, datetime] = field(default_factory=dict)  # device -> last reading
    offline: frozenset[str] = frozenset()
    tampered: frozenset[str] = frozenset()  # devices whose latest tamper reading is set
    door_open_at: tuple[datetime, ...] = ()  # times a door was reported open (recent window)
    temp_c: float | None = None
    humidity_pct: float | None = None
    position: tuple[float, float] | None = None  # (lat, lon)
    position_at: datetime | None = None

    @property
    def latest_weight(self) -> float | None:
        return self.weight_kg[-1] if self.weight_kg else None

    @property
    def latest_count(self) -> float | None:
        return self.rfid_count[-1] if self.rfid_count else None


@dataclass(frozen=True, slots=True)
class Verified:
    """A lot's verified quantity, the trust in it, and every factor that went into it."""

    quantity: float  # fused verified units
    pledged: float  # min(quantity, declared): what the loan may count
    trust: float
    by_weight: float | None
    by_count: float | None
    mismatch: float | None  # |by_weight - by_count| / declared
    stale_s: float | None  # age of the newest reading
    factors: dict[str, float]  # why trust is below 1: name -> multiplier
    flatlined: bool
    observed: bool = True  # False while no bound sensor has reported (a lot just pledged)


def _staleness_factor(age: timedelta, policy: TrustPolicy) -> float:
    if age <= policy.stale_after:
        return 1.0
    span = (policy.worthless_after - policy.stale_after).total_seconds()
    if span <= 0:
        return 0.0
    return max(0.0, 1.0 - (age - policy.stale_after).total_seconds() / span)


def out_of_spec(commodity: Commodity | None, obs: LotObservation) -> bool:
    """The latest temperature or humidity is outside the commodity's allowed range."""
    if commodity is None:
        return False
    for value, bounds in ((obs.temp_c, commodity.temp_c), (obs.humidity_pct, commodity.humidity_pct)):
        if value is not None and bounds is not None and not bounds[0] <= value <= bounds[1]:
            return True
    return False


def outside_geofence(lot: Lot, obs: LotObservation) -> bool:
    if lot.geofence is None or obs.position is None:
        return False
    return not point_in_polygon(obs.position[0], obs.position[1], lot.geofence)


def verify(lot: Lot, obs: LotObservation, policy: TrustPolicy | None = None,
           commodity: Commodity | None = None) -> Verified:
    """Fuse the lot's weight and count into a verified quantity with a trust factor."""
    policy = policy or TrustPolicy()
    weight, count = obs.latest_weight, obs.latest_count
    by_weight = None if weight is None else max(0.0, weight) / lot.unit_weight_kg
    by_count = None if count is None else max(0.0, float(count))
    factors: dict[str, float] = {}
    mismatch = None
    if by_weight is not None and by_count is not None:
        quantity = min(by_weight, by_count)  # the conservative channel
        mismatch = abs(by_weight - by_count) / max(lot.declared_quantity, 1.0)
        if mismatch > policy.mismatch_tolerance:
            factors["weight_count_mismatch"] = max(0.0, 1.0 - mismatch)
    elif by_weight is not None or by_count is not None:
        quantity = by_weight if by_weight is not None else float(by_count or 0.0)
    bound = set(lot.sensors)
    seen = [t for d, t in obs.last_seen.items() if d in bound]
    if by_weight is None and by_count is None:
        if lot.vehicle is not None and seen:  # in transit: the seal vouches for the load
            quantity = lot.declared_quantity
            factors["seal_only"] = policy.seal_only_factor
        else:
            quantity = 0.0
            factors["no_readings"] = policy.no_sensor_trust
    stale_s = None
    if seen:
        age = obs.now - max(seen)
        stale_s = max(0.0, age.total_seconds())
        staleness = _staleness_factor(age, policy)
        if staleness < 1.0:
            factors["stale"] = staleness
    if bound & obs.offline:
        factors["offline"] = policy.offline_factor
    if bound & obs.tampered:
        factors["tamper"] = policy.tamper_factor
    flatlined = is_flatline(np.asarray(obs.weight_kg, dtype=float), min_points=policy.flatline_points)
    if flatlined:
        factors["flatline"] = policy.flatline_factor
    if outside_geofence(lot, obs):
        factors["outside_geofence"] = policy.outside_geofence_factor
    if out_of_spec(commodity, obs):
        factors["out_of_spec"] = policy.out_of_spec_factor
    trust = math.prod(factors.values()) if factors else 1.0
    trust = min(1.0, max(0.0, trust))
    pledged = min(quantity, lot.declared_quantity)
    # A door or climate sensor reporting first does not make the quantity known.
    observed = by_weight is not None or by_count is not None or "seal_only" in factors
    return Verified(quantity, pledged, trust, by_weight, by_count, mismatch, stale_s, factors,
                    flatlined, observed)
