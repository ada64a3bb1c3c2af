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

import numpy as np

from lending.domain.alerts import Alert, AlertEvent, AlertType, Finding, Signal, reconcile
from lending.domain.inspection import Inspection, check_inspection
from lending.domain.integrity import check_integrity
from lending.domain.limits import (
    LimitSnapshot,
    LotLine,
    compute_limit,
    explain_change,
    limit_moved,
)
from lending.domain.memo import moved
from lending.domain.model import Commodity, Facility, Lot, PricePoint, Receivable, ReleaseOrder
from lending.domain.quantity import LotObservation, TrustPolicy, Verified, verify
from lending.domain.rules import RulePolicy, facility_findings, lot_findings
from lending.domain.sales import Sale
from lending.domain.valuation import Haircut, haircut


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
    # what :func:`reusable` reads against the clock, found once when the lot phase ran (None:
    # search ``received`` each time): the newest reading of a bound sensor, the first receive
    # time at or after ``now`` − the skew window, the first one after ``now``
    edges: tuple[datetime | None, datetime | None, datetime | None] | None = None


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
    received = tuple(sorted(r for arrivals in obs.arrivals.values() for _, r in arrivals))
    bound = set(lot.sensors)
    seen = [t for d, t in obs.last_seen.items() if d in bound]
    leaving = bisect_left(received, now - policy.integrity.clock_skew_window)
    arriving = bisect_right(received, now)
    return LotResult(lot, commodity, obs, counted, findings, now, policy, trust,
                     quiet=all(f.signal is Signal.CLEAR and f.resolution is None
                               for f in findings),
                     received=received,
                     edges=(max(seen) if seen else None,
                            received[leaving] if leaving < len(received) else None,
                            received[arriving] if arriving < len(received) else None))


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
    window = policy.integrity.clock_skew_window
    if previous.edges is not None:
        # the searches below, done once: ``previous`` descends, through lot phases reused only
        # where this held, from the one whose ``now`` the edges were found at, so "no receive
        # time in [then − window, now − window) nor in (then, now]" is the same test
        newest, leaving, arriving = previous.edges
        return not ((newest is not None and now - newest > trust.stale_after)
                    or (leaving is not None and leaving < now - window)
                    or (arriving is not None and arriving <= now))
    bound = set(lot.sensors)
    seen = [t for d, t in obs.last_seen.items() if d in bound]
    if seen and now - max(seen) > trust.stale_after:
        return False
    received = previous.received  # none may leave the skew window, or enter it, in between
    return (bisect_left(received, previous.now - window) == bisect_left(received, now - window)
            and bisect_right(received, previous.now) == bisect_right(received, now))


def reused(previous: LotResult, obs: LotObservation) -> LotResult:
    """``previous`` as of ``obs.now``: only the age of the newest reading moves."""
    counted = previous.counted
    if counted.stale_s is not None:
        newest = previous.edges[0] if previous.edges is not None else None
        if newest is None or obs.last_seen is not previous.obs.last_seen:
            bound = set(previous.lot.sensors)
            newest = max(t for d, t in obs.last_seen.items() if d in bound)
        counted = moved(counted, stale_s=max(0.0, (obs.now - newest).total_seconds()))
    return moved(previous, obs=obs, counted=counted, now=obs.now)


def _lot_phase(inputs: FacilityInputs, lot: Lot, commodity: Commodity, now: datetime,
               policy: RulePolicy, trust: TrustPolicy,
               previous: Mapping[str, LotResult] | None) -> LotResult:
    obs = inputs.observations.get(lot.id) or LotObservation(now=now)
    inspection = inputs.inspections.get(lot.id)
    before = previous.get(lot.id) if previous else None
    if before is not None and reusable(before, lot, commodity, obs, inputs.releases,
                                       inspection, now, policy, trust):
        return reused(before, obs)
    return assess_lot(lot, commodity, obs, inputs.releases, inspection, now, policy, trust)


@dataclass(slots=True)
class _Pending:
    """One facility between its lot phase and its value phase."""

    inputs: FacilityInputs
    results: dict[str, LotResult]
    verified: dict[str, Verified]
    findings: list[Finding]
    acting: list[Finding]  # what its alerts are reconciled with
    first: int  # its lots' rows in the batch's lot arrays: first .. first + len(lots)


def _alerted_lots(alerts: Mapping[str, Alert]) -> set[str]:
    """The lots named by these alerts, by their lot id or their key (``type:lot:<lot id>``)."""
    named: set[str] = set()
    for key, alert in alerts.items():
        if alert.lot_id:
            named.add(alert.lot_id)
        _, lot, lot_id = key.partition(":lot:")
        if lot:
            named.add(lot_id)
    return named


def assess(inputs: FacilityInputs, now: datetime, policy: RulePolicy | None = None,
           trust: TrustPolicy | None = None,
           previous: Mapping[str, LotResult] | None = None) -> Assessment:
    """The facility's assessment; ``previous``: lot phases of an earlier assessment (by lot id)
    that may be reused where :func:`reusable` says nothing they depend on has changed."""
    return assess_many([inputs], now, policy, trust, previous)[0]


