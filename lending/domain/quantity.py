"""Verified quantity of a lot and how far to trust it.

The sensors bound to a lot report a load-cell weight (→ units by the unit weight) and an RFID
count. The two — each its robust level over a window (:func:`channels`), not its latest sample —
are fused into one verified quantity; a trust factor in [0, 1] falls when the
readings are stale, a sensor is offline or tampered with, the weight is flat-lined, or the two
channels disagree. The lending limit counts ``min(verified, declared) × trust``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from lending.domain.detectors import is_flatline, point_in_polygon
from lending.domain.levels import (
    HIGHER,
    Series,
    level_at,
    paired_differences,
    quantile,
    series,
    window_start,
)
from lending.domain.memo import LastCall
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
    # ... below which a mismatch alert clears: the band (2.5 points) is wider than what an RFID
    # reader misses (1–2 % of tags), and the mismatch is a median of paired differences anyway
    mismatch_clear: float = 0.025
    # Robust levels (lending.domain.levels), so one noisy sample or a missed tag moves nothing:
    weight_level_window: timedelta = timedelta(minutes=10)  # load cell: median over this window
    level_min_samples: int = 3  # ... of at least this many samples
    rfid_level_reads: int = 10  # RFID count: a high quantile of the last this many reads ...
    rfid_level_quantile: float = 0.8  # ... this one (misses only undercount)
    # A load cell below this share of the expected weight while the RFID count still vouches for
    # the goods (at least rfid_vouch_share of declared) reads nonsense: a cut cable, not a theft.
    load_cell_floor_share: float = 0.05
    rfid_vouch_share: float = 0.9
    load_cell_fault_samples: int = 3  # the latest this many weights below the floor: a fault
    load_cell_fault_factor: float = 0.7  # trust when the RFID count alone verifies the lot
    no_sensor_trust: float = 0.0
    seal_only_factor: float = 0.9  # goods in transit verified by an intact seal, not weighed
    outside_geofence_factor: float = 0.0  # goods outside their pledged area are not collateral
    out_of_spec_factor: float = 0.5  # goods kept out of their condition spec may be spoiled
    # A physical count (lending.domain.inspection) and the sensors may differ by this share of
    # the declared quantity; beyond it the count wins and trust is multiplied by the factor until
    # the sensors agree with the count again (within inspection_clear).
    inspection_tolerance: float = 0.03
    inspection_clear: float = 0.025
    inspection_factor: float = 0.5
    inspection_sample_window: timedelta = timedelta(minutes=30)  # "what the sensors said then"
    inspection_max_future: timedelta = timedelta(minutes=5)  # a count dated later is refused
    tamper_memory: timedelta = timedelta(days=7)  # a tamper flag seen set this recently still raises


class Fix(NamedTuple):
    """One GPS fix of a tracker: device time, receive time, position, reported speed."""

    time: datetime
    received: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None


class History(NamedTuple):
    """A longer, compact record of one series for pattern checks (a replay of the sensor's own
    past): epoch seconds and values, oldest first."""

    times_s: NDArray[np.float64]
    values: NDArray[np.float64]


class Refusal(NamedTuple):
    """A message of a bound device the gateway refused (a dead letter): when, why, its detail."""

    received: datetime
    reason: str
    detail: str = ""


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
    # device -> the newest time its tamper flag was set in the cached series, even if cleared
    # since (a flag set and cleared inside a backlog still counts)
    tamper_seen_at: dict[str, datetime] = field(default_factory=dict)
    door_open_at: tuple[datetime, ...] = ()  # times a door was reported open (recent window)
    temp_c: float | None = None
    humidity_pct: float | None = None
    position: tuple[float, float] | None = None  # (lat, lon)
    position_at: datetime | None = None
    # When readings ARRIVED (the gateway's receive time), for rules that must not trust a device
    # clock; empty where the source does not know. Aligned with the series of the same name.
    weight_received: tuple[datetime, ...] = ()
    rfid_received: tuple[datetime, ...] = ()
    door_open_received: tuple[datetime, ...] = ()  # aligned with door_open_at
    door_open_devices: tuple[str, ...] = ()  # aligned with door_open_at
    arrivals: dict[str, tuple[tuple[datetime, datetime], ...]] = field(default_factory=dict)
    # ^ device -> its most recent (device time, receive time) pairs, in arrival order
    track: tuple[Fix, ...] = ()  # GPS fixes of the device giving ``position``, oldest first
    position_received: dict[str, datetime] = field(default_factory=dict)  # device -> latest fix
    refused: dict[str, tuple[Refusal, ...]] = field(default_factory=dict)  # device -> dead letters
    weight_history: History | None = field(default=None, compare=False)  # hours, for replays
    rfid_history: History | None = field(default=None, compare=False)

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
    load_cell_fault: bool = False  # the load cell reads nonsense: the RFID count alone verifies
    weight_implausible: int = 0  # weights in the level window below the load cell's floor


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


class Channels(NamedTuple):
    """A lot's two quantity channels, in units of goods, and their robust levels."""

    weights: Series  # load-cell weight ÷ unit weight (clamped at 0), implausible readings left out
    counts: Series  # RFID count (clamped at 0)
    by_weight: float | None  # median over the level window; None without a usable load cell
    by_count: float | None  # high quantile of the last reads
    mismatch: float | None  # |median of paired differences| ÷ declared, with both channels
    load_cell_fault: bool  # the latest weights are below the floor while the count vouches
    implausible: int  # weights in the level window below the floor while the count vouches


