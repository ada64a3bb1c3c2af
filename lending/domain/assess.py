"""One facility, assessed: verify lots → value them → limit snapshot → alert rules → events.

This is the whole engine for one facility as a pure function; the engine (:mod:`lending.engine`)
loads its inputs through :func:`lending.store.load_inputs`, calls :func:`assess`, and persists what
comes back with :func:`lending.store.persist`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

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


def assess(inputs: FacilityInputs, now: datetime, policy: RulePolicy | None = None,
           trust: TrustPolicy | None = None) -> Assessment:
    policy = policy or RulePolicy()
    trust = trust or TrustPolicy()
    facility = inputs.facility
    lines, verified, findings = [], {}, []
    for lot in inputs.lots:
        commodity = inputs.commodities.get(lot.commodity) or Commodity(lot.commodity)
        obs = inputs.observations.get(lot.id) or LotObservation(now=now)
        checked = verify(lot, obs, trust, commodity)  # what the sensors say (the rules' view)
        integrity = check_integrity(lot, obs, policy.integrity)  # sensors that lie
        checked = integrity.applied_to(checked)
        counted, inspected = check_inspection(lot, inputs.inspections.get(lot.id), checked, trust)
        found = lot_findings(lot, commodity, obs, checked, inputs.releases, policy, trust)
        counted = _less_detected_loss(counted, lot, found)
        verified[lot.id] = counted  # a standing physical count outranks the sensors
        history = inputs.prices.get(lot.commodity, ())
        latest = history[-1] if history else None
        cut = haircut(history, commodity.liquidation_days, facility.terms)
        lines.append(lot_line(lot.id, lot.commodity, lot.declared_quantity, counted,
                              None if latest is None else latest.price,
                              commodity.unit_price(1.0, lot.unit_weight_kg),
                              None if latest is None else latest.time, cut,
                              facility.terms.advance_rate))
        findings.extend(found)
        findings.append(inspected)
        findings.extend(integrity.findings)
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
    return Assessment(snapshot, verified, findings, events, changed)
