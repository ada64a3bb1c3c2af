"""Pledge alerts: their types, lifecycle, and how findings become alerts without flapping.

A rule looks at one lot or facility and returns a :class:`Finding` whose ``signal`` says whether
the condition holds (RAISE), is clearly gone (CLEAR), or sits between the two lines (HOLD). The
gap between the raise and clear lines is the hysteresis. :func:`reconcile` turns findings into
events against the latest alert of each key (one key per alert type and lot or facility):

- RAISE with an open or acknowledged alert of the key: nothing (idempotent under replays),
  unless the finding is worse (more severe, or its magnitude grew by 4 %): the alert is
  escalated to the new severity, message and evidence;
- RAISE after a resolved alert: a new alert only once a CLEAR was seen since it was raised
  (the alert is *re-armed*), so resolving a condition that still holds does not re-open it;
- RAISE with an open or acknowledged alert already marked cleared: the condition is back, the
  alert is no longer cleared (escalated with the new evidence);
- CLEAR: an auto-resolving alert is resolved, any other is marked cleared (re-armed); alerts of
  :data:`OFFICER_RESOLVES` never resolve themselves; a CLEAR that carries a ``resolution`` (the
  condition was explained, e.g. goods that left before their release was booked) resolves the
  alert with it as the comment;
- HOLD: nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from lending.domain.model import DomainError


class AlertType(StrEnum):
    LTV_WARNING = "ltv_warning"
    LTV_LIQUIDATION = "ltv_liquidation"
    UNAUTHORISED_OUTBOUND = "unauthorised_outbound"
    GEOFENCE_EXIT = "geofence_exit"
    SENSOR_TAMPER = "sensor_tamper"
    SENSOR_OFFLINE = "sensor_offline"
    SENSOR_STALE = "sensor_stale"
    SENSOR_FLATLINE = "sensor_flatline"
    QUANTITY_MISMATCH = "quantity_mismatch"
    CONDITION_OUT_OF_SPEC = "condition_out_of_spec"
    DUPLICATE_PLEDGE = "duplicate_pledge"
    SALES_COLLAPSE = "sales_collapse"
    VALUE_BELOW_FLOOR = "value_below_floor"
    SENSOR_FAULT = "sensor_fault"  # a sensor reports nonsense: load cell at 0 with RFID unchanged
    SENSOR_SPOOFING = "sensor_spoofing"  # replayed series, impossible GPS, door with no movement
    CLOCK_SKEW = "clock_skew"  # device time far from receive time
    INSPECTION_MISMATCH = "inspection_mismatch"  # a physical count disagrees with the sensors
    OVERADVANCE = "overadvance"  # drawn above the limit
    DRAWDOWN_OVERDUE = "drawdown_overdue"  # a drawdown past its maturity, not repaid
    PAYABLE_LATE = "payable_late"  # a core enterprise did not pay a confirmed payable at maturity
    FICTITIOUS_TRADE = "fictitious_trade"  # telemetry contradicts the shipment behind a receivable
    RECONCILIATION_BREAK = "reconciliation_break"  # the bank's statement and the platform disagree


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# Alerts an officer must close: when their condition ends they are marked cleared and stay in the
# queue until resolved with a comment (whatever a rule's finding says about auto_resolve).
OFFICER_RESOLVES = frozenset({AlertType.UNAUTHORISED_OUTBOUND, AlertType.GEOFENCE_EXIT,
                              AlertType.SENSOR_TAMPER, AlertType.SENSOR_SPOOFING,
                              AlertType.DUPLICATE_PLEDGE})


def needs_comment(alert: Alert) -> bool:
    """Resolving this alert takes an officer's comment: it is critical (now), or of a type only an
    officer closes."""
    return alert.severity is Severity.CRITICAL or alert.type in OFFICER_RESOLVES


class Signal(StrEnum):
    RAISE = "raise"
    HOLD = "hold"
    CLEAR = "clear"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def alert_key(kind: AlertType, facility_id: str, lot_id: str | None) -> str:
    return f"{kind}:{'lot:' + lot_id if lot_id else 'facility:' + facility_id}"


@dataclass(frozen=True, slots=True)
class Finding:
    """What one rule concluded about one lot or facility at one evaluation."""

    type: AlertType
    facility_id: str
    lot_id: str | None
    signal: Signal
    severity: Severity = Severity.WARNING
    message: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    auto_resolve: bool = True  # resolve by itself on CLEAR (else an officer resolves it)
    cure_deadline: datetime | None = None
    magnitude: float | None = None  # how bad (e.g. units missing); growth updates an open alert
    # a CLEAR that explains the condition (e.g. a release booked for goods that left before it):
    # the open alert is resolved with this as its comment, even one only an officer closes
    resolution: str | None = None

    @property
    def key(self) -> str:
        return alert_key(self.type, self.facility_id, self.lot_id)


@dataclass(frozen=True, slots=True)
class Alert:
    key: str
    type: AlertType
    severity: Severity
    facility_id: str
    lot_id: str | None
    message: str
    evidence: Mapping[str, Any]
    raised_at: datetime
    status: AlertStatus = AlertStatus.OPEN
    auto_resolve: bool = True
    cleared: bool = False  # a CLEAR was seen since it was raised: a new RAISE may open anew
    cure_deadline: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    comment: str | None = None
    id: int | None = None

    @property
    def active(self) -> bool:
        return self.status is not AlertStatus.RESOLVED

    def acknowledge(self, at: datetime, by: str) -> Alert:
        if self.status is not AlertStatus.OPEN:
            raise DomainError(f"alert {self.id} is {self.status}; only an open alert can be "
                              "acknowledged")
        return replace(self, status=AlertStatus.ACKNOWLEDGED, acknowledged_at=at, acknowledged_by=by)

    def resolve(self, at: datetime, by: str, comment: str | None = None) -> Alert:
        if self.status is AlertStatus.RESOLVED:
            raise DomainError(f"alert {self.id} is already resolved")
        return replace(self, status=AlertStatus.RESOLVED, resolved_at=at, resolved_by=by,
                       comment=comment)


@dataclass(frozen=True, slots=True)
class PledgeAlertRaised:
    alert: Alert


@dataclass(frozen=True, slots=True)
class PledgeAlertResolved:
    alert: Alert


@dataclass(frozen=True, slots=True)
class PledgeAlertEscalated:
    """An open alert's condition got worse (e.g. a door opened at night, then goods left): it
    takes the more severe finding's severity, message and evidence."""

    alert: Alert


