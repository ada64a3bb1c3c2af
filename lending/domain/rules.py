"""Alert rules: each looks at one lot or facility and returns findings (see :mod:`alerts`).

Every rule returns a finding on every evaluation — RAISE, HOLD or CLEAR — so that alerts clear
when their condition goes away; the evidence names the readings, prices and events behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from lending.domain.alerts import Alert, AlertType, Finding, Severity, Signal, alert_key
from lending.domain.detectors import cusum_drop, point_in_polygon, sales_collapse
from lending.domain.limits import LimitSnapshot
from lending.domain.model import Commodity, Facility, Lot, ReleaseOrder, ReleaseStatus
from lending.domain.quantity import LotObservation, TrustPolicy, Verified


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """Thresholds of the alert rules (product parameters)."""

    cusum_baseline_n: int = 10
    cusum_k: float = 0.5
    cusum_h: float = 5.0
    weight_noise_kg: float = 2.0  # load-cell noise: the CUSUM's smallest sigma
    weight_noise_share: float = 0.001  # ... or this share of the declared weight, if larger
    min_drop_share: float = 0.02  # smaller drops (share of declared) are not an outbound
    min_drop_units: float = 1.0
    release_match_window: timedelta = timedelta(hours=2)
    utc_offset_hours: float = 8.0  # the sites' local time, for business hours
    temp_margin_c: float = 0.5  # a condition alert clears this far inside the range
    humidity_margin_pct: float = 2.0
    sales_raise_z: float = 3.5
    sales_clear_z: float = 2.0
    sales_min_points: int = 8
    floor_hysteresis: float = 0.02
    evidence_samples: int = 12


def _iso(t: datetime) -> str:
    return t.isoformat()


def _finding(kind: AlertType, lot: Lot, signal: Signal, **kw: Any) -> Finding:
    return Finding(kind, lot.facility_id, lot.id, signal, **kw)


def _executed_releases(lot: Lot, releases: Sequence[ReleaseOrder], since: datetime) -> list[ReleaseOrder]:
    return [r for r in releases if r.lot_id == lot.id and r.status is ReleaseStatus.EXECUTED
            and r.executed_at is not None and r.executed_at >= since]


def _samples(times: Sequence[datetime], values: Sequence[float], around: int, n: int) -> list[list[Any]]:
    lo = max(0, around - n // 2)
    return [[_iso(t), v] for t, v in zip(times[lo:lo + n], values[lo:lo + n], strict=False)]


def _drop(lot: Lot, times: Sequence[datetime], values: Sequence[float], *, unit: float,
          min_sigma: float, policy: RulePolicy) -> dict[str, Any] | None:
    """The evidence of a CUSUM-detected drop in a series (in units of goods), or None."""
    result = cusum_drop(np.asarray(values, dtype=float), baseline_n=policy.cusum_baseline_n,
                        k=policy.cusum_k, h=policy.cusum_h, min_sigma=min_sigma)
    if not result.alarm or result.index is None:
        return None
    units = result.drop / unit
    if units < max(policy.min_drop_units, policy.min_drop_share * lot.declared_quantity):
        return None
    return {
        "baseline": result.baseline, "level": result.level, "drop": result.drop,
        "drop_units": units, "onset": _iso(times[result.index]), "cusum": result.statistic,
        "samples": _samples(times, values, result.index, policy.evidence_samples),
    }


def _out_of_hours(lot: Lot, times: Sequence[datetime], policy: RulePolicy) -> list[datetime]:
    offset = timedelta(hours=policy.utc_offset_hours)
    late = []
    for t in times:
        local = t + offset
        if not lot.open_at(local.hour + local.minute / 60):
            late.append(t)
    return late


def outbound_finding(lot: Lot, obs: LotObservation, releases: Sequence[ReleaseOrder],
                     policy: RulePolicy) -> Finding:
    """Goods left the lot (a weight or count drop, or a door open out of hours) that no executed
    release explains."""
    declared_kg = lot.declared_quantity * lot.unit_weight_kg
    weight_sigma = max(policy.weight_noise_kg, policy.weight_noise_share * declared_kg)
    drop = None
    if obs.weight_kg:
        drop = _drop(lot, obs.weight_times, obs.weight_kg, unit=lot.unit_weight_kg,
                     min_sigma=weight_sigma, policy=policy)
        if drop:
            drop["metric"] = "weight_kg"
    elif obs.rfid_count:  # a count drop is an outbound only where no load cell weighs the lot
        drop = _drop(lot, obs.rfid_times, obs.rfid_count, unit=1.0, min_sigma=0.5, policy=policy)
        if drop:
            drop["metric"] = "rfid_count"
    since = obs.now - policy.release_match_window
    late_doors = _out_of_hours(lot, obs.door_open_at, policy)
    evidence: dict[str, Any] = {}
    severity = Severity.WARNING
    if drop is not None:
        onset = datetime.fromisoformat(drop["onset"])
        released = _executed_releases(lot, releases, onset - policy.release_match_window)
        explained = sum(r.quantity for r in released)
        unexplained = drop["drop_units"] - explained
        tolerance = max(policy.min_drop_units, policy.min_drop_share * lot.declared_quantity)
        drop["releases"] = [{"id": r.id, "quantity": r.quantity,
                             "executed_at": _iso(r.executed_at)} for r in released if r.executed_at]
        drop["unexplained_units"] = unexplained
        if unexplained > tolerance:
            evidence["drop"] = drop
            severity = Severity.CRITICAL
    if late_doors and not _executed_releases(lot, releases, since):
        evidence["door_open_out_of_hours"] = [_iso(t) for t in late_doors[-policy.evidence_samples:]]
        evidence["business_hours"] = list(lot.business_hours)
    if not evidence:
        return _finding(AlertType.UNAUTHORISED_OUTBOUND, lot, Signal.CLEAR, auto_resolve=False)
    if "drop" in evidence:
        d = evidence["drop"]
        message = (f"{d['unexplained_units']:,.1f} units left lot {lot.id} without a release "
                   f"({d['metric']} {d['baseline']:,.1f} → {d['level']:,.1f})")
    else:
        message = f"door of lot {lot.id} opened out of hours with no executed release"
    magnitude = evidence["drop"]["unexplained_units"] if "drop" in evidence else None
    return _finding(AlertType.UNAUTHORISED_OUTBOUND, lot, Signal.RAISE, severity=severity,
                    message=message, evidence=evidence, auto_resolve=False, magnitude=magnitude)


def sensor_findings(lot: Lot, obs: LotObservation, verified: Verified,
                    trust: TrustPolicy) -> list[Finding]:
    """Tamper, offline, stale and flat-lined sensors of a lot."""
    bound = set(lot.sensors)
    tampered = sorted(bound & obs.tampered)
    offline = sorted(bound & obs.offline)
    out = [
        _finding(AlertType.SENSOR_TAMPER, lot, Signal.RAISE if tampered else Signal.CLEAR,
                 severity=Severity.CRITICAL, message=f"tamper switch set on {', '.join(tampered)}",
                 evidence={"devices": tampered}),
        _finding(AlertType.SENSOR_OFFLINE, lot, Signal.RAISE if offline else Signal.CLEAR,
                 message=f"sensor offline: {', '.join(offline)}", evidence={"devices": offline}),
    ]
    stale = verified.stale_s is not None and verified.stale_s > trust.stale_after.total_seconds()
    last_seen = {d: _iso(t) for d, t in sorted(obs.last_seen.items()) if d in bound}
    out.append(_finding(AlertType.SENSOR_STALE, lot, Signal.RAISE if stale else Signal.CLEAR,
                        message=f"no reading from lot {lot.id} for {verified.stale_s or 0:,.0f} s",
                        evidence={"last_seen": last_seen, "stale_after_s":
                                  trust.stale_after.total_seconds()}))
    flat = list(obs.weight_kg[-trust.flatline_points:])
    out.append(_finding(
        AlertType.SENSOR_FLATLINE, lot, Signal.RAISE if verified.flatlined else Signal.CLEAR,
        message=f"load cell of lot {lot.id} flat-lined at {flat[-1] if flat else 0:,.2f} kg",
        evidence={"weight_kg": flat, "points": len(flat)}))
    return out


def mismatch_finding(lot: Lot, verified: Verified, trust: TrustPolicy) -> Finding:
    """Weight and RFID count disagree beyond tolerance: possibly swapped goods."""
    m = verified.mismatch
    if m is None or m < trust.mismatch_clear:
        signal = Signal.CLEAR
    elif m > trust.mismatch_tolerance:
        signal = Signal.RAISE
    else:
        signal = Signal.HOLD
    return _finding(
        AlertType.QUANTITY_MISMATCH, lot, signal,
        message=(f"lot {lot.id}: weight says {verified.by_weight or 0:,.1f} units, RFID counts "
                 f"{verified.by_count or 0:,.1f} (possible swap)"),
        evidence={"by_weight_units": verified.by_weight, "by_count": verified.by_count,
                  "mismatch": m, "tolerance": trust.mismatch_tolerance})


def _range_signal(value: float | None, bounds: tuple[float, float] | None,
                  margin: float) -> Signal:
    if value is None or bounds is None:
        return Signal.CLEAR
    low, high = bounds
    if value < low or value > high:
        return Signal.RAISE
    if low + margin <= value <= high - margin:
        return Signal.CLEAR
    return Signal.HOLD


def condition_finding(lot: Lot, commodity: Commodity, obs: LotObservation,
                      policy: RulePolicy) -> Finding:
    """Temperature or humidity outside the commodity's specification."""
    temp = _range_signal(obs.temp_c, commodity.temp_c, policy.temp_margin_c)
    hum = _range_signal(obs.humidity_pct, commodity.humidity_pct, policy.humidity_margin_pct)
    if Signal.RAISE in (temp, hum):
        signal = Signal.RAISE
    elif temp is Signal.CLEAR and hum is Signal.CLEAR:
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD
    return _finding(
        AlertType.CONDITION_OUT_OF_SPEC, lot, signal,
        severity=Severity.WARNING,
        message=(f"lot {lot.id} ({commodity.name}) out of spec: temp {obs.temp_c} °C "
                 f"(allowed {commodity.temp_c}), humidity {obs.humidity_pct} % "
                 f"(allowed {commodity.humidity_pct})"),
        evidence={"temp_c": obs.temp_c, "temp_range": commodity.temp_c,
                  "humidity_pct": obs.humidity_pct, "humidity_range": commodity.humidity_pct})


