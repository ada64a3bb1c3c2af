"""Field inspections by hand (a physical count outranks every sensor), and the pure side of the
alerts an officer must close: critical alerts that stay in the queue as cleared, and a tamper flag
set and cleared inside a backlog."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lending.domain.alerts import (
    OFFICER_RESOLVES,
    Alert,
    AlertStatus,
    AlertType,
    Finding,
    PledgeAlertCleared,
    PledgeAlertEscalated,
    PledgeAlertRaised,
    Severity,
    Signal,
    apply_events,
    needs_comment,
    reconcile,
)
from lending.domain.assess import FacilityInputs, assess
from lending.domain.inspection import (
    FACTOR,
    Inspection,
    check_inspection,
    sensor_quantity_at,
)
from lending.domain.model import Commodity, DomainError, Facility, Lot, PricePoint
from lending.domain.observation import observe
from lending.domain.quantity import LotObservation, TrustPolicy, Verified, verify
from lending.domain.rules import geofence_finding, sensor_findings

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
TRUST = TrustPolicy()
LOT = Lot("lot-1", "fac-1", "steel", 100.0, 1000.0, "ZDW-1", ("lc-1", "rf-1"))


def sensors_say(units: float | None, *, now: datetime = NOW) -> Verified:
    """What the lot's load cell and RFID reader agree on (None: they said nothing)."""
    if units is None:
        return verify(LOT, LotObservation(now=now), TRUST)
    obs = LotObservation(now=now, weight_times=(now,), weight_kg=(units * 1000.0,),
                         rfid_times=(now,), rfid_count=(units,),
                         last_seen={"lc-1": now, "rf-1": now})
    return verify(LOT, obs, TRUST)


def counted(quantity: float, *, then: float | None, released: float = 0.0,
            at: datetime = NOW - timedelta(hours=1)) -> Inspection:
    return Inspection("lot-1", quantity, at, "inspector Li", then, released, "bay 2", 7)


def check(inspection: Inspection | None, now_units: float | None) -> tuple[Verified, Finding]:
    return check_inspection(LOT, inspection, sensors_say(now_units), TRUST)


# --- the rule ------------------------------------------------------------------------------------

def test_no_inspection_changes_nothing() -> None:
    before = sensors_say(100.0)
    after, finding = check_inspection(LOT, None, before, TRUST)
    assert after is before
    assert (finding.type, finding.signal, finding.lot_id) == (
        AlertType.INSPECTION_MISMATCH, Signal.CLEAR, "lot-1")


def test_a_count_that_agrees_with_the_sensors_confirms_them() -> None:
    after, finding = check(counted(99.0, then=100.0), 100.0)  # 1 % apart: within 3 %
    assert finding.signal is Signal.CLEAR
    assert FACTOR not in after.factors and after.trust == 1.0 and after.pledged == 100.0


def test_a_count_the_sensors_disagree_with_outranks_them() -> None:
    after, finding = check(counted(60.0, then=100.0), 100.0)
    assert (finding.signal, finding.severity) == (Signal.RAISE, Severity.WARNING)
    assert after.factors[FACTOR] == TRUST.inspection_factor == 0.5
    assert after.trust == pytest.approx(0.5)
    assert (after.quantity, after.pledged) == (60.0, 60.0)  # the loan counts the count
    assert after.by_weight == 100.0  # what the sensors said stays visible
    ev = finding.evidence
    assert ev["counted_quantity"] == 60.0 and ev["sensor_quantity_then"] == 100.0
    assert ev["sensor_quantity_now"] == 100.0 and ev["expected_now"] == 60.0
    assert ev["gap_then"] == pytest.approx(0.4) and ev["gap_now"] == pytest.approx(0.4)
    assert ev["counted_by"] == "inspector Li" and ev["inspection_id"] == 7
    assert ev["trust_factor"] == 0.5 and ev["tolerance"] == 0.03
    assert finding.magnitude == pytest.approx(40.0)
    assert "inspector Li counted 60.0" in finding.message


def test_a_count_above_the_sensors_also_disagrees_but_the_loan_never_exceeds_the_declared() -> None:
    after, finding = check(counted(130.0, then=80.0), 80.0)
    assert finding.signal is Signal.RAISE
    assert after.quantity == 130.0 and after.pledged == 100.0 and after.trust == 0.5


def test_an_empty_warehouse_count_against_full_sensors() -> None:
    after, finding = check(counted(0.0, then=100.0), 100.0)
    assert finding.signal is Signal.RAISE
    assert after.pledged == 0.0 and after.trust == 0.5


