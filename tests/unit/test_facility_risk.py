"""Facility-level risk, worked by hand: LTV and the value floor on trust-weighted collateral, the
overadvance alert and its repay amount, a warning's top-up recomputed as the position worsens and
chosen so that paying it clears the alert, and sales judged by closed day (a day without sales
is a 0, the open day waits, a history load is judged once)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from lending.domain.alerts import (
    Alert,
    AlertEvent,
    AlertType,
    Finding,
    PledgeAlertEscalated,
    PledgeAlertRaised,
    PledgeAlertResolved,
    Severity,
    Signal,
    apply_events,
    reconcile,
)
from lending.domain.assess import FacilityInputs, assess
from lending.domain.limits import LimitSnapshot, LotLine, compute_limit
from lending.domain.model import Commodity, Facility, Lot, PricePoint, ProductTerms
from lending.domain.quantity import LotObservation
from lending.domain.rules import RulePolicy, facility_findings
from lending.domain.sales import Sale, closed_days, last_closed_day
from lending.store import snapshot_from_inputs

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # 20:00 at the sites (UTC+8)
POLICY = RulePolicy()
LOCAL = timedelta(hours=8)


# --- builders ---------------------------------------------------------------------------------

def lot(lot_id: str, market: float, *, trust: float = 1.0, cut: float = 0.0,
        advance: float = 0.6, price: float | None = 1.0) -> LotLine:
    """A lot whose goods are worth ``market`` before the haircut (``market`` units at 1.0)."""
    value = 0.0 if price is None else market * price * (1 - cut)
    return LotLine(lot_id=lot_id, commodity="copper", declared=market, verified=market,
                   pledged=market, trust=trust, trust_factors={} if trust == 1.0 else
                   {"outside_geofence": trust}, price=price, units_per_quote=1.0,
                   price_time=NOW.isoformat(), haircut=cut, volatility=0.0, value=value,
                   advance_rate=advance, contribution=value * advance * trust)


def facility(outstanding: float, *, line: float = 1e9, floor: float = 0.0,
             terms: ProductTerms | None = None) -> Facility:
    return Facility("fac-1", "b-1", line, outstanding=outstanding, value_floor=floor,
                    terms=terms or ProductTerms())


def snap_of(fac: Facility, lots: Sequence[LotLine]) -> LimitSnapshot:
    return compute_limit(fac, list(lots), [], NOW)


def findings(fac: Facility, lots: Sequence[LotLine], *, latest: Mapping[str, Alert] | None = None,
             now: datetime = NOW, waiting: bool = False, sales: Sequence[Sale] | None = None,
             policy: RulePolicy = POLICY) -> dict[AlertType, Finding]:
    found = facility_findings(fac, snap_of(fac, lots), latest or {}, [], now, policy, waiting,
                              sales=sales)
    return {f.type: f for f in found}


def step(latest: dict[str, Alert], found: Mapping[AlertType, Finding], kind: AlertType,
         now: datetime = NOW) -> tuple[dict[str, Alert], list[AlertEvent]]:
    events = reconcile(latest, [found[kind]], now)
    return apply_events(latest, events), events


# --- trust-weighted collateral ---------------------------------------------------------------------

def test_ltv_and_the_floor_measure_trust_weighted_collateral() -> None:
    fac = facility(80_000.0, floor=150_000.0)
    lots = [lot("wh", 100_000.0), lot("truck", 100_000.0, trust=0.0)]
    snap = snap_of(fac, lots)
    assert snap.collateral_value == pytest.approx(200_000.0)  # the goods, before trust
    assert snap.trusted_collateral_value == pytest.approx(100_000.0)
    assert snap.ltv == pytest.approx(0.8)  # not 80,000 / 200,000 = 0.4
    found = findings(fac, lots)
    assert found[AlertType.LTV_WARNING].signal is Signal.RAISE
    assert found[AlertType.LTV_WARNING].evidence["trusted_collateral_value"] == pytest.approx(100_000.0)
    floor = found[AlertType.VALUE_BELOW_FLOOR]
    assert floor.signal is Signal.RAISE
    assert floor.evidence == {"collateral_value": 200_000.0, "trusted_collateral_value": 100_000.0,
                              "floor": 150_000.0}
    trusted = findings(fac, [lot("wh", 100_000.0), lot("truck", 100_000.0)])
    assert trusted[AlertType.LTV_WARNING].signal is Signal.CLEAR
    assert trusted[AlertType.VALUE_BELOW_FLOOR].signal is Signal.CLEAR


SQUARE = ((31.0, 121.0), (31.0, 121.1), (31.1, 121.1), (31.1, 121.0))


def truck_inputs(position: tuple[float, float]) -> FacilityInputs:
    truck = Lot("truck-1", "fac-1", "copper", 100.0, 1000.0, "REG-T1", ("seal-1", "gps-1"),
                vehicle="veh-1", geofence=SQUARE)
    obs = LotObservation(now=NOW, last_seen={"seal-1": NOW, "gps-1": NOW}, position=position,
                         position_at=NOW)
    return FacilityInputs(
        facility=facility(200_000.0, line=1e6), lots=[truck],
        commodities={"copper": Commodity("copper")}, observations={"truck-1": obs},
        prices={"copper": [PricePoint("copper", NOW - timedelta(days=1), 5000.0)]})


def test_a_truck_outside_its_geofence_moves_ltv_not_only_the_limit() -> None:
    inside = assess(truck_inputs((31.05, 121.05)), NOW).snapshot
    outside = assess(truck_inputs((31.5, 121.05)), NOW).snapshot
    assert inside.collateral_value == pytest.approx(outside.collateral_value)
    assert inside.collateral_value > 0
    assert inside.ltv == pytest.approx(200_000.0 / inside.trusted_collateral_value)
    assert inside.ltv < 0.75  # sealed load, inside its corridor: within the lines
    assert outside.trusted_collateral_value == 0.0 and math.isinf(outside.ltv)
    kinds = {f.type: f.signal for f in assess(truck_inputs((31.5, 121.05)), NOW).findings}
    assert kinds[AlertType.LTV_WARNING] is Signal.RAISE
    assert kinds[AlertType.LTV_LIQUIDATION] is Signal.RAISE


def test_a_snapshot_stored_before_trusted_collateral_still_loads() -> None:
    fac = facility(20_000.0)
    stored = snap_of(fac, [lot("a", 50_000.0), lot("b", 30_000.0, trust=0.5)]).inputs()
    del stored["trusted_collateral_value"]
    old = snapshot_from_inputs(stored)
    assert old.trusted_collateral_value == pytest.approx(65_000.0)
    assert "trusted collateral 65,000.00" in old.explain()


# --- overadvance ---------------------------------------------------------------------------------

def test_an_overdrawn_facility_raises_overadvance_with_the_amount_to_repay() -> None:
    fac = facility(70_000.0)
    lots = [lot("wh", 100_000.0)]  # base = 100,000 × 0.6 = 60,000
    over = findings(fac, lots)[AlertType.OVERADVANCE]
    assert (over.signal, over.severity) == (Signal.RAISE, Severity.CRITICAL)
    # repaid to 60,000 × (1 − 2 %) = 58,800, so that paying it clears the alert
    assert over.evidence["excess"] == pytest.approx(10_000.0)
    assert over.evidence["repay_needed"] == pytest.approx(11_200.0)
    assert over.magnitude == pytest.approx(11_200.0)
    assert "repay 11,200.00 CNY" in over.message
    # or goods worth (70,000 ÷ 0.98 − 60,000) ÷ (1 − 0 % haircut) ÷ 60 % advance
    assert over.evidence["top_up_needed"] == pytest.approx((70_000.0 / 0.98 - 60_000.0) / 0.6,
                                                           abs=0.01)


def test_repaying_the_stated_amount_clears_overadvance_and_paying_only_the_excess_holds() -> None:
    lots = [lot("wh", 100_000.0)]
    latest, events = step({}, findings(facility(70_000.0), lots), AlertType.OVERADVANCE)
    assert [type(e) for e in events] == [PledgeAlertRaised]
    repay = events[0].alert.evidence["repay_needed"]
    excess_only = findings(facility(60_000.0), lots)[AlertType.OVERADVANCE]
    assert excess_only.signal is Signal.HOLD
    assert reconcile(latest, [excess_only], NOW) == []
    latest, events = step(latest, findings(facility(70_000.0 - repay), lots), AlertType.OVERADVANCE)
    assert [type(e) for e in events] == [PledgeAlertResolved]


def test_overadvance_escalates_as_the_overdraft_grows() -> None:
    lots = [lot("wh", 100_000.0)]
    latest, _ = step({}, findings(facility(61_000.0), lots), AlertType.OVERADVANCE)
    _, events = step(latest, findings(facility(61_050.0), lots), AlertType.OVERADVANCE)
    assert events == []  # the repay amount grew by less than 10 %
    _, events = step(latest, findings(facility(65_000.0), lots), AlertType.OVERADVANCE)
    assert [type(e) for e in events] == [PledgeAlertEscalated]
    assert events[0].alert.evidence["repay_needed"] == pytest.approx(65_000.0 - 58_800.0)


def test_overadvance_where_the_line_binds_asks_for_cash_only() -> None:
    fac = facility(55_000.0, line=50_000.0)
    over = findings(fac, [lot("wh", 1_000_000.0)])[AlertType.OVERADVANCE]
    assert over.signal is Signal.RAISE
    assert over.evidence["binding"] == "line" and over.evidence["top_up_needed"] is None
    assert "collateral" not in over.message


@pytest.mark.parametrize(("drawn", "signal"), [
    (0.0, Signal.CLEAR), (58_800.0, Signal.CLEAR), (59_000.0, Signal.HOLD),
    (60_000.0, Signal.HOLD), (60_000.009, Signal.HOLD), (60_000.02, Signal.RAISE)])
def test_overadvance_lines(drawn: float, signal: Signal) -> None:
    assert findings(facility(drawn), [lot("wh", 100_000.0)])[AlertType.OVERADVANCE].signal is signal


def test_overadvance_waits_for_the_first_readings_and_a_debt_without_collateral_is_one() -> None:
    fac = facility(10_000.0)
    assert findings(fac, [], waiting=True)[AlertType.OVERADVANCE].signal is Signal.HOLD
    over = findings(fac, [])[AlertType.OVERADVANCE]
    assert over.signal is Signal.RAISE and over.evidence["repay_needed"] == pytest.approx(10_000.0)


# --- LTV warning: the top-up ------------------------------------------------------------------------

def warning_of(outstanding: float, market: float, *, cut: float = 0.2,
               latest: Mapping[str, Alert] | None = None) -> Finding:
    return findings(facility(outstanding), [lot("wh", market, cut=cut)], latest=latest)[
        AlertType.LTV_WARNING]


def test_the_top_up_is_market_value_at_the_lots_haircut_and_the_repay_is_cash() -> None:
    warning = warning_of(76_000.0, 125_000.0)  # value 100,000 after a 20 % haircut: LTV 76 %
    ev = warning.evidence
    assert warning.signal is Signal.RAISE
    assert ev["target_ltv"] == pytest.approx(0.72)  # 75 % − 2 % hysteresis − 1 % margin
    assert ev["haircut"] == pytest.approx(0.2)
    assert ev["top_up_value"] == pytest.approx(76_000.0 / 0.72 - 100_000.0, abs=0.01)
    assert ev["top_up_needed"] == pytest.approx((76_000.0 / 0.72 - 100_000.0) / 0.8, abs=0.01)
    assert ev["repay_needed"] == pytest.approx(4_000.0)
    assert warning.magnitude == ev["top_up_needed"]
    assert f"top up {ev['top_up_needed']:,.2f} CNY" in warning.message
    assert "repay 4,000.00 CNY" in warning.message


def test_paying_the_stated_top_up_or_repay_clears_the_warning_with_margin() -> None:
    latest = apply_events({}, reconcile({}, [warning_of(76_000.0, 125_000.0)], NOW))
    ev = next(iter(latest.values())).evidence
    # goods of the stated market value, at the same haircut, added to the facility
    topped = findings(facility(76_000.0),
                      [lot("wh", 125_000.0, cut=0.2), lot("new", ev["top_up_needed"], cut=0.2)],
                      latest=latest)[AlertType.LTV_WARNING]
    assert topped.evidence["ltv"] <= 0.72 + 1e-9
    assert topped.signal is Signal.CLEAR
    assert [type(e) for e in reconcile(latest, [topped], NOW)] == [PledgeAlertResolved]
    repaid = warning_of(76_000.0 - ev["repay_needed"], 125_000.0, latest=latest)
    assert repaid.signal is Signal.CLEAR
    # what the old figure asked for (collateral up to the warning line itself) does not clear
    onto_the_line = warning_of(75_000.0, 125_000.0, latest=latest)
    assert onto_the_line.signal is Signal.RAISE


def test_the_top_up_is_recomputed_and_the_alert_escalated_as_ltv_worsens() -> None:
    latest = apply_events({}, reconcile({}, [warning_of(76_000.0, 125_000.0)], NOW))
    first = next(iter(latest.values()))
    assert reconcile(latest, [warning_of(76_100.0, 125_000.0, latest=latest)], NOW) == []  # +2.5 %
    worse = warning_of(82_000.0, 125_000.0, latest=latest)  # LTV 82 %: the price fell
    events = reconcile(latest, [worse], NOW)
    assert [type(e) for e in events] == [PledgeAlertEscalated]
    escalated = events[0].alert
    assert escalated.evidence["top_up_needed"] > first.evidence["top_up_needed"] * 1.1
    assert escalated.evidence["repay_needed"] == pytest.approx(82_000.0 - 72_000.0)
    assert f"{escalated.evidence['top_up_needed']:,.2f}" in escalated.message
    assert escalated.cure_deadline == first.cure_deadline  # the clock is not reset


def test_the_cure_figures_survive_hostile_terms_and_amounts() -> None:
    total = warning_of(1e15, 1e3, cut=1.0)  # a 100 % haircut: no goods can cure it
    assert total.evidence["top_up_needed"] is None and "top up" not in total.message
    assert total.evidence["repay_needed"] == pytest.approx(1e15)
    none = findings(facility(10_000.0), [])[AlertType.LTV_WARNING]  # debt, no collateral
    assert none.evidence["ltv"] is None
    assert none.evidence["top_up_value"] == pytest.approx(10_000.0 / 0.72, abs=0.01)
    assert none.evidence["repay_needed"] == pytest.approx(10_000.0)
    tight = ProductTerms(warning_ltv=0.02, liquidation_ltv=0.5, ltv_hysteresis=0.02)
    at_zero = findings(facility(5_000.0, terms=tight), [lot("wh", 100.0)])[AlertType.LTV_WARNING]
    assert at_zero.evidence["top_up_needed"] is None  # the cure target is below 0: repay it all
    assert at_zero.evidence["repay_needed"] == pytest.approx(5_000.0)
    for f in findings(facility(0.0), [lot("wh", 1e300)]).values():
        assert f.signal in (Signal.CLEAR, Signal.HOLD)


# --- sales by closed day ---------------------------------------------------------------------------

LAST_CLOSED = last_closed_day(NOW, 8.0, POLICY.sales_close_grace)


def noon(day: date) -> datetime:
    """Noon at the sites on ``day``, in UTC."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC) - LOCAL