def geofence_finding(lot: Lot, obs: LotObservation) -> Finding:
    """The lot (or the vehicle carrying it) is outside its geofence."""
    if lot.geofence is None or obs.position is None:
        return _finding(AlertType.GEOFENCE_EXIT, lot, Signal.CLEAR)
    lat, lon = obs.position
    inside = point_in_polygon(lat, lon, lot.geofence)
    return _finding(
        AlertType.GEOFENCE_EXIT, lot, Signal.CLEAR if inside else Signal.RAISE,
        severity=Severity.CRITICAL,
        message=f"lot {lot.id} left its geofence at ({lat:.5f}, {lon:.5f})",
        evidence={"position": [lat, lon], "at": _iso(obs.position_at) if obs.position_at else None,
                  "geofence": [list(p) for p in lot.geofence], "vehicle": lot.vehicle})


def lot_findings(lot: Lot, commodity: Commodity, obs: LotObservation, verified: Verified,
                 releases: Sequence[ReleaseOrder], policy: RulePolicy,
                 trust: TrustPolicy) -> list[Finding]:
    return [
        outbound_finding(lot, obs, releases, policy),
        *sensor_findings(lot, obs, verified, trust),
        mismatch_finding(lot, verified, trust),
        condition_finding(lot, commodity, obs, policy),
        geofence_finding(lot, obs),
    ]