@pytest.mark.parametrize(("now_units", "signal", "standing"), [
    (100.0, Signal.RAISE, True),  # the sensors still say what they said
    (63.5, Signal.RAISE, True),  # 3.5 % off the count: beyond the tolerance (3 %)
    (62.9, Signal.HOLD, True),  # 2.9 %: inside the tolerance, not yet agreeing
    (57.0, Signal.HOLD, True),  # exactly the tolerance, below the count
    (62.5, Signal.CLEAR, False),  # exactly the clear line (2.5 %)
    (61.0, Signal.CLEAR, False),
    (60.0, Signal.CLEAR, False),  # recalibrated: the sensors say what was counted
])
def test_the_sensors_agree_with_the_count_again(now_units: float, signal: Signal,
                                                standing: bool) -> None:
    after, finding = check(counted(60.0, then=100.0), now_units)
    assert finding.signal is signal
    assert (FACTOR in after.factors) is standing
    if not standing:
        assert after.quantity == pytest.approx(now_units) and after.trust == 1.0


def test_releases_since_the_count_lower_what_it_implies() -> None:
    _, agreed = check(counted(90.0, then=90.0, released=30.0), 60.0)
    assert agreed.signal is Signal.CLEAR and agreed.evidence["expected_now"] == 60.0
    _, finding = check(counted(60.0, then=100.0, released=20.0), 40.0)
    assert finding.signal is Signal.CLEAR  # the sensors now agree with the count less releases
    still, raised = check(counted(60.0, then=100.0, released=20.0), 80.0)
    assert raised.signal is Signal.RAISE and still.quantity == 40.0
    assert check(counted(10.0, then=10.0, released=50.0), 0.0)[1].evidence["expected_now"] == 0.0


def test_a_count_agreed_with_then_is_not_blamed_for_a_later_drop() -> None:
    """Goods that left after an agreeing count are the outbound rule's business."""
    after, finding = check(counted(100.0, then=100.0), 70.0)
    assert finding.signal is Signal.CLEAR and FACTOR not in after.factors


def test_without_sensor_readings_then_the_count_is_judged_against_now() -> None:
    assert check(counted(60.0, then=None), 100.0)[1].signal is Signal.RAISE
    assert check(counted(99.0, then=None), 100.0)[1].signal is Signal.CLEAR


def test_silent_sensors_keep_a_standing_mismatch_and_hold_an_unjudged_count() -> None:
    after, finding = check(counted(60.0, then=100.0), None)
    assert finding.signal is Signal.RAISE and FACTOR in after.factors
    assert after.trust == 0.0  # no readings: nothing to trust, whatever the count
    _, unjudged = check(counted(60.0, then=None), None)
    assert unjudged.signal is Signal.HOLD


@pytest.mark.parametrize("then", [math.nan, math.inf, -math.inf])
def test_a_non_finite_sensor_quantity_then_is_unknown(then: float) -> None:
    _, finding = check(counted(60.0, then=then), 100.0)
    assert finding.signal is Signal.RAISE and finding.evidence["gap_then"] is None


@pytest.mark.parametrize(("quantity", "released"), [
    (math.nan, 0.0), (math.inf, 0.0), (-1.0, 0.0), (1e13, 0.0), (10.0, -1.0), (10.0, math.nan)])
def test_hostile_inspections_are_refused(quantity: float, released: float) -> None:
    with pytest.raises(DomainError):
        Inspection("lot-1", quantity, NOW, "x", None, released)


def test_a_count_needs_an_aware_time() -> None:
    with pytest.raises(DomainError, match="time zone"):
        Inspection("lot-1", 1.0, datetime(2026, 1, 1), "x")  # noqa: DTZ001


def test_a_lot_declared_empty_is_compared_on_the_count() -> None:
    empty = replace(LOT, declared_quantity=0.0)
    after, finding = check_inspection(empty, counted(0.0, then=0.0), sensors_say(0.0), TRUST)
    assert finding.signal is Signal.CLEAR and after.pledged == 0.0


# --- what the sensors said at the time of a count -------------------------------------------------

class Source:
    def __init__(self, series: dict[tuple[str, str], Sequence[tuple[datetime, float]]]) -> None:
        self.series = series

    def get(self, device: str, metric: str, /) -> Sequence[tuple[datetime, float]]:
        return self.series.get((device, metric), ())


def test_sensor_quantity_at_takes_the_readings_just_before_the_count() -> None:
    at = NOW - timedelta(hours=1)
    source = Source({
        ("lc-1", "weight_kg"): [(at - timedelta(minutes=40), 10_000.0),
                                (at - timedelta(minutes=2), 95_000.0),
                                (at + timedelta(minutes=1), 50_000.0)],  # after: not then
        ("rf-1", "rfid_count"): [(at - timedelta(minutes=1), 97.0)]})
    assert sensor_quantity_at(LOT, source, at, TRUST) == 95.0  # the smaller channel, as verify
    assert sensor_quantity_at(LOT, source, at - timedelta(minutes=35), TRUST) == 10.0
    assert sensor_quantity_at(LOT, source, at - timedelta(hours=2), TRUST) is None
    assert sensor_quantity_at(LOT, Source({}), at, TRUST) is None