def daily(n: int, *, end: date = LAST_CLOSED, base: float = 10_000.0) -> list[Sale]:
    """``n`` days of steady sales (±4 %) up to ``end``."""
    return [Sale(noon(end - timedelta(days=n - 1 - i)), base * (1 + 0.04 * ((i * 7) % 5 - 2) / 2))
            for i in range(n)]


def sales_finding_of(sales: Sequence[Sale], *, now: datetime = NOW,
                     latest: Mapping[str, Alert] | None = None,
                     policy: RulePolicy = POLICY) -> Finding:
    return findings(facility(0.0), [], now=now, sales=sales, latest=latest, policy=policy)[
        AlertType.SALES_COLLAPSE]


def test_the_last_closed_day_waits_for_the_grace_period() -> None:
    assert date(2024, 2, 29) == LAST_CLOSED  # 1 March 20:00 at the sites: 29 Feb is closed
    early = datetime(2024, 2, 29, 18, 30, tzinfo=UTC)  # 1 March 02:30 at the sites
    assert last_closed_day(early, 8.0, timedelta(hours=4)) == date(2024, 2, 28)
    assert last_closed_day(early, 8.0, timedelta(0)) == date(2024, 2, 29)


def test_a_day_without_sales_is_a_zero_and_a_three_day_stop_raises() -> None:
    history = daily(30, end=LAST_CLOSED - timedelta(days=3))
    days = closed_days(history, NOW, days=30, utc_offset_hours=8.0,
                       close_grace=POLICY.sales_close_grace, settle=POLICY.sales_settle)
    assert days.totals[-3:] == (0.0, 0.0, 0.0) and len(days.totals) == 30
    stop = sales_finding_of(history)
    assert stop.signal is Signal.RAISE
    assert stop.evidence["velocity"][-1] == 0.0 and stop.evidence["robust_z"] < -3.5
    assert stop.evidence["last_closed_day"] == LAST_CLOSED.isoformat()
    assert sales_finding_of(daily(30)).signal is Signal.CLEAR