def _ltv_text(ltv: float) -> str:
    return "∞" if math.isinf(ltv) else f"{ltv:.1%}"


def _ltv_evidence(s: LimitSnapshot) -> dict[str, Any]:
    top_up = max(0.0, s.outstanding / s.warning_ltv - s.collateral_value) if s.warning_ltv > 0 else 0.0
    return {"ltv": None if math.isinf(s.ltv) else s.ltv, "outstanding": s.outstanding,
            "collateral_value": s.collateral_value, "warning_ltv": s.warning_ltv,
            "liquidation_ltv": s.liquidation_ltv, "top_up_needed": top_up,
            "prices": {lot.commodity: [lot.price, lot.price_time] for lot in s.lots},
            "lots": {lot.lot_id: {"pledged": lot.pledged, "value": lot.value, "trust": lot.trust}
                     for lot in s.lots}}


def _unless_waiting(signal: Signal, waiting: bool) -> Signal:
    return Signal.HOLD if waiting else signal


def facility_findings(facility: Facility, snapshot: LimitSnapshot, latest: Mapping[str, Alert],
                      sales_velocity: Sequence[float], now: datetime,
                      policy: RulePolicy, awaiting_first_readings: bool = False) -> list[Finding]:
    """LTV lines (with the cure period), value floor and sales collapse of one facility.

    While a lot awaits its sensors' first readings the collateral is unknown rather than zero:
    the value rules hold (neither raise nor clear) until every lot has reported.
    """
    terms, ltv = facility.terms, snapshot.ltv
    evidence = _ltv_evidence(snapshot)
    fid = facility.id
    if ltv >= terms.warning_ltv:
        warn = Signal.RAISE
    elif ltv < terms.warning_ltv - terms.ltv_hysteresis:
        warn = Signal.CLEAR
    else:
        warn = Signal.HOLD
    deadline = now + terms.cure_period
    warn = _unless_waiting(warn, awaiting_first_readings)
    findings = [Finding(
        AlertType.LTV_WARNING, fid, None, warn, Severity.WARNING,
        f"LTV {_ltv_text(ltv)} crossed the warning line {terms.warning_ltv:.0%}: top up "
        f"{evidence['top_up_needed']:,.2f} {facility.currency} of collateral or repay by "
        f"{deadline:%Y-%m-%d %H:%M} UTC", evidence, cure_deadline=deadline)]
    warning = latest.get(alert_key(AlertType.LTV_WARNING, fid, None))
    expired = warn is not Signal.CLEAR and (
        (warning is not None and warning.active and warning.cure_deadline is not None
         and warning.cure_deadline <= now)
        or (warn is Signal.RAISE and terms.cure_period <= timedelta(0)))  # no time to cure
    if ltv >= terms.liquidation_ltv or expired:
        liq = Signal.RAISE
    elif ltv < terms.liquidation_ltv - terms.ltv_hysteresis:
        liq = Signal.CLEAR
    else:
        liq = Signal.HOLD
    liq = _unless_waiting(liq, awaiting_first_readings)
    reason = "cure period expired" if expired and ltv < terms.liquidation_ltv else (
        f"crossed the liquidation line {terms.liquidation_ltv:.0%}")
    findings.append(Finding(
        AlertType.LTV_LIQUIDATION, fid, None, liq, Severity.CRITICAL,
        f"LTV {_ltv_text(ltv)}: {reason}",
        {**evidence, "cure_deadline": warning.cure_deadline.isoformat()
         if warning is not None and warning.cure_deadline else None}))
    floor = facility.value_floor
    if floor > 0 and snapshot.collateral_value < floor:
        fl = Signal.RAISE
    elif floor <= 0 or snapshot.collateral_value >= floor * (1 + policy.floor_hysteresis):
        fl = Signal.CLEAR
    else:
        fl = Signal.HOLD
    fl = _unless_waiting(fl, awaiting_first_readings)
    findings.append(Finding(
        AlertType.VALUE_BELOW_FLOOR, fid, None, fl, Severity.WARNING,
        f"collateral value {snapshot.collateral_value:,.2f} below the floor {floor:,.2f}",
        {"collateral_value": snapshot.collateral_value, "floor": floor}))
    findings.append(sales_finding(fid, sales_velocity, policy))
    return findings