def test_a_sealed_truck_is_not_a_measurement() -> None:
    truck = replace(LOT, vehicle="trk-1", sensors=("trk-1",))
    source = Source({("trk-1", "lat"): [(NOW, 31.0)]})
    assert sensor_quantity_at(truck, source, NOW, TRUST) is None


def test_hostile_readings_do_not_crash() -> None:
    source = Source({("lc-1", "weight_kg"): [(NOW, math.nan)], ("rf-1", "rfid_count"): [(NOW, -5.0)]})
    assert sensor_quantity_at(LOT, source, NOW, TRUST) == 0.0


# --- assess: the count in the limit ---------------------------------------------------------------

def inputs(inspection: Inspection | None, units: float = 100.0) -> FacilityInputs:
    obs = LotObservation(now=NOW, weight_times=(NOW,), weight_kg=(units * 1000.0 + 1,),
                         rfid_times=(NOW,), rfid_count=(units,),
                         last_seen={"lc-1": NOW, "rf-1": NOW})
    return FacilityInputs(
        facility=Facility("fac-1", "b-1", 10_000_000.0),
        lots=[LOT], commodities={"steel": Commodity("steel", liquidation_days=10.0)},
        observations={"lot-1": obs},
        prices={"steel": [PricePoint("steel", NOW - timedelta(days=1), 4000.0)]},
        inspections={} if inspection is None else {"lot-1": inspection})


def test_assess_lowers_trust_and_value_on_a_disagreeing_count_and_raises_the_warning() -> None:
    plain = assess(inputs(None), NOW)
    mismatched = assess(inputs(counted(60.0, then=100.0)), NOW)
    (line,) = mismatched.snapshot.lots
    assert line.trust_factors[FACTOR] == 0.5 and line.pledged == 60.0
    assert mismatched.snapshot.limit == pytest.approx(plain.snapshot.limit * 0.6 * 0.5)
    raised = [e.alert for e in mismatched.alert_events if isinstance(e, PledgeAlertRaised)]
    assert [(a.type, a.lot_id, a.severity) for a in raised] == [
        (AlertType.INSPECTION_MISMATCH, "lot-1", Severity.WARNING)]
    # The rules still see the sensors: no quantity mismatch, no outbound from the count.
    assert {f.type for f in mismatched.findings if f.signal is Signal.RAISE} == {
        AlertType.INSPECTION_MISMATCH}
    # A newer count that agrees with the sensors resolves it and restores the limit.
    latest = apply_events({}, mismatched.alert_events)
    agreed = assess(replace(inputs(counted(100.0, then=100.0, at=NOW)), latest_alerts=latest), NOW)
    assert agreed.snapshot.limit == pytest.approx(plain.snapshot.limit)
    (event,) = [e for e in agreed.alert_events if e.alert.type is AlertType.INSPECTION_MISMATCH]
    assert event.alert.status is AlertStatus.RESOLVED


# --- critical alerts need an officer ----------------------------------------------------------------

def alert(kind: AlertType, severity: Severity = Severity.CRITICAL, *, auto_resolve: bool = True,
          cleared: bool = False) -> Alert:
    return Alert(key=f"{kind}:lot:lot-1", type=kind, severity=severity, facility_id="fac-1",
                 lot_id="lot-1", message="m", evidence={}, raised_at=NOW, id=1,
                 auto_resolve=auto_resolve, cleared=cleared)


def finding(kind: AlertType, signal: Signal, severity: Severity = Severity.CRITICAL) -> Finding:
    return Finding(kind, "fac-1", "lot-1", signal, severity, "again", {"n": 2})


@pytest.mark.parametrize("kind", sorted(OFFICER_RESOLVES))
def test_officer_alerts_are_cleared_never_resolved_by_the_engine(kind: AlertType) -> None:
    old = alert(kind, auto_resolve=True)  # raised before the rule changed: still an officer's
    (event,) = reconcile({old.key: old}, [finding(kind, Signal.CLEAR)], NOW)
    assert isinstance(event, PledgeAlertCleared)
    assert event.alert.status is AlertStatus.OPEN and event.alert.cleared
    (raised,) = reconcile({}, [replace(finding(kind, Signal.RAISE), auto_resolve=True)], NOW)
    assert isinstance(raised, PledgeAlertRaised) and not raised.alert.auto_resolve