@dataclass(frozen=True, slots=True)
class PledgeAlertCleared:
    """The condition behind an alert is gone; the alert stays for an officer (or is history)."""

    alert: Alert


AlertEvent = PledgeAlertRaised | PledgeAlertResolved | PledgeAlertCleared | PledgeAlertEscalated
SYSTEM = "system"


def _raise(finding: Finding, now: datetime) -> Alert:
    return Alert(
        key=finding.key, type=finding.type, severity=finding.severity,
        facility_id=finding.facility_id, lot_id=finding.lot_id, message=finding.message,
        evidence=_evidence(finding), raised_at=now,
        auto_resolve=finding.auto_resolve and finding.type not in OFFICER_RESOLVES,
        cure_deadline=finding.cure_deadline,
    )


MAGNITUDE_STEP = 1.04  # an open alert is escalated (new magnitude and evidence) when it grows 4 %


def _evidence(finding: Finding) -> dict[str, Any]:
    evidence = dict(finding.evidence)
    if finding.magnitude is not None:
        evidence["magnitude"] = finding.magnitude
    return evidence


def _higher(a: Severity, b: Severity) -> Severity:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def _worse(finding: Finding, alert: Alert) -> bool:
    if SEVERITY_RANK[finding.severity] != SEVERITY_RANK[alert.severity]:
        return SEVERITY_RANK[finding.severity] > SEVERITY_RANK[alert.severity]
    before = alert.evidence.get("magnitude")
    return (finding.magnitude is not None and isinstance(before, int | float) and before >= 0
            and finding.magnitude > before * MAGNITUDE_STEP)


def reconcile(latest: Mapping[str, Alert], findings: Iterable[Finding],
              now: datetime) -> list[AlertEvent]:
    """Events that bring the alerts in line with ``findings``; ``latest`` is the newest alert of
    each key (any status). Applying the events and reconciling the same findings again yields no
    events (idempotent)."""
    events: list[AlertEvent] = []
    for finding in merge_findings(findings):  # two rules may speak for one key
        last = latest.get(finding.key)
        if finding.signal is Signal.RAISE:
            if last is None or (not last.active and last.cleared):
                events.append(PledgeAlertRaised(_raise(finding, now)))
            elif last.active and last.cleared:  # the condition is back before anyone resolved it
                events.append(PledgeAlertEscalated(replace(
                    last, cleared=False, severity=_higher(last.severity, finding.severity),
                    message=finding.message, evidence=_evidence(finding))))
            elif last.active and _worse(finding, last):
                events.append(PledgeAlertEscalated(replace(
                    last, severity=finding.severity, message=finding.message,
                    evidence=_evidence(finding))))
        elif finding.signal is Signal.CLEAR and last is not None:
            if last.active and finding.resolution:  # explained: closed, naming the explanation
                resolved = last.resolve(now, SYSTEM, finding.resolution)
                events.append(PledgeAlertResolved(replace(resolved, cleared=True)))
            elif last.active and last.auto_resolve and last.type not in OFFICER_RESOLVES:
                resolved = last.resolve(now, SYSTEM, "condition cleared")
                events.append(PledgeAlertResolved(replace(resolved, cleared=True)))
            elif not last.cleared:
                events.append(PledgeAlertCleared(replace(last, cleared=True)))
    return events


def apply_events(latest: Mapping[str, Alert], events: Iterable[AlertEvent]) -> dict[str, Alert]:
    """``latest`` after ``events`` (what the store does, as a pure function for tests)."""
    result = dict(latest)
    for event in events:
        result[event.alert.key] = event.alert
    return result


_SIGNAL_RANK = {Signal.CLEAR: 0, Signal.HOLD: 1, Signal.RAISE: 2}


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per key, in first-seen order, where several rules speak for one key (e.g. a
    load cell reading 0 and readings the gateway refused are both a ``sensor_fault``): RAISE if
    any raises, else HOLD if any holds, else CLEAR. Raising findings combine: the most severe
    one's message first, every raising finding's evidence, the largest magnitude, and an officer
    resolves it if any of them needs one."""
    groups: dict[str, list[Finding]] = {}
    for finding in findings:
        groups.setdefault(finding.key, []).append(finding)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        top = max(_SIGNAL_RANK[f.signal] for f in group)
        same = [f for f in group if _SIGNAL_RANK[f.signal] == top]
        if same[0].signal is not Signal.RAISE or len(same) == 1:
            out.append(same[0])
            continue
        same.sort(key=lambda f: SEVERITY_RANK[f.severity], reverse=True)
        evidence: dict[str, Any] = {}
        for f in reversed(same):
            evidence.update(f.evidence)
        magnitudes = [f.magnitude for f in same if f.magnitude is not None]
        out.append(replace(
            same[0], message="; ".join(f.message for f in same if f.message),
            evidence=evidence, auto_resolve=all(f.auto_resolve for f in same),
            magnitude=max(magnitudes) if magnitudes else None))
    return out