def count_level(count: Series, policy: TrustPolicy, end: int | None = None, start: int = 0) -> float:
    """The RFID count's level as of sample ``end`` (the last): a high quantile of the last reads."""
    last = count.size - 1 if end is None else end
    return level_at(count, last, window_s=0.0, min_samples=policy.rfid_level_reads,
                    q=policy.rfid_level_quantile, method=HIGHER, start=start)


def weight_level(weight: Series, policy: TrustPolicy, end: int | None = None, start: int = 0) -> float:
    """The load cell's level as of sample ``end`` (the last): the median over the level window."""
    last = weight.size - 1 if end is None else end
    return level_at(weight, last, window_s=policy.weight_level_window.total_seconds(),
                    min_samples=policy.level_min_samples, start=start)


_CHANNELS: LastCall[Channels] = LastCall()  # verification, then the goods ledger, ask in a row


def channels(lot: Lot, obs: LotObservation, policy: TrustPolicy | None = None) -> Channels:
    """:func:`compute_channels`, answered again without work when asked twice in a row with the
    same lot, observation and policy (:mod:`lending.domain.memo`)."""
    policy = policy or TrustPolicy()
    known = _CHANNELS.get(lot, obs, policy)
    if known is not None:
        return known
    return _CHANNELS.put(compute_channels(lot, obs, policy), lot, obs, policy)


def compute_channels(lot: Lot, obs: LotObservation, policy: TrustPolicy | None = None) -> Channels:
    """The lot's weight and count channels and their robust levels (see :mod:`levels`).

    A weight below ``load_cell_floor_share`` of the expected weight while the RFID count still
    vouches for the goods (its level at least ``rfid_vouch_share`` of declared) is a reading the
    load cell cannot mean: it is left out of the weight channel, and when the latest
    ``load_cell_fault_samples`` weights are all such readings the load cell is faulty and the count
    alone verifies the lot.
    """
    policy = policy or TrustPolicy()
    declared = lot.declared_quantity
    weight = series(obs.weight_times, obs.weight_kg).scaled(lot.unit_weight_kg, floor=0.0)
    count = series(obs.rfid_times, obs.rfid_count)
    count = count.scaled(1.0, floor=0.0)
    by_count = count_level(count, policy) if count.size else None
    fault, implausible = False, 0
    vouched = by_count is not None and by_count > 0 and by_count >= policy.rfid_vouch_share * declared
    floor = policy.load_cell_floor_share * declared
    if vouched and floor > 0 and weight.size:
        low = weight.v < floor
        recent = low[-max(1, policy.load_cell_fault_samples):]
        fault = bool(recent.size >= policy.load_cell_fault_samples and recent.all())
        lo = window_start(weight.t, weight.size - 1, policy.weight_level_window.total_seconds(),
                          policy.level_min_samples)
        implausible = int(low[lo:].sum())
        weight = weight.take(~low)
    by_weight = weight_level(weight, policy) if weight.size and not fault else None
    mismatch = None
    if by_weight is not None and by_count is not None:
        lo = window_start(weight.t, weight.size - 1, policy.weight_level_window.total_seconds(),
                          policy.level_min_samples)
        recent_weight = weight.take(np.arange(weight.size) >= lo)
        paired = paired_differences(recent_weight, count)
        gap = abs(quantile(paired, 0.5)) if paired.size else abs(by_weight - by_count)
        mismatch = gap / max(declared, 1.0)
    return Channels(weight, count, by_weight, by_count, mismatch, fault, implausible)


def verify(lot: Lot, obs: LotObservation, policy: TrustPolicy | None = None,
           commodity: Commodity | None = None) -> Verified:
    """Fuse the lot's weight and count into a verified quantity with a trust factor."""
    policy = policy or TrustPolicy()
    levels = channels(lot, obs, policy)  # robust levels, not the latest samples
    by_weight, by_count = levels.by_weight, levels.by_count
    factors: dict[str, float] = {}
    mismatch = None
    if by_weight is not None and by_count is not None:
        quantity = min(by_weight, by_count)  # the conservative channel
        mismatch = levels.mismatch
        if mismatch is not None and mismatch > policy.mismatch_tolerance:
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
    flatlined = not levels.load_cell_fault and is_flatline(  # a cut cable is a fault, not a freeze
        np.asarray(obs.weight_kg, dtype=float), min_points=policy.flatline_points)
    if levels.load_cell_fault:
        factors["load_cell_fault"] = policy.load_cell_fault_factor
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
                    flatlined, observed, levels.load_cell_fault, levels.implausible)
