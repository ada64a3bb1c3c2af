"""Sensors that lie: findings of their own, each lowering the lot's trust and saying why.

- **clock skew** (``clock_skew``, warning): a device's clock is off from the gateway's receive
  times. The offset is the lag (receive − device time) closest to zero among the device's
  arrivals of the last ``clock_skew_window``: a backlog only ever adds lag, so the freshest reading
  bounds the clock's error, and a burst of old readings is not mistaken for a slow clock. It needs
  ``clock_skew_min_readings`` arrivals spread over ``clock_skew_min_span`` of receive time. A
  device whose clock runs ahead is refused by the gateway (``ts_in_future``): those refusals are a
  skew too. The door rule judges a skewed device's openings by its corrected clock
  (:func:`site_door_times`), i.e. by when a live reading arrived.
- **spoofing** (``sensor_spoofing``, critical, an officer resolves it), for any of:
  a *replayed series* — the recent first differences of the weight or RFID count repeat a segment
  of the sensor's own earlier history (normalised cross-correlation ≥ ``replay_correlation``
  over ``replay_samples`` steps, at a lag of at least ``replay_min_lag``; a pattern that repeats
  within itself — periodic — or hardly moves proves nothing and is skipped);
  an *impossible track* — consecutive GPS fixes at least ``gps_min_jump_km`` apart whose implied
  speed exceeds ``speed_margin`` × the larger of ``max_truck_speed_kmh`` and the reported speed;
  a *silent tracker* — the latest position arrived more than ``position_stale_after`` before the
  device's latest message, while the device still reports;
  a *door with no movement* — a door opening around which the load cell, noisy before, reads
  exactly flat (a door opening with goods standing still is normal; a load cell that stops
  showing its own noise exactly then is not).
- **refused readings** (``sensor_fault``, warning): readings of a bound device the gateway
  refused as out of range or not finite within ``fault_window`` — a faulty sensor, not an
  offline one and not a theft.

Pure: values in, findings and trust factors out.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from lending.domain.alerts import AlertType, Finding, Severity, Signal
from lending.domain.levels import MEDIAN, quantile
from lending.domain.memo import LastCall
from lending.domain.model import Lot
from lending.domain.quantity import Fix, History, LotObservation, Verified

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


@dataclass(frozen=True, slots=True)
class IntegrityPolicy:
    """Thresholds and trust factors of the integrity findings (product parameters)."""

    clock_skew_tolerance: timedelta = timedelta(minutes=5)  # |offset| beyond this is a skew
    clock_skew_clear: timedelta = timedelta(minutes=2)  # ... below this the alert clears
    clock_skew_window: timedelta = timedelta(minutes=30)  # arrivals (by receive time) judged
    clock_skew_min_readings: int = 5
    clock_skew_min_span: timedelta = timedelta(minutes=2)  # receive-time span they must cover
    clock_skew_factor: float = 0.8
    skew_reasons: tuple[str, ...] = ("ts_in_future",)  # refusals that mean a clock runs ahead
    replay_samples: int = 30  # steps of the recent window compared with the sensor's history,
    replay_max_samples: int = 180  # ... extended up to this until it holds replay_min_moves moves
    replay_min_lag: timedelta = timedelta(minutes=10)
    replay_correlation: float = 0.98
    replay_min_moves: int = 20  # non-zero steps the recent window needs to be a fingerprint
    replay_max_difference: float = 0.2  # RMS of (match − recent) ÷ RMS of recent: nearly verbatim
    replay_step_clip: float = 5.0  # steps beyond this × the median non-zero step are clipped: a
    # replay repeats the noise, so two real moves of the same size do not look like one
    replay_memory: timedelta = timedelta(minutes=10)  # earlier windows checked too (a loop's seam)
    replay_factor: float = 0.1
    max_truck_speed_kmh: float = 150.0
    speed_margin: float = 2.0  # implied speed beyond margin × max(truck, reported) is impossible
    gps_min_jump_km: float = 5.0  # shorter hops are GPS jitter, however fast they look
    gps_min_interval: timedelta = timedelta(seconds=1)  # floor of the time between two fixes
    implausible_track_factor: float = 0.1
    position_stale_after: timedelta = timedelta(minutes=10)
    position_stale_factor: float = 0.5
    door_flat_span: timedelta = timedelta(minutes=2)  # each side of a door opening
    door_flat_min_samples: int = 6  # weights inside the span (and steps before it) needed
    door_noisy_share: float = 0.5  # share of earlier steps on which the load cell moved
    door_flat_factor: float = 0.1
    fault_window: timedelta = timedelta(minutes=15)
    fault_reasons: tuple[str, ...] = ("out_of_range", "non_finite_value")
    refused_factor: float = 0.5
    evidence_items: int = 10


@dataclass(frozen=True, slots=True)
class Integrity:
    """What the integrity checks found on one lot: findings and the trust factors they cost."""

    findings: tuple[Finding, ...]
    factors: dict[str, float] = field(default_factory=dict)
    offsets_s: dict[str, float] = field(default_factory=dict)  # device -> clock offset, if known

    def applied_to(self, verified: Verified) -> Verified:
        """``verified`` with these factors in its trust (and listed among its factors)."""
        if not self.factors:
            return verified
        trust = min(1.0, max(0.0, verified.trust * math.prod(self.factors.values())))
        return replace(verified, trust=trust, factors={**verified.factors, **self.factors})


def _iso(t: datetime) -> str:
    return t.isoformat()


# --- clock skew ------------------------------------------------------------------------------------

def clock_offset(arrivals: Sequence[tuple[datetime, datetime]], now: datetime,
                 policy: IntegrityPolicy) -> float | None:
    """Seconds a device's clock is behind (positive) or ahead (negative) of the receive times, from
    its arrivals (device time, receive time) of the last ``clock_skew_window``; None without
    enough evidence."""
    since = now - policy.clock_skew_window  # received within the window, and not after now
    recent = [(t, r) for t, r in arrivals if since <= r <= now]
    if len(recent) < max(1, policy.clock_skew_min_readings):
        return None
    received = [r for _, r in recent]
    if max(received) - min(received) < policy.clock_skew_min_span:
        return None
    lags = [(r - t).total_seconds() for t, r in recent]
    return min(lags, key=abs)


_OFFSETS: LastCall[dict[str, float]] = LastCall()  # asked twice in a row per lot


def clock_offsets(obs: LotObservation, policy: IntegrityPolicy) -> dict[str, float]:
    """Each device's clock offset (:func:`clock_offset`) where there is evidence; answered again
    without work when asked twice in a row (:mod:`lending.domain.memo`)."""
    known = _OFFSETS.get(obs, policy)
    if known is not None:
        return known
    return _OFFSETS.put(compute_clock_offsets(obs, policy), obs, policy)


def compute_clock_offsets(obs: LotObservation, policy: IntegrityPolicy) -> dict[str, float]:
    out = {}
    for device, arrivals in obs.arrivals.items():
        offset = clock_offset(arrivals, obs.now, policy)
        if offset is not None:
            out[device] = offset
    return out


def site_door_times(obs: LotObservation, policy: IntegrityPolicy) -> tuple[datetime, ...]:
    """When each door opening of ``obs.door_open_at`` happened: its device time, or, for a device
    whose clock is skewed beyond tolerance, its device time corrected by the device's offset (for
    a live reading, the time it arrived)."""
    if len(obs.door_open_devices) != len(obs.door_open_at):
        return obs.door_open_at
    offsets = clock_offsets(obs, policy)
    tolerance = policy.clock_skew_tolerance.total_seconds()
    out = []
    for t, device in zip(obs.door_open_at, obs.door_open_devices, strict=True):
        offset = offsets.get(device)
        out.append(t + timedelta(seconds=offset) if offset is not None and abs(offset) > tolerance
                   else t)
    return tuple(out)


def _recent_refusals(lot: Lot, obs: LotObservation, reasons: Sequence[str],
                     policy: IntegrityPolicy) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for device in lot.sensors:
        hits = [{"received_at": _iso(r.received), "reason": r.reason, "detail": r.detail}
                for r in obs.refused.get(device, ())
                if r.reason in reasons and timedelta(0) <= obs.now - r.received <= policy.fault_window]
        if hits:
            out[device] = hits[-policy.evidence_items:]
    return out


def skew_finding(lot: Lot, obs: LotObservation, offsets: Mapping[str, float],
                 policy: IntegrityPolicy) -> Finding:
    """A bound device's clock is off from receive time beyond tolerance (or runs so far ahead
    that the gateway refuses its messages)."""
    bound = set(lot.sensors)
    mine = {d: o for d, o in offsets.items() if d in bound}
    ahead = _recent_refusals(lot, obs, policy.skew_reasons, policy)
    tolerance = policy.clock_skew_tolerance.total_seconds()
    skewed = {d: o for d, o in mine.items() if abs(o) > tolerance}
    if skewed or ahead:
        signal = Signal.RAISE
    elif all(abs(o) < policy.clock_skew_clear.total_seconds() for o in mine.values()) and (
            mine or not any(obs.arrivals.get(d) for d in bound)):
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD  # within the band, or too few recent arrivals to judge
    parts = [f"{d} {o / 60:+,.1f} min" for d, o in sorted(skewed.items())]
    parts += [f"{d} ahead (refused: {', '.join(sorted({h['reason'] for h in hits}))})"
              for d, hits in sorted(ahead.items())]
    return Finding(
        AlertType.CLOCK_SKEW, lot.facility_id, lot.id, signal, Severity.WARNING,
        f"device clock of lot {lot.id} is off from receive time: {'; '.join(parts)}",
        {"offsets_s": dict(sorted(mine.items())), "tolerance_s": tolerance,
         "refused": ahead, "note": "positive: the device clock is behind"})


# --- replayed series --------------------------------------------------------------------------------

def _standardised(x: NDArray[np.float64]) -> NDArray[np.float64] | None:
    std = float(np.std(x))
    if not math.isfinite(std) or std <= 0:
        return None
    return (x - float(np.mean(x))) / std


def _ncc(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    za, zb = _standardised(a), _standardised(b)
    if za is None or zb is None:
        return 0.0
    value = float(np.mean(za * zb))
    return value if math.isfinite(value) else 0.0


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _window_match(steps: NDArray[np.float64], t: NDArray[np.float64], r: int, m: int,
                  windows: NDArray[np.float64], std: NDArray[np.float64],
                  policy: IntegrityPolicy) -> dict[str, Any] | None:
    """Whether the steps ``r .. r+m-1`` (ending at ``t[r + m]``) repeat an earlier window of
    ``m`` steps that ends before they start and at least ``replay_min_lag`` before they end."""
    recent = steps[r:r + m]
    rz = _standardised(recent)
    if rz is None or int(np.count_nonzero(recent)) < policy.replay_min_moves:
        return None
    lagged = int(np.searchsorted(t, t[r + m] - policy.replay_min_lag.total_seconds(),
                                 side="right")) - 1 - m
    last = min(r - m, lagged)  # candidate j ends at t[j + m]
    if last < 0:
        return None
    sd = std[:last + 1]
    valid = (sd > 0) & np.isfinite(sd)
    # rz has zero mean, so centring the candidates changes nothing: Σ w·rz / (m · σ_w)
    ncc = (windows[:last + 1] @ rz) / (m * np.where(valid, sd, 1.0))
    ncc = np.where(valid & np.isfinite(ncc), ncc, -1.0)
    best = int(np.argmax(ncc))
    if float(ncc[best]) < policy.replay_correlation:
        return None
    norm = float(np.sqrt(np.mean(recent * recent)))
    difference = float(np.sqrt(np.mean((windows[best] - recent) ** 2))) / norm
    if not difference <= policy.replay_max_difference:
        return None
    for shift in range(1, m // 2 + 1):  # periodic within itself: not a fingerprint
        if _ncc(recent[:-shift], recent[shift:]) >= policy.replay_correlation:
            return None
    return {"correlation": round(float(ncc[best]), 4), "difference": round(difference, 4),
            "lag_s": float(t[r + m] - t[best + m]), "samples": m,
            "recent": [_when(t[r]), _when(t[r + m])],
            "matches": [_when(t[best]), _when(t[best + m])]}


def replayed_steps(times_s: ArrayLike, values: ArrayLike,
                   policy: IntegrityPolicy) -> dict[str, Any] | None:
    """Evidence that the recent steps of a series (epoch seconds and values, oldest first) repeat
    an earlier segment of it — correlated at ≥ ``replay_correlation`` and nearly as large
    (relative RMS difference ≤ ``replay_max_difference``) — or None. The latest window is
    checked, then the ones before it back to ``replay_memory``, so a looped recording's seam
    (one odd step) does not hide the replay around it."""
    with np.errstate(all="ignore"):
        t = np.asarray(times_s, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if t.size != v.size:
            return None
        keep = np.isfinite(v) & np.isfinite(t)
        if not keep.all():  # the gateway refuses non-finite values; a hostile caller may not
            t, v = t[keep], v[keep]
        steps = np.diff(v)  # step i ends at t[i + 1]
        moving = np.abs(steps[steps != 0])
        if moving.size:  # real goods movements are large steps: match on the noise between them
            clip = policy.replay_step_clip * quantile(moving, MEDIAN)
            steps = np.clip(steps, -clip, clip)
        # the window: replay_samples steps, or as many as hold replay_min_moves moves
        moves = np.flatnonzero(steps[::-1][:policy.replay_max_samples])
        if moves.size < max(1, policy.replay_min_moves):
            return None
        m = max(policy.replay_samples, int(moves[max(1, policy.replay_min_moves) - 1]) + 1, 2)
        if steps.size < 2 * m:
            return None
        windows = sliding_window_view(steps, m)  # window j: steps j .. j+m-1, ends at t[j + m]
        std = windows.std(axis=1)
        r = steps.size - m
        while r >= m and t[-1] - t[r + m] <= policy.replay_memory.total_seconds():
            found = _window_match(steps, t, r, m, windows, std, policy)
            if found is not None:
                return found
            r -= m
    return None


def replayed(times: Sequence[datetime], values: Sequence[float], policy: IntegrityPolicy,
             history: History | None = None) -> dict[str, Any] | None:
    """:func:`replayed_steps` of a series, on its longer ``history`` when there is one that
    reaches as far as the series (the recent window is the same readings)."""
    if history is not None and history.times_s.size >= len(times) and len(times) > 0 and (
            history.times_s[-1] >= times[-1].timestamp()):
        return replayed_steps(history.times_s, history.values, policy)
    if len(times) != len(values):
        return None
    return replayed_steps([t.timestamp() for t in times], values, policy)


# --- GPS ------------------------------------------------------------------------------------------

def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2
    h += math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(max(0.0, h))))


def _valid_fix(f: Fix) -> bool:
    return (math.isfinite(f.lat) and math.isfinite(f.lon) and -90 <= f.lat <= 90
            and -180 <= f.lon <= 180)


def _speed(f: Fix) -> float:
    s = f.speed_kmh
    return s if s is not None and math.isfinite(s) and s > 0 else 0.0


def impossible_jumps(track: Sequence[Fix], policy: IntegrityPolicy) -> list[dict[str, Any]]:
    """Consecutive fixes (by device time) too far apart for a truck: far faster than both the
    fastest truck and the speed the tracker itself reported."""
    fixes = sorted((f for f in track if _valid_fix(f)), key=lambda f: f.time)
    floor_h = policy.gps_min_interval.total_seconds() / 3600.0
    out = []
    for prev, cur in itertools.pairwise(fixes):
        km = haversine_km((prev.lat, prev.lon), (cur.lat, cur.lon))
        if km < policy.gps_min_jump_km:
            continue
        hours = max((cur.time - prev.time).total_seconds() / 3600.0, floor_h)
        implied = km / hours if hours > 0 else math.inf
        limit = policy.speed_margin * max(policy.max_truck_speed_kmh, _speed(prev), _speed(cur))
        if implied > limit:
            out.append({"from": [prev.lat, prev.lon], "to": [cur.lat, cur.lon],
                        "at": _iso(cur.time), "km": round(km, 3),
                        "seconds": (cur.time - prev.time).total_seconds(),
                        "implied_kmh": round(implied, 1), "reported_kmh": cur.speed_kmh,
                        "limit_kmh": limit})
    return out


def silent_trackers(lot: Lot, obs: LotObservation, policy: IntegrityPolicy) -> dict[str, Any]:
    """Bound devices whose position stopped arriving while their other messages keep coming."""
    out = {}
    for device, fix_at in sorted(obs.position_received.items()):
        seen = obs.last_seen.get(device)
        if device not in lot.sensors or seen is None:
            continue
        talking = obs.now - seen <= policy.position_stale_after
        if talking and seen - fix_at > policy.position_stale_after:
            out[device] = {"position_received_at": _iso(fix_at), "last_seen": _iso(seen),
                           "silent_s": (seen - fix_at).total_seconds()}
    return out


# --- door with no movement ------------------------------------------------------------------------

def doors_without_movement(obs: LotObservation, policy: IntegrityPolicy) -> list[dict[str, Any]]:
    """Door openings around which a load cell that was noisy before reads exactly flat."""
    times = obs.weight_times
    if not obs.door_open_at or len(times) != len(obs.weight_kg):
        return []
    weights = np.asarray(obs.weight_kg, dtype=np.float64)
    span, n = policy.door_flat_span, policy.door_flat_min_samples
    out = []
    with np.errstate(all="ignore"):
        for door in obs.door_open_at:
            lo, hi = bisect_left(times, door - span), bisect_right(times, door + span)
            around = weights[lo:hi]
            if around.size < n or not np.all(np.isfinite(around)) or np.ptp(around) != 0:
                continue
            before = weights[:lo]
            steps = np.diff(before[np.isfinite(before)])
            if steps.size < n or np.count_nonzero(steps) < policy.door_noisy_share * steps.size:
                continue
            out.append({"door_open_at": _iso(door), "flat_kg": float(around[0]),
                        "flat_samples": int(around.size),
                        "moving_share_before": round(float(np.count_nonzero(steps) / steps.size), 3)})
    return out


# --- the lot ----------------------------------------------------------------------------------------

def spoofing_finding(lot: Lot, obs: LotObservation, policy: IntegrityPolicy
                     ) -> tuple[Finding, dict[str, float]]:
    """Replayed series, an impossible track, a silent tracker or a door with no movement."""
    evidence: dict[str, Any] = {}
    factors: dict[str, float] = {}
    for name, times, values, history in (
            ("weight_kg", obs.weight_times, obs.weight_kg, obs.weight_history),
            ("rfid_count", obs.rfid_times, obs.rfid_count, obs.rfid_history)):
        found = replayed(times, values, policy, history)
        if found is not None:
            start, end = (datetime.fromisoformat(t) for t in found["recent"])
            doors = [_iso(t) for t in obs.door_open_at if start <= t <= end]
            if doors:
                found["door_open_at"] = doors
            evidence.setdefault("replayed", {})[name] = found
            factors["replayed_series"] = policy.replay_factor
    jumps = impossible_jumps(obs.track, policy)
    if jumps:
        evidence["impossible_track"] = jumps[-policy.evidence_items:]
        factors["implausible_track"] = policy.implausible_track_factor
    silent = silent_trackers(lot, obs, policy)
    if silent:
        evidence["position_silent"] = silent
        factors["position_stale"] = policy.position_stale_factor
    flat_doors = doors_without_movement(obs, policy)
    if flat_doors:
        evidence["door_without_movement"] = flat_doors[-policy.evidence_items:]
        factors["door_without_movement"] = policy.door_flat_factor
    if not evidence:
        return Finding(AlertType.SENSOR_SPOOFING, lot.facility_id, lot.id, Signal.CLEAR,
                       Severity.CRITICAL, auto_resolve=False), {}
    what = {"replayed": "a series replays its own history",
            "impossible_track": "the GPS track is physically impossible",
            "position_silent": "the tracker stopped sending positions while the device reports",
            "door_without_movement": "a door opened while the load cell froze"}
    message = f"lot {lot.id}: sensor data looks spoofed — " + "; ".join(
        what[k] for k in what if k in evidence)
    return Finding(AlertType.SENSOR_SPOOFING, lot.facility_id, lot.id, Signal.RAISE,
                   Severity.CRITICAL, message, evidence, auto_resolve=False), factors


def fault_finding(lot: Lot, obs: LotObservation, policy: IntegrityPolicy) -> Finding:
    """Readings of a bound device refused as out of range or not finite: a faulty sensor."""
    refused = _recent_refusals(lot, obs, policy.fault_reasons, policy)
    if not refused:
        return Finding(AlertType.SENSOR_FAULT, lot.facility_id, lot.id, Signal.CLEAR)
    count = sum(len(v) for v in refused.values())
    return Finding(
        AlertType.SENSOR_FAULT, lot.facility_id, lot.id, Signal.RAISE, Severity.WARNING,
        f"sensor fault on lot {lot.id}: {count} reading(s) refused as impossible by the gateway "
        f"({', '.join(sorted(refused))}) — a fault, not a theft",
        {"refused": refused, "window_s": policy.fault_window.total_seconds()})


def check_integrity(lot: Lot, obs: LotObservation, policy: IntegrityPolicy | None = None
                    ) -> Integrity:
    """Every integrity finding of one lot and the trust factors they cost."""
    policy = policy or IntegrityPolicy()
    offsets = clock_offsets(obs, policy)
    skew = skew_finding(lot, obs, offsets, policy)
    spoofing, factors = spoofing_finding(lot, obs, policy)
    fault = fault_finding(lot, obs, policy)
    if skew.signal is Signal.RAISE:
        factors["clock_skew"] = policy.clock_skew_factor
    if fault.signal is Signal.RAISE:
        factors["refused_readings"] = policy.refused_factor
    return Integrity((skew, spoofing, fault), factors, offsets)