def test_todays_first_invoice_is_not_judged_until_the_day_closes() -> None:
    today = LAST_CLOSED + timedelta(days=1)
    small = [*daily(30), Sale(noon(today) - timedelta(hours=3), 300.0)]  # 09:00: one invoice
    assert sales_finding_of(small).signal is Signal.CLEAR
    days = closed_days(small, NOW, days=30, utc_offset_hours=8.0,
                       close_grace=POLICY.sales_close_grace, settle=POLICY.sales_settle)
    assert days.open_total == 300.0 and days.totals[-1] != 300.0
    # closed (and past its grace), a day of 300 is judged — and it is a collapse
    closed = sales_finding_of(small, now=NOW + timedelta(days=1))
    assert closed.signal is Signal.RAISE and closed.evidence["velocity"][-1] == 300.0


def test_a_history_still_arriving_holds_and_is_judged_once_it_settles() -> None:
    loaded_at = NOW - timedelta(minutes=1)
    history = [replace(s, recorded_at=loaded_at) for s in daily(30, end=LAST_CLOSED - timedelta(days=3))]
    assert sales_finding_of(history).signal is Signal.HOLD
    assert sales_finding_of(history).evidence["loading"] is True
    later = NOW + POLICY.sales_settle
    assert sales_finding_of(history, now=later).signal is Signal.RAISE
    # a live sale of the open day is not a history load
    live = [*daily(30), Sale(NOW - timedelta(minutes=1), 500.0, NOW - timedelta(minutes=1))]
    assert sales_finding_of(live).signal is Signal.CLEAR