def test_geofence_and_tamper_findings_say_an_officer_resolves() -> None:
    fenced = replace(LOT, geofence=((31.0, 121.0), (31.0, 121.1), (31.1, 121.1)))
    outside = geofence_finding(fenced, LotObservation(now=NOW, position=(40.0, 100.0)))
    inside = geofence_finding(fenced, LotObservation(now=NOW, position=(31.01, 121.05)))
    assert not outside.auto_resolve and not inside.auto_resolve
    tamper = sensor_findings(LOT, LotObservation(now=NOW, tampered=frozenset({"lc-1"})),
                             sensors_say(100.0), TRUST)[0]
    assert tamper.type is AlertType.SENSOR_TAMPER and not tamper.auto_resolve


def test_a_condition_back_on_a_cleared_alert_unclears_it_once() -> None:
    cleared = alert(AlertType.GEOFENCE_EXIT, cleared=True)
    events = reconcile({cleared.key: cleared}, [finding(AlertType.GEOFENCE_EXIT, Signal.RAISE)], NOW)
    (event,) = events
    assert isinstance(event, PledgeAlertEscalated) and not event.alert.cleared
    assert event.alert.message == "again" and event.alert.id == 1
    again = apply_events({cleared.key: cleared}, events)
    assert reconcile(again, [finding(AlertType.GEOFENCE_EXIT, Signal.RAISE)], NOW) == []


def test_auto_resolving_alerts_still_resolve_themselves() -> None:
    stale = alert(AlertType.SENSOR_STALE, Severity.WARNING)
    (event,) = reconcile({stale.key: stale}, [finding(AlertType.SENSOR_STALE, Signal.CLEAR)], NOW)
    assert event.alert.status is AlertStatus.RESOLVED


@pytest.mark.parametrize(("kind", "severity", "needed"), [
    (AlertType.LTV_LIQUIDATION, Severity.CRITICAL, True),
    (AlertType.OVERADVANCE, Severity.CRITICAL, True),
    (AlertType.UNAUTHORISED_OUTBOUND, Severity.WARNING, True),  # a door at night: still an officer's
    (AlertType.DUPLICATE_PLEDGE, Severity.CRITICAL, True),
    (AlertType.SENSOR_STALE, Severity.WARNING, False),
    (AlertType.INSPECTION_MISMATCH, Severity.WARNING, False),
])
def test_which_alerts_need_a_comment(kind: AlertType, severity: Severity, needed: bool) -> None:
    assert needs_comment(alert(kind, severity)) is needed


# --- a tamper flag inside a backlog ------------------------------------------------------------------

def tamper_source(flags: Sequence[tuple[datetime, float]]) -> Source:
    return Source({("lc-1", "tamper"): flags,
                   ("lc-1", "weight_kg"): [(NOW, 100_000.0)], ("rf-1", "rfid_count"): [(NOW, 100.0)]})


def test_a_tamper_flag_set_and_cleared_in_a_backlog_still_raises() -> None:
    flags = [(NOW - timedelta(minutes=30), 0.0), (NOW - timedelta(minutes=20), 1.0),
             (NOW - timedelta(minutes=19), 1.0), (NOW - timedelta(minutes=18), 0.0)]
    obs = observe(LOT, tamper_source(flags), {}, NOW, timedelta(hours=2))
    assert obs.tampered == frozenset()  # the latest flag is clear ...
    assert obs.tamper_seen_at == {"lc-1": NOW - timedelta(minutes=19)}  # ... but it was set
    tamper = sensor_findings(LOT, obs, verify(LOT, obs, TRUST), TRUST)[0]
    assert (tamper.signal, tamper.severity) == (Signal.RAISE, Severity.CRITICAL)
    assert tamper.evidence["devices"] == ["lc-1"] and tamper.evidence["set_now"] == []
    assert tamper.evidence["seen_set_at"] == {"lc-1": (NOW - timedelta(minutes=19)).isoformat()}


def test_a_tamper_flag_long_gone_or_never_set_clears() -> None:
    old = [(NOW - TRUST.tamper_memory - timedelta(seconds=1), 1.0), (NOW - timedelta(days=1), 0.0)]
    for flags in (old, [(NOW, 0.0)], []):
        obs = observe(LOT, tamper_source(flags), {}, NOW, timedelta(hours=2))
        assert sensor_findings(LOT, obs, verify(LOT, obs, TRUST), TRUST)[0].signal is Signal.CLEAR


def test_an_unbound_device_tamper_history_is_ignored() -> None:
    obs = LotObservation(now=NOW, tamper_seen_at={"cam-9": NOW})
    assert sensor_findings(LOT, obs, sensors_say(100.0), TRUST)[0].signal is Signal.CLEAR
