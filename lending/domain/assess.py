"""One facility, assessed: verify lots → value them → limit snapshot → alert rules → events.

This is the whole engine for one facility as a pure function; the engine (:mod:`lending.engine`)
loads its inputs through :func:`lending.store.load_inputs`, calls :func:`assess`, and persists what
comes back with :func:`lending.store.persist`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from operator import attrgetter, is_

from lending.domain.alerts import Alert, AlertEvent, AlertType, Finding, Signal, reconcile
from lending.domain.inspection import Inspection, check_inspection
from lending.domain.integrity import check_integrity
from lending.domain.limits import LimitSnapshot, compute_limit, explain_change, limit_moved, lot_line
from lending.domain.model import Commodity, Facility, Lot, PricePoint, Receivable, ReleaseOrder
from lending.domain.quantity import LotObservation, TrustPolicy, Verified, verify
from lending.domain.rules import RulePolicy, facility_findings, lot_findings
from lending.domain.sales import Sale
from lending.domain.valuation import haircut


@dataclass(frozen=True, slots=True)
class FacilityInputs:
    """Everything the engine needs to know about one facility at one moment."""

    facility: Facility
    lots: Sequence[Lot]
    commodities: Mapping[str, Commodity]
    observations: Mapping[str, LotObservation]  # by lot id
    prices: Mapping[str, Sequence[PricePoint]]  # price history per commodity, oldest first
    releases: Sequence[ReleaseOrder] = ()
    receivables: Sequence[Receivable] = ()
    sales_velocity: Sequence[float] = ()  # closed-day sales totals, oldest first (if no sales)
    sales: Sequence[Sale] | None = None  # dated sales (daily totals), judged by closed day
    latest_alerts: Mapping[str, Alert] = field(default_factory=dict)  # newest alert per key
    previous: LimitSnapshot | None = None
    inspections: Mapping[str, Inspection] = field(default_factory=dict)  # latest count per lot id


@dataclass(frozen=True, slots=True)
class LimitChanged:
    facility_id: str
    old_limit: float | None
    new_limit: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Assessment:
    snapshot: LimitSnapshot
    verified: Mapping[str, Verified]
    findings: Sequence[Finding]
    alert_events: Sequence[AlertEvent]
    limit_changed: LimitChanged | None
    lots: Mapping[str, LotResult] = field(default_factory=dict)  # each lot's phase, for reuse


def _less_detected_loss(counted: Verified, lot: Lot, found: Sequence[Finding]) -> Verified:
    """The loan counts a detected theft at once: the robust level behind the verified quantity
    lags a sudden drop by minutes, the goods ledger's shortfall (an outbound alert's magnitude)
    does not."""
    for f in found:
        if (f.type is AlertType.UNAUTHORISED_OUTBOUND and f.signal is Signal.RAISE
                and f.magnitude is not None and f.magnitude > 0):
            left = max(0.0, lot.declared_quantity - f.magnitude)
            if left < counted.quantity:
                return replace(counted, quantity=left, pledged=min(counted.pledged, left))
    return counted


@dataclass(frozen=True, slots=True)
class LotResult:
    """One lot's part of an assessment before prices enter it (the lot phase): what the sensors
    verified and every lot rule's finding, with what it was computed from, so that a later
    assessment can reuse it (:func:`reusable`) when only prices (or nothing) changed."""

    lot: Lot
    commodity: Commodity
    obs: LotObservation
    counted: Verified  # a standing physical count applied, a detected loss deducted
    findings: tuple[Finding, ...]  # the lot rules', the inspection's, the integrity checks'
    now: datetime
    policy: RulePolicy
    trust: TrustPolicy
    quiet: bool = False  # every finding clear, none explained by a release
    received: tuple[datetime, ...] = ()  # every receive time of ``obs.arrivals``, sorted


def assess_lot(lot: Lot, commodity: Commodity, obs: LotObservation,
               releases: Sequence[ReleaseOrder], inspection: Inspection | None, now: datetime,
               policy: RulePolicy, trust: TrustPolicy) -> LotResult:
    """The lot phase of :func:`assess` for one lot."""
    checked = verify(lot, obs, trust, commodity)  # what the sensors say (the rules' view)
    integrity = check_integrity(lot, obs, policy.integrity)  # sensors that lie
    checked = integrity.applied_to(checked)
    counted, inspected = check_inspection(lot, inspection, checked, trust)
    found = lot_findings(lot, commodity, obs, checked, releases, policy, trust)
    counted = _less_detected_loss(counted, lot, found)  # a standing physical count outranks sensors
    findings = (*found, inspected, *integrity.findings)
    return LotResult(lot, commodity, obs, counted, findings, now, policy, trust,
                     quiet=all(f.signal is Signal.CLEAR and f.resolution is None
                               for f in findings),
                     received=tuple(sorted(r for arrivals in obs.arrivals.values()
                                           for _, r in arrivals)))


_READINGS = attrgetter(*(f.name for f in fields(LotObservation) if f.name != "now"))


def reusable(previous: LotResult, lot: Lot, commodity: Commodity, obs: LotObservation,
             releases: Sequence[ReleaseOrder], inspection: Inspection | None, now: datetime,
             policy: RulePolicy, trust: TrustPolicy) -> bool:
    """Whether :func:`assess_lot` at ``now`` would give ``previous`` again (its stale age aside,
    see :func:`reused`), so the lot phase need not run: the same lot, commodity, policies and
    readings (``obs`` is ``previous.obs`` as of a later ``now``: the same series objects), no
    release order, inspection, refused message, tamper flag, door opening or position that a
    rule reads against the clock, every finding clear then, the readings not stale now, and no
    arrival leaving the clock-skew window in between. Conservative: anything else recomputes."""
    before = previous.obs
    if not (previous.policy is policy and previous.trust is trust and now >= previous.now
            and obs.now == now and all(map(is_, _READINGS(obs), _READINGS(before)))
            and previous.lot == lot and previous.commodity == commodity
            and inspection is None and not obs.refused and not obs.door_open_at
            and not obs.tamper_seen_at and not obs.tampered and obs.position is None
            and not obs.position_received and not obs.track and previous.quiet):
        return False
    if any(r.lot_id == lot.id for r in releases):
        return False
    bound = set(lot.sensors)
    seen = [t for d, t in obs.last_seen.items() if d in bound]
    if seen and now - max(seen) > trust.stale_after:
        return False
    window = policy.integrity.clock_skew_window
    received = previous.received  # none may leave the skew window, or enter it, in between
    return (bisect_left(received, previous.now - window) == bisect_left(received, now - window)
            and bisect_right(received, previous.now) == bisect_right(received, now))


def reused(previous: LotResult, obs: LotObservation) -> LotResult:
    """``previous`` as of ``obs.now``: only the age of the newest reading moves."""
    counted = previous.counted
    if counted.stale_s is not None:
        bound = set(previous.lot.sensors)
        newest = max(t for d, t in obs.last_seen.items() if d in bound)
        counted = replace(counted, stale_s=max(0.0, (obs.now - newest).total_seconds()))
    return replace(previous, obs=obs, counted=counted, now=obs.now)


def assess(inputs: FacilityInputs, now: datetime, policy: RulePolicy | None = None,
           trust: TrustPolicy | None = None,
           previous: Mapping[str, LotResult] | None = None) -> Assessment:
    """The facility's assessment; ``previous``: lot phases of an earlier assessment (by lot id)
    that may be reused where :func:`reusable` says nothing they depend on has changed."""
    policy = policy or RulePolicy()
    trust = trust or TrustPolicy()
    facility = inputs.facility
    lines, verified = [], {}
    findings: list[Finding] = []
    results: dict[str, LotResult] = {}
    for lot in inputs.lots:
        commodity = inputs.commodities.get(lot.commodity) or Commodity(lot.commodity)
        obs = inputs.observations.get(lot.id) or LotObservation(now=now)
        inspection = inputs.inspections.get(lot.id)
        before = previous.get(lot.id) if previous else None
        if before is not None and reusable(before, lot, commodity, obs, inputs.releases,
                                           inspection, now, policy, trust):
            result = reused(before, obs)
        else:
            result = assess_lot(lot, commodity, obs, inputs.releases, inspection, now, policy,
                                trust)
        results[lot.id] = result
        counted = verified[lot.id] = result.counted
        history = inputs.prices.get(lot.commodity, ())
        latest = history[-1] if history else None
        cut = haircut(history, commodity.liquidation_days, facility.terms)
        lines.append(lot_line(lot.id, lot.commodity, lot.declared_quantity, counted,
                              None if latest is None else latest.price,
                              commodity.unit_price(1.0, lot.unit_weight_kg),
                              None if latest is None else latest.time, cut,
                              facility.terms.advance_rate))
        findings.extend(result.findings)
    snapshot = compute_limit(facility, lines, inputs.receivables, now)
    waiting = any(not v.observed for v in verified.values())
    findings.extend(facility_findings(facility, snapshot, inputs.latest_alerts,
                                      inputs.sales_velocity, now, policy, waiting,
                                      sales=inputs.sales))
    events = reconcile(inputs.latest_alerts, findings, now)
    changed = None
    if limit_moved(inputs.previous, snapshot):
        reasons = tuple(explain_change(inputs.previous, snapshot)) if inputs.previous else (
            "first assessment",)
        changed = LimitChanged(facility.id, None if inputs.previous is None else
                               inputs.previous.limit, snapshot.limit, reasons)
    return Assessment(snapshot, verified, findings, events, changed, results)