def load_history(invoices: Sequence[Sale], *, policy: RulePolicy = POLICY,
                 spacing: timedelta = timedelta(seconds=2)) -> tuple[list[AlertEvent], dict[str, Alert]]:
    """Post ``invoices`` one at a time (recorded ``spacing`` apart) and judge the facility after
    each, as the engine does on every NOTIFY; then once more after the load has settled."""
    latest: dict[str, Alert] = {}
    events: list[AlertEvent] = []
    posted: list[Sale] = []
    now = NOW
    for invoice in invoices:
        now += spacing
        posted.append(replace(invoice, recorded_at=now))
        found = sales_finding_of(posted, now=now, latest=latest, policy=policy)
        new = reconcile(latest, [found], now)
        latest, events = apply_events(latest, new), events + new
    settled = now + policy.sales_settle + timedelta(seconds=1)
    found = sales_finding_of(posted, now=settled, latest=latest, policy=policy)
    new = reconcile(latest, [found], settled)
    return events + new, apply_events(latest, new)


def invoices_of(days: Sequence[Sale], per_day: int = 3) -> list[Sale]:
    """Each day's sales as ``per_day`` invoices an hour apart."""
    return [Sale(s.time + timedelta(hours=k), s.amount / per_day) for s in days for k in range(per_day)]