def sales_finding(facility_id: str, velocity: Sequence[float], policy: RulePolicy) -> Finding:
    """Sales collapse: the latest sales velocity is a robust-z outlier below its history."""
    values = [float(v) for v in velocity]
    if len(values) < policy.sales_min_points:
        return Finding(AlertType.SALES_COLLAPSE, facility_id, None, Signal.CLEAR)
    collapsed, z = sales_collapse(np.asarray(values), threshold=policy.sales_raise_z)
    if collapsed:
        signal = Signal.RAISE
    elif z > -policy.sales_clear_z:
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD
    return Finding(AlertType.SALES_COLLAPSE, facility_id, None, signal, Severity.WARNING,
                   f"sales velocity collapsed (robust z {z:.1f})",
                   {"velocity": values[-policy.evidence_samples:], "robust_z": z,
                    "threshold": -policy.sales_raise_z})


def duplicate_pledge_finding(facility_id: str, lot_id: str, conflicts: Sequence[str]) -> Finding:
    """A pledge refused at write time because its goods are already pledged elsewhere."""
    return Finding(AlertType.DUPLICATE_PLEDGE, facility_id, lot_id, Signal.RAISE, Severity.CRITICAL,
                   f"lot {lot_id} refused: already pledged ({'; '.join(conflicts)})",
                   {"conflicts": list(conflicts)}, auto_resolve=False)
