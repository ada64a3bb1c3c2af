"""Alert rules: each looks at one lot or facility and returns findings (see :mod:`alerts`).

Every rule returns a finding on every evaluation — RAISE, HOLD or CLEAR — so that alerts clear
when their condition goes away; the evidence names the readings, prices and events behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from lending.domain.alerts import Alert, AlertType, Finding, Severity, Signal, alert_key
from lending.domain.detectors import (
    MAD_EPSILON,
    MAD_TO_SIGMA,
    point_in_polygon,
    sales_collapse,
)
from lending.domain.integrity import IntegrityPolicy, site_door_times
from lending.domain.ledger import account, load_cell_finding, quiet_finding
from lending.domain.limits import LimitSnapshot
from lending.domain.model import Commodity, Facility, Lot, ReleaseOrder, ReleaseStatus
from lending.domain.quantity import LotObservation, TrustPolicy, Verified
from lending.domain.sales import Sale, SalesDays, closed_days


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """Thresholds of the alert rules (product parameters)."""

    # The goods ledger (lending.domain.ledger): shortfall = expected − verified level, per lot.
    ledger_floor_share: float = 0.015  # the raise line: at least this share of the expected qty,
    ledger_noise_z: float = 5.0  # ... or the sensor's own noise × this, if larger,
    ledger_cap_share: float = 0.018  # ... but never above this share (below 2 %: a 2 % theft alarms)
    ledger_min_units: float = 1.0  # ... and never below this many units
    ledger_clear_ratio: float = 0.5  # clears below this share of the raise line
    ledger_dwell: timedelta = timedelta(minutes=10)  # standing: the level short this long
    ledger_dwell_points: int = 30  # ... judged at this many points of the dwell at most
    ledger_noise_window: timedelta = timedelta(hours=1)  # noise from this much recent history
    ledger_magnitude_window: timedelta = timedelta(minutes=1)  # the magnitude's level (≥ 3 samples)
    fast_tau: timedelta = timedelta(seconds=30)  # fast detector: shortfall beyond the line
    fast_h: float = 1.0  # ... × time, in line × fast_tau, alarms above this
    fast_min_samples: int = 3  # ... with at least this many samples in a row beyond the line
    fast_max_gap: timedelta = timedelta(seconds=60)  # a sample weighs at most this much time
    release_lead: timedelta = timedelta(minutes=30)  # goods may leave this long before booking
    release_match_window: timedelta = timedelta(hours=2)  # recent releases: named, doors excused
    utc_offset_hours: float = 8.0  # the sites' local time, for business hours
    temp_margin_c: float = 0.5  # a condition alert clears this far inside the range
    humidity_margin_pct: float = 2.0
    sales_raise_z: float = 3.5
    sales_clear_z: float = 2.0
    sales_min_points: int = 8
    floor_hysteresis: float = 0.02
    ltv_cure_margin: float = 0.01  # a top-up/repay brings LTV this far below warning − hysteresis
    overadvance_min_amount: float = 0.01  # drawn above the limit by more than this: overadvance
    overadvance_hysteresis: float = 0.02  # ... cleared once drawn ≤ limit × (1 − this)
    sales_history_days: int = 30  # closed days the sales-collapse rule looks back over
    sales_close_grace: timedelta = timedelta(hours=4)  # a day is judged this long after it ends
    sales_settle: timedelta = timedelta(minutes=10)  # past days' sales this recent: a load, hold
    sales_trading_day_share: float = 0.5  # a weekday with sales on fewer of its days is idle
    evidence_samples: int = 12
    integrity: IntegrityPolicy = field(default_factory=IntegrityPolicy)  # sensors that lie


def _iso(t: datetime) -> str:
    return t.isoformat()


def _finding(kind: AlertType, lot: Lot, signal: Signal, **kw: Any) -> Finding:
    return Finding(kind, lot.facility_id, lot.id, signal, **kw)


def _executed_releases(lot: Lot, releases: Sequence[ReleaseOrder], since: datetime) -> list[ReleaseOrder]:
    return [r for r in releases if r.lot_id == lot.id and r.status is ReleaseStatus.EXECUTED
            and r.executed_at is not None and r.executed_at >= since]


def _out_of_hours(lot: Lot, times: Sequence[datetime], policy: RulePolicy) -> list[datetime]:
    """The door openings out of business hours. ``times`` are when they happened
    (:func:`lending.domain.integrity.site_door_times`: a skewed device clock is corrected by its
    offset from receive time, so a clock hours behind does not hide a night-time opening)."""
    offset = timedelta(hours=policy.utc_offset_hours)
    late = []
    for t in times:
        local = t + offset
        if not lot.open_at(local.hour + local.minute / 60):
            late.append(t)
    return late


def outbound_finding(lot: Lot, obs: LotObservation, releases: Sequence[ReleaseOrder],
                     policy: RulePolicy, trust: TrustPolicy | None = None) -> Finding:
    """Goods missing from the lot's ledger (expected − verified level, see
    :mod:`lending.domain.ledger`: the load cell, or the RFID count where no working load cell
    weighs the lot), or a door open out of hours, that no executed release explains."""
    trust = trust or TrustPolicy()
    ledger = account(lot, obs, releases, policy, trust)
    since = obs.now - policy.release_match_window
    late_doors = _out_of_hours(lot, site_door_times(obs, policy.integrity), policy)  # skew-proof
    evidence: dict[str, Any] = {}
    severity = Severity.WARNING
    if ledger is not None and ledger.signal is Signal.RAISE:
        evidence["drop"] = ledger.evidence(policy, trust)
        severity = Severity.CRITICAL
    if late_doors and not _executed_releases(lot, releases, since):
        evidence["door_open_out_of_hours"] = [_iso(t) for t in late_doors[-policy.evidence_samples:]]
        evidence["business_hours"] = list(lot.business_hours)
    if not evidence:
        return quiet_finding(lot, ledger)  # HOLD in the band; CLEAR, or explained by a release
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
    seen = {d: t for d, t in obs.tamper_seen_at.items()  # set, perhaps cleared since (a backlog)
            if d in bound and obs.now - t <= trust.tamper_memory}
    tampered = sorted((bound & obs.tampered) | set(seen))
    offline = sorted(bound & obs.offline)
    out = [
        _finding(AlertType.SENSOR_TAMPER, lot, Signal.RAISE if tampered else Signal.CLEAR,
                 severity=Severity.CRITICAL, message=f"tamper switch set on {', '.join(tampered)}",
                 evidence={"devices": tampered, "set_now": sorted(bound & obs.tampered),
                           "seen_set_at": {d: _iso(t) for d, t in sorted(seen.items())}},
                 auto_resolve=False),
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
        return _finding(AlertType.GEOFENCE_EXIT, lot, Signal.CLEAR, auto_resolve=False)
    lat, lon = obs.position
    inside = point_in_polygon(lat, lon, lot.geofence)
    return _finding(
        AlertType.GEOFENCE_EXIT, lot, Signal.CLEAR if inside else Signal.RAISE,
        severity=Severity.CRITICAL, auto_resolve=False,  # back inside: cleared, an officer resolves
        message=f"lot {lot.id} left its geofence at ({lat:.5f}, {lon:.5f})",
        evidence={"position": [lat, lon], "at": _iso(obs.position_at) if obs.position_at else None,
                  "geofence": [list(p) for p in lot.geofence], "vehicle": lot.vehicle})


def lot_findings(lot: Lot, commodity: Commodity, obs: LotObservation, verified: Verified,
                 releases: Sequence[ReleaseOrder], policy: RulePolicy,
                 trust: TrustPolicy) -> list[Finding]:
    return [
        outbound_finding(lot, obs, releases, policy, trust),
        load_cell_finding(lot, verified, trust),
        *sensor_findings(lot, obs, verified, trust),
        mismatch_finding(lot, verified, trust),
        condition_finding(lot, commodity, obs, policy),
        geofence_finding(lot, obs),
    ]


def _ltv_text(ltv: float) -> str:
    return "∞" if math.isinf(ltv) else f"{ltv:.1%}"


def _ceil_cents(amount: float) -> float:
    """``amount`` rounded up to the cent, so that paying it never falls short by a rounding."""
    if not math.isfinite(amount):
        return amount
    return math.ceil(round(amount * 100.0, 6)) / 100.0


def _collateral_haircut(s: LimitSnapshot, default: float) -> float:
    """The lots' haircut as one figure, 1 − Σ value ÷ Σ market value (``default`` when no lot is
    priced): what goods added to the facility would be valued at."""
    priced = [lot for lot in s.lots if lot.price is not None]
    market = sum(lot.pledged * lot.units_per_quote * (lot.price or 0.0) for lot in priced)
    if not (math.isfinite(market) and market > 0):
        return default
    return min(1.0, max(0.0, 1.0 - sum(lot.value for lot in priced) / market))


def _cure(s: LimitSnapshot, facility: Facility, policy: RulePolicy,
          cut: float | None = None) -> dict[str, Any]:
    """What cures an LTV warning with margin: LTV brought to ``target_ltv`` = warning line −
    hysteresis − ``ltv_cure_margin``, either by adding goods (``top_up_needed``: their market
    value at the lots' haircut, trusted in full; ``top_up_value``: the same after the haircut) or
    by repaying cash (``repay_needed``). Amounts are rounded up to the cent; a top-up is None when
    no collateral can do it (a haircut of 100 %, or a target at or below zero)."""
    terms = facility.terms
    target = terms.warning_ltv - terms.ltv_hysteresis - policy.ltv_cure_margin
    if cut is None:
        cut = _collateral_haircut(s, terms.base_haircut)
    drawn, trusted = s.outstanding, s.trusted_collateral_value
    if target <= 0:
        return {"target_ltv": target, "haircut": cut, "top_up_value": None, "top_up_needed": None,
                "repay_needed": _ceil_cents(drawn)}
    value = max(0.0, drawn / target - trusted)
    market = value / (1.0 - cut) if cut < 1.0 else math.inf
    return {"target_ltv": target, "haircut": cut, "top_up_value": _ceil_cents(value),
            "top_up_needed": _ceil_cents(market) if math.isfinite(market) else None,
            "repay_needed": _ceil_cents(max(0.0, drawn - target * trusted))}


def _cure_text(evidence: Mapping[str, Any], currency: str) -> str:
    repay = f"repay {evidence['repay_needed']:,.2f} {currency}"
    top_up = evidence["top_up_needed"]
    if top_up is None:
        return repay
    return (f"top up {top_up:,.2f} {currency} of collateral (market value, at the lots' "
            f"{evidence['haircut']:.1%} haircut) or {repay}")


def _ltv_evidence(s: LimitSnapshot, facility: Facility, policy: RulePolicy,
                  cut: float | None = None) -> dict[str, Any]:
    return {"ltv": None if math.isinf(s.ltv) else s.ltv, "outstanding": s.outstanding,
            "collateral_value": s.collateral_value,
            "trusted_collateral_value": s.trusted_collateral_value, "warning_ltv": s.warning_ltv,
            "liquidation_ltv": s.liquidation_ltv, **_cure(s, facility, policy, cut),
            "prices": {lot.commodity: [lot.price, lot.price_time] for lot in s.lots},
            "lots": {lot.lot_id: {"pledged": lot.pledged, "value": lot.value, "trust": lot.trust}
                     for lot in s.lots}}


def overadvance_finding(facility: Facility, s: LimitSnapshot, policy: RulePolicy,
                        cut: float | None = None) -> Finding:
    """Drawn above the limit: the amount to repay (to ``limit × (1 − overadvance_hysteresis)``,
    so that paying it clears the alert), or the market value of goods to add where the borrowing
    base, not the line, binds."""
    drawn, limit = s.outstanding, s.limit
    target = limit * (1.0 - policy.overadvance_hysteresis)
    if drawn - limit > policy.overadvance_min_amount:
        signal = Signal.RAISE
    elif drawn <= target:
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD
    repay = _ceil_cents(max(0.0, drawn - target))
    needed_limit = drawn / (1.0 - policy.overadvance_hysteresis) if policy.overadvance_hysteresis < 1 \
        else math.inf
    if cut is None:  # the lots' haircut (facility_findings finds it once for its rules)
        cut = _collateral_haircut(s, facility.terms.base_haircut)
    per_market = (1.0 - cut) * facility.terms.advance_rate  # borrowing base per unit of market value
    top_up = None
    if needed_limit <= s.line and per_market > 0:
        top_up = _ceil_cents(max(0.0, needed_limit - s.borrowing_base) / per_market)
    cur = facility.currency
    message = (f"drawn {drawn:,.2f} {cur} exceeds the limit {limit:,.2f} by {drawn - limit:,.2f}: "
               f"repay {repay:,.2f} {cur}")
    if top_up is not None:
        message += f" or add {top_up:,.2f} {cur} of collateral (market value)"
    return Finding(
        AlertType.OVERADVANCE, facility.id, None, signal, Severity.CRITICAL, message,
        {"drawn": drawn, "limit": limit, "excess": drawn - limit, "repay_needed": repay,
         "target_drawn": target, "top_up_needed": top_up, "haircut": cut,
         "advance_rate": facility.terms.advance_rate, "line": s.line,
         "borrowing_base": s.borrowing_base, "binding": s.binding,
         "hysteresis": policy.overadvance_hysteresis}, magnitude=repay)


def _unless_waiting(signal: Signal, waiting: bool) -> Signal:
    return Signal.HOLD if waiting else signal


def facility_findings(facility: Facility, snapshot: LimitSnapshot, latest: Mapping[str, Alert],
                      sales_velocity: Sequence[float], now: datetime,
                      policy: RulePolicy, awaiting_first_readings: bool = False,
                      sales: Sequence[Sale] | None = None) -> list[Finding]:
    """LTV lines (with the cure period), overadvance, value floor and sales collapse of one
    facility. LTV and the floor measure trust-weighted collateral.

    While a lot awaits its sensors' first readings the collateral is unknown rather than zero:
    the value rules hold (neither raise nor clear) until every lot has reported.
    ``sales`` (dated sales, when given) are turned into closed-day totals here; otherwise
    ``sales_velocity`` is taken as closed-day totals already.
    """
    terms, ltv = facility.terms, snapshot.ltv
    cut = _collateral_haircut(snapshot, terms.base_haircut)
    evidence = _ltv_evidence(snapshot, facility, policy, cut)
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
        f"LTV {_ltv_text(ltv)} crossed the warning line {terms.warning_ltv:.0%}: "
        f"{_cure_text(evidence, facility.currency)} by {deadline:%Y-%m-%d %H:%M} UTC (LTV to "
        f"{evidence['target_ltv']:.0%})", evidence, cure_deadline=deadline,
        magnitude=evidence["top_up_needed"])]
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
    over = overadvance_finding(facility, snapshot, policy, cut)
    findings.append(replace(over, signal=_unless_waiting(over.signal, awaiting_first_readings)))
    floor, trusted = facility.value_floor, snapshot.trusted_collateral_value
    if floor > 0 and trusted < floor:
        fl = Signal.RAISE
    elif floor <= 0 or trusted >= floor * (1 + policy.floor_hysteresis):
        fl = Signal.CLEAR
    else:
        fl = Signal.HOLD
    fl = _unless_waiting(fl, awaiting_first_readings)
    findings.append(Finding(
        AlertType.VALUE_BELOW_FLOOR, fid, None, fl, Severity.WARNING,
        f"trust-weighted collateral value {trusted:,.2f} below the floor {floor:,.2f} (collateral "
        f"{snapshot.collateral_value:,.2f} before trust)",
        {"collateral_value": snapshot.collateral_value, "trusted_collateral_value": trusted,
         "floor": floor}))
    days = None if sales is None else closed_days(
        sales, now, days=policy.sales_history_days, utc_offset_hours=policy.utc_offset_hours,
        close_grace=policy.sales_close_grace, settle=policy.sales_settle,
        trading_share=policy.sales_trading_day_share)
    findings.append(sales_finding(
        fid, sales_velocity if days is None else days.totals, policy, days=days,
        open_alert=latest.get(alert_key(AlertType.SALES_COLLAPSE, fid, None))))
    return findings


def _anchored_z(alert: Alert | None, latest: float) -> float | None:
    """Robust z of ``latest`` against the median and scale an open collapse alert was raised
    with (None without them): a stop that lasts until it fills the history still holds."""
    if alert is None or not alert.active:
        return None
    median, scale = alert.evidence.get("median"), alert.evidence.get("scale")
    if not (isinstance(median, int | float) and isinstance(scale, int | float)
            and math.isfinite(median) and math.isfinite(scale) and scale > 0):
        return None
    return (latest - float(median)) / float(scale)


def sales_finding(facility_id: str, velocity: Sequence[float], policy: RulePolicy, *,
                  days: SalesDays | None = None, open_alert: Alert | None = None) -> Finding:
    """Sales collapse: the last closed day's sales are a robust-z outlier below the days before
    (``velocity``: closed-day totals, oldest first, a day without sales a 0; ``days``: where they
    came from). Holds while a history is loading; an open alert clears only once sales are back
    near the level it was raised against."""
    values = [float(v) for v in velocity if math.isfinite(float(v))]
    shown = values[-policy.evidence_samples:]
    day = None if days is None else days.last_closed_day.isoformat()
    idle = [] if days is None else list(days.idle_weekdays)
    if days is not None and days.loading:
        return Finding(AlertType.SALES_COLLAPSE, facility_id, None, Signal.HOLD, Severity.WARNING,
                       "sales history still arriving: judged once it settles",
                       {"velocity": shown, "loading": True, "last_closed_day": day})
    z, median, scale, collapsed = 0.0, None, None, False
    if len(values) >= max(policy.sales_min_points, 2):
        history = np.asarray(values[:-1], dtype=float)
        median = float(np.median(history))
        scale = max(MAD_TO_SIGMA * float(np.median(np.abs(history - median))),
                    MAD_EPSILON * max(1.0, abs(median)))
        collapsed, z = sales_collapse(np.asarray(values), threshold=policy.sales_raise_z)
    if collapsed:
        signal = Signal.RAISE
    elif z > -policy.sales_clear_z:
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD
    anchored = _anchored_z(open_alert, values[-1] if values else 0.0)
    if signal is Signal.CLEAR and anchored is not None and anchored <= -policy.sales_clear_z:
        signal = Signal.HOLD
    latest = values[-1] if values else 0.0
    return Finding(AlertType.SALES_COLLAPSE, facility_id, None, signal, Severity.WARNING,
                   f"sales velocity collapsed (robust z {z:.1f}): {latest:,.2f} on "
                   f"{day or 'the last closed day'} against a median of {median or 0.0:,.2f} over "
                   f"{max(len(values) - 1, 0)} days",
                   {"velocity": shown, "robust_z": z, "threshold": -policy.sales_raise_z,
                    "median": median, "scale": scale, "last_closed_day": day,
                    "idle_weekdays": idle, "anchored_z": anchored})


def duplicate_pledge_finding(facility_id: str, lot_id: str, conflicts: Sequence[str]) -> Finding:
    """A pledge refused at write time because its goods are already pledged elsewhere."""
    return Finding(AlertType.DUPLICATE_PLEDGE, facility_id, lot_id, Signal.RAISE, Severity.CRITICAL,
                   f"lot {lot_id} refused: already pledged ({'; '.join(conflicts)})",
                   {"conflicts": list(conflicts)}, auto_resolve=False)