def test_a_history_posted_invoice_by_invoice_raises_nothing() -> None:
    history = invoices_of(daily(30))
    events, _ = load_history(history)
    assert events == []
    events, _ = load_history(list(reversed(history)))
    assert events == []


def test_a_history_ending_in_a_stop_raises_one_alert_once_loaded() -> None:
    events, latest = load_history(invoices_of(daily(30, end=LAST_CLOSED - timedelta(days=3))))
    assert [type(e) for e in events] == [PledgeAlertRaised]
    assert next(iter(latest.values())).evidence["velocity"][-3:] == [0.0, 0.0, 0.0]


def test_without_the_settle_time_the_same_load_would_flap() -> None:
    # The guard is what keeps the load quiet: judged after every invoice, the days not yet posted
    # look like a stop and the alert comes and goes.
    eager = replace(POLICY, sales_settle=timedelta(0))
    events, _ = load_history(invoices_of(daily(30)), policy=eager)
    assert sum(isinstance(e, PledgeAlertRaised) for e in events) >= 1
    assert sum(isinstance(e, PledgeAlertResolved) for e in events) >= 1


def test_a_stop_that_fills_the_history_keeps_its_alert_until_sales_return() -> None:
    history = daily(30, end=LAST_CLOSED - timedelta(days=3))
    latest = apply_events({}, reconcile({}, [sales_finding_of(history)], NOW))
    for days_later in (10, 20, 40):  # zeros become most of the window, then all of it
        later = NOW + timedelta(days=days_later)
        found = sales_finding_of(history, now=later, latest=latest)
        assert found.signal is (Signal.RAISE if days_later == 10 else Signal.HOLD), days_later
        assert reconcile(latest, [found], later) == []
    # judged on the window alone, twenty days of nothing have become the norm
    assert sales_finding_of(history, now=NOW + timedelta(days=20)).signal is Signal.CLEAR
    resumed = [*history, *daily(10, end=LAST_CLOSED + timedelta(days=40))]
    back = sales_finding_of(resumed, now=NOW + timedelta(days=40), latest=latest)
    assert back.signal is Signal.CLEAR
    assert [type(e) for e in reconcile(latest, [back], NOW)] == [PledgeAlertResolved]