def assess_many(batch: Sequence[FacilityInputs], now: datetime, policy: RulePolicy | None = None,
                trust: TrustPolicy | None = None,
                previous: Mapping[str, LotResult] | None = None) -> list[Assessment]:
    """:func:`assess` for each facility of ``batch`` (the same assessments), its value phase as
    one vectorised pass over every lot of the batch: each lot's lot phase (reused where it can
    be), then value = pledged × units per quote × price × (1 − haircut), contribution = value ×
    advance rate × trust and their sums per facility in numpy arrays (in lot order, so the sums
    are the floats a loop gives), the price and haircut looked up once per commodity and
    product terms; then per facility the snapshot, the facility rules and the alerts."""
    policy = policy or RulePolicy()
    trust = trust or TrustPolicy()
    pending: list[_Pending] = []
    # per lot, in batch order: the inputs of its value
    pledged: list[float] = []
    per_quote: list[float] = []
    price: list[float] = []
    cut: list[float] = []
    rate: list[float] = []
    weight: list[float] = []  # trust
    owner: list[int] = []  # the index of its facility in ``batch``
    counts: list[Verified] = []  # what its lot phase counted
    quotes: list[tuple[float | None, str | None, Haircut]] = []
    quoted: dict[tuple[object, ...], tuple[float | None, str | None, Haircut]] = {}
    for index, inputs in enumerate(batch):
        facility = inputs.facility
        terms = facility.terms
        alerted = _alerted_lots(inputs.latest_alerts)
        entry = _Pending(inputs, {}, {}, [], [], len(owner))
        results = entry.results
        for lot in inputs.lots:
            commodity = inputs.commodities.get(lot.commodity) or Commodity(lot.commodity)
            result = _lot_phase(inputs, lot, commodity, now, policy, trust, previous)
            counted = entry.verified[lot.id] = result.counted
            entry.findings.extend(result.findings)
            # A quiet lot (every finding clear, none explained) with no alert changes no alert:
            # its findings are left out of the reconciliation (the other keys' events are the
            # same, in the same order). Its findings' keys are its own (they name the lot).
            if not (result.quiet and lot.id and lot.id not in results
                    and lot.id not in alerted):
                entry.acting.extend(result.findings)
            results[lot.id] = result
            history = inputs.prices.get(lot.commodity, ())
            key = (id(history), lot.commodity, commodity.liquidation_days, terms.base_haircut,
                   terms.haircut_z, terms.max_haircut)
            quote = quoted.get(key)
            if quote is None:
                latest = history[-1] if history else None
                quote = quoted[key] = (
                    None if latest is None else latest.price,
                    None if latest is None else latest.time.isoformat(),
                    haircut(history, commodity.liquidation_days, terms))
            quotes.append(quote)
            counts.append(counted)
            pledged.append(counted.pledged)
            per_quote.append(commodity.unit_price(1.0, lot.unit_weight_kg))
            price.append(0.0 if quote[0] is None else quote[0])
            cut.append(quote[2].value)
            rate.append(terms.advance_rate)
            weight.append(counted.trust)
            owner.append(index)
        pending.append(entry)
    # the value phase: one pass over the batch's lots
    value = np.array(pledged, dtype=np.float64)
    value *= np.array(per_quote, dtype=np.float64)
    value *= np.array(price, dtype=np.float64)
    value *= 1.0 - np.array(cut, dtype=np.float64)
    unpriced = [i for i, q in enumerate(quotes) if q[0] is None]
    if unpriced:
        value[unpriced] = 0.0
    trusts = np.array(weight, dtype=np.float64)
    contribution = value * np.array(rate, dtype=np.float64)
    contribution *= trusts
    where = np.array(owner, dtype=np.intp)
    size = len(batch)
    if where.size:
        collateral = np.bincount(where, weights=value, minlength=size).tolist()
        trusted = np.bincount(where, weights=value * trusts, minlength=size).tolist()
        lots_base = np.bincount(where, weights=contribution, minlength=size).tolist()
    else:
        collateral = trusted = lots_base = [0.0] * size
    values, contributions = value.tolist(), contribution.tolist()

    out = []
    for index, entry in enumerate(pending):
        inputs = entry.inputs
        facility = inputs.facility
        lines = []
        for k, lot in enumerate(inputs.lots):
            row = entry.first + k
            counted = counts[row]
            quote = quotes[row]
            lines.append(LotLine(
                lot.id, lot.commodity, lot.declared_quantity, counted.quantity, counted.pledged,
                counted.trust, dict(counted.factors), quote[0], per_quote[row], quote[1],
                quote[2].value, quote[2].daily_volatility, values[row], rate[row],
                contributions[row]))
        snapshot = compute_limit(facility, lines, inputs.receivables, now,
                                 (collateral[index], trusted[index], lots_base[index])
                                 if lines else None)
        waiting = any(not v.observed for v in entry.verified.values())
        rules = facility_findings(facility, snapshot, inputs.latest_alerts,
                                  inputs.sales_velocity, now, policy, waiting, sales=inputs.sales)
        entry.findings.extend(rules)
        entry.acting.extend(rules)
        events = reconcile(inputs.latest_alerts, entry.acting, now)
        changed = None
        if limit_moved(inputs.previous, snapshot):
            reasons = tuple(explain_change(inputs.previous, snapshot)) if inputs.previous else (
                "first assessment",)
            changed = LimitChanged(facility.id, None if inputs.previous is None else
                                   inputs.previous.limit, snapshot.limit, reasons)
        out.append(Assessment(snapshot, entry.verified, entry.findings, events, changed,
                              entry.results))
    return out