def test_hostile_sales_never_crash() -> None:
    naive = datetime(2024, 2, 20, 4, 0, tzinfo=UTC).replace(tzinfo=None)  # taken as UTC
    hostile = [*daily(20), Sale(noon(LAST_CLOSED), math.nan), Sale(noon(LAST_CLOSED), math.inf),
               Sale(noon(LAST_CLOSED), -5_000.0), Sale(naive, 1e308), Sale(naive, 1e308)]
    found = sales_finding_of(hostile)
    assert found.signal in (Signal.CLEAR, Signal.HOLD, Signal.RAISE)
    assert all(math.isfinite(v) and v >= 0 for v in found.evidence["velocity"])
    assert sales_finding_of([]).signal is Signal.CLEAR
    assert sales_finding_of([Sale(noon(LAST_CLOSED), 0.0)]).signal is Signal.CLEAR
    nan_velocity = facility_findings(facility(0.0), snap_of(facility(0.0), []), {},
                                     [math.nan, 1.0, math.inf, -1.0] * 5, NOW, POLICY)
    assert {f.type for f in nan_velocity} >= {AlertType.SALES_COLLAPSE}
    odd = closed_days([Sale(noon(LAST_CLOSED), 10.0)], NOW, days=-3, utc_offset_hours=8.0,
                      close_grace=timedelta(0), settle=timedelta(0))
    assert odd.totals == (10.0,)
    far = [Sale(datetime.max.replace(tzinfo=UTC), 5.0), Sale(noon(LAST_CLOSED), 10.0)]
    huge = closed_days(far, NOW, days=10**12, utc_offset_hours=8.0,
                       close_grace=timedelta(0), settle=timedelta(0))
    assert huge.totals == (10.0,)


def weekdays_only(end: date, n: int = 35) -> list[Sale]:
    """A trader that invoices Monday to Friday (±4 %), over the ``n`` days up to ``end``."""
    days = [end - timedelta(days=n - 1 - i) for i in range(n)]
    return [Sale(noon(d), 10_000.0 * (1 + 0.04 * ((i * 7) % 5 - 2) / 2))
            for i, d in enumerate(days) if d.weekday() < 5]


def test_a_weekday_traders_weekend_is_not_a_collapse_but_its_stop_is() -> None:
    saturday = date(2024, 3, 2)
    at = noon(saturday + timedelta(days=1))  # Sunday noon: Saturday is the last closed day
    assert last_closed_day(at, 8.0, POLICY.sales_close_grace) == saturday
    sales = weekdays_only(saturday - timedelta(days=1))
    found = sales_finding_of(sales, now=at)
    assert found.signal is Signal.CLEAR
    assert found.evidence["idle_weekdays"] == [5, 6]
    # counted as zeros, every weekend would be a collapse
    every_day = replace(POLICY, sales_trading_day_share=0.0)
    assert sales_finding_of(sales, now=at, policy=every_day).signal is Signal.RAISE
    # Monday to Wednesday without an invoice: a stop, whatever the weekends
    wednesday = saturday + timedelta(days=4)
    stop = sales_finding_of(sales, now=noon(wednesday + timedelta(days=1)))
    assert stop.signal is Signal.RAISE
    assert stop.evidence["velocity"][-3:] == [0.0, 0.0, 0.0]
