"""Delivery evidence, the pure judge (lending.domain.delivery) and the simulated delivery
(firmware_sim.delivery) that feeds it: verified, pending, contradicted, quantities outside the
tolerance, and hostile input (non-finite positions, an empty track, points out of order)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from firmware_sim.delivery import (
    DeliveryPlan,
    delivery_clock,
    delivery_scenario,
    delivery_specs,
    square_fence,
)
from firmware_sim.device_models import build_model
from firmware_sim.fleet import SimClock
from lending.domain.delivery import (
    DeliveryFacts,
    DeliveryVerdict,
    Shipment,
    TrackPoint,
    judge_delivery,
    reason_codes,
)
from lending.domain.detectors import point_in_polygon
from lending.domain.model import DomainError, ReleaseOrder, ReleaseStatus

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # the story starts; the truck leaves at T0 + 10 min
SITE = (31.20, 121.40)
DOCK = (31.25, 121.47)
UNITS = 100.0


def square(center: tuple[float, float], half: float = 0.005) -> tuple[tuple[float, float], ...]:
    lat, lon = center
    return ((lat - half, lon - half), (lat - half, lon + half), (lat + half, lon + half),
            (lat + half, lon - half))


SELLER_FENCE = square(SITE)
BUYER_FENCE = square(DOCK)
SHIPMENT = Shipment("veh-1", "lot-s", UNITS, "lot-b", T0 + timedelta(minutes=10))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def drive(depart: float = 10.0, arrive: float = 30.0, until: float = 60.0,
          start: float = 0.0, every_s: float = 30.0, stop_at: tuple[float, float] = DOCK,
          parked_speed: float | None = 0.0) -> tuple[TrackPoint, ...]:
    """Parked at the seller's site, a straight drive, parked at ``stop_at``; one fix per
    ``every_s``, a few metres of GPS jitter."""
    rng = random.Random(5)
    points = []
    m = start
    while m <= until + 1e-9:
        if m < depart:
            lat, lon, speed = SITE[0], SITE[1], parked_speed
        elif m < arrive:
            f = (m - depart) / (arrive - depart)
            lat = SITE[0] + f * (stop_at[0] - SITE[0])
            lon = SITE[1] + f * (stop_at[1] - SITE[1])
            speed = 50.0
        else:
            lat, lon, speed = stop_at[0], stop_at[1], parked_speed
        points.append(TrackPoint(at(m), lat + rng.gauss(0, 3e-5), lon + rng.gauss(0, 3e-5),
                                 speed))
        m += every_s / 60.0
    return tuple(points)


def level(before: float, after: float, change_at: float, start: float = -60.0,
          until: float = 60.0, every_s: float = 30.0) -> tuple[tuple[datetime, float], ...]:
    """A measured quantity: ``before`` until ``change_at`` (minutes), ``after`` from then on,
    with a little load-cell noise."""
    rng = random.Random(7)
    out = []
    m = start
    while m <= until + 1e-9:
        out.append((at(m), (before if m < change_at else after) + rng.gauss(0, 0.1)))
        m += every_s / 60.0
    return tuple(out)


def executed(release_id: str = "r1", quantity: float = UNITS, minutes: float = 8.0,
             lot_id: str = "lot-s") -> ReleaseOrder:
    return ReleaseOrder(release_id, lot_id, quantity, ReleaseStatus.EXECUTED,
                        requested_at=at(-30), approved_at=at(-20), executed_at=at(minutes))


def facts(**changes: object) -> DeliveryFacts:
    base = DeliveryFacts(
        window_start=at(-60), window_end=at(60), track=drive(),
        seller_geofence=SELLER_FENCE, buyer_geofence=BUYER_FENCE, releases=(executed(),),
        seller_quantity=level(800, 700, 8.0), buyer_quantity=level(200, 300, 35.0),
        devices=("veh-1",))
    return replace(base, **changes)  # type: ignore[arg-type]


def judge(f: DeliveryFacts, now: datetime | None = None, shipment: Shipment = SHIPMENT,
          **options: Any) -> DeliveryVerdict:
    verdict = judge_delivery(shipment, f, now or at(60), **options)
    json.dumps(verdict.evidence, allow_nan=False)  # the evidence is plain JSON
    return verdict


# --- verified ---------------------------------------------------------------------------------

def test_a_delivery_the_sensors_saw_is_verified_with_its_evidence() -> None:
    verdict = judge(facts())
    assert verdict.status == "verified", verdict.reasons
    assert reason_codes(verdict) == ("arrived_and_stopped", "release_matched", "seller_fell",
                                     "buyer_rose")
    ev = verdict.evidence
    arrival = ev["arrival"]
    assert at(29) <= datetime.fromisoformat(arrival["entered_at"]) <= at(30.5)
    assert point_in_polygon(arrival["lat"], arrival["lon"], BUYER_FENCE)
    assert arrival["stop_minutes"] >= 25
    assert ev["departure"]["left_seller_at"] is not None
    assert ev["matched_releases"] == ["r1"] and ev["released_quantity"] == UNITS
    assert ev["seller"]["drop"] == pytest.approx(UNITS, abs=1)
    assert ev["buyer"]["rise"] == pytest.approx(UNITS, abs=1)
    assert ev["tolerances"]["quantity_share"] == 0.05
    assert ev["tolerances"]["quantity_units"] == pytest.approx(5.0)
    assert all(ev["checks"].values())


def test_a_quantity_just_inside_the_tolerance_is_verified_and_two_releases_may_make_it_up() -> None:
    near = facts(releases=(executed(quantity=96.0),), seller_quantity=level(800, 704, 8.0),
                 buyer_quantity=level(200, 296, 35.0))
    assert judge(near).status == "verified"
    split = facts(releases=(executed("r1", 60.0, 5.0), executed("r2", 40.0, 8.0)))
    verdict = judge(split)
    assert verdict.status == "verified", verdict.reasons
    assert verdict.evidence["matched_releases"] == ["r1", "r2"]


# --- pending ----------------------------------------------------------------------------------

def test_a_truck_still_on_the_road_is_pending() -> None:
    f = facts(track=drive(until=20.0), buyer_quantity=level(200, 200, 0.0))
    verdict = judge(f, now=at(20))
    assert verdict.status == "pending"
    assert "not_arrived" in reason_codes(verdict)
    assert verdict.evidence["arrival"] is None
    assert verdict.evidence["checks"]["release_matched"] is True


def test_a_truck_that_drives_through_the_fence_or_stops_too_briefly_has_not_delivered() -> None:
    through = drive(until=45.0, stop_at=(31.30, 121.54))  # the dock lies on its way
    verdict = judge(facts(track=through), now=at(45))
    assert verdict.status == "pending" and "no_stop" in reason_codes(verdict)
    brief = drive(until=33.0)
    verdict = judge(facts(track=brief), now=at(33))
    assert verdict.status == "pending" and "no_stop" in reason_codes(verdict)


def test_a_truck_parked_at_the_buyer_since_before_the_shipment_did_not_arrive() -> None:
    parked = tuple(TrackPoint(at(m), DOCK[0], DOCK[1], 0.0) for m in range(-60, 61))
    verdict = judge(facts(track=parked))
    assert verdict.status == "pending"
    assert "not_arrived" in reason_codes(verdict)


def test_nothing_is_contradicted_before_the_deadline_when_the_truck_has_not_left_yet() -> None:
    idle = tuple(TrackPoint(at(m), SITE[0], SITE[1], 0.0) for m in range(-60, 61))
    verdict = judge(facts(track=idle, releases=(), seller_quantity=level(800, 800, 0.0)))
    assert verdict.status == "pending"
    assert {"not_arrived", "no_executed_release"} <= set(reason_codes(verdict))
    assert verdict.evidence["never_left"] is False  # the track does not reach the deadline yet


def test_a_shipment_dated_after_now_is_pending() -> None:
    verdict = judge(facts(), now=at(5))
    assert verdict.status == "pending"
    assert "not_shipped_yet" in reason_codes(verdict)


# --- contradicted -----------------------------------------------------------------------------

def test_a_truck_that_never_left_the_sellers_site_is_contradicted_after_the_deadline() -> None:
    idle = tuple(TrackPoint(at(m), SITE[0] + 1e-5 * (m % 3), SITE[1], 0.0)
                 for m in range(-60, 301, 2))
    f = facts(track=idle, window_end=at(300), seller_quantity=level(800, 800, 0.0, until=300),
              buyer_quantity=level(200, 200, 0.0, until=300), releases=())
    verdict = judge(f, now=at(300), deadline_hours=4.0)
    assert verdict.status == "contradicted", verdict.reasons
    assert reason_codes(verdict)[:2] == ("never_left", "goods_never_moved")
    assert verdict.evidence["never_left"] is True
    # The same facts a minute before the deadline: not yet.
    assert judge(f, now=at(10 + 239), deadline_hours=4.0).status == "pending"


def test_never_left_needs_a_track_that_covers_the_window() -> None:
    silent = tuple(TrackPoint(at(m), SITE[0], SITE[1], 0.0) for m in range(-60, 20))
    f = facts(track=silent, window_end=at(300), releases=(),
              seller_quantity=level(800, 800, 0.0, until=20))
    verdict = judge(f, now=at(300), deadline_hours=4.0)
    assert "never_left" not in reason_codes(verdict)
    assert verdict.evidence["never_left"] is False


def test_a_truck_that_arrives_while_the_goods_never_moved_is_contradicted_at_once() -> None:
    f = facts(releases=(), seller_quantity=level(800, 800, 0.0),
              buyer_quantity=level(200, 200, 0.0))
    verdict = judge(f)  # long before the deadline
    assert verdict.status == "contradicted", verdict.reasons
    assert reason_codes(verdict)[0] == "goods_never_moved"
    assert verdict.evidence["checks"]["arrived_and_stopped"] is True


def test_goods_that_left_without_a_release_are_not_a_verified_delivery() -> None:
    verdict = judge(facts(releases=()))
    assert verdict.status == "pending"
    assert reason_codes(verdict) == ("no_executed_release",)


# --- quantities -------------------------------------------------------------------------------

def mismatched() -> DeliveryFacts:
    return facts(releases=(executed(quantity=60.0),), seller_quantity=level(800, 740, 8.0),
                 buyer_quantity=level(200, 260, 35.0), window_end=at(600))


def test_a_quantity_outside_the_tolerance_waits_for_an_officer_until_the_deadline() -> None:
    verdict = judge(mismatched())
    assert verdict.status == "pending"
    assert {"quantity_mismatch", "seller_drop_mismatch", "buyer_rise_mismatch"} <= set(
        reason_codes(verdict))
    assert verdict.evidence["seller"]["drop"] == pytest.approx(60, abs=1)


def test_a_quantity_outside_the_tolerance_is_contradicted_after_the_deadline() -> None:
    verdict = judge(mismatched(), now=at(600), deadline_hours=2.0)
    assert verdict.status == "contradicted", verdict.reasons
    assert reason_codes(verdict)[0] == "quantity_mismatch"


def test_a_wider_tolerance_accepts_what_a_narrow_one_refuses() -> None:
    f = facts(releases=(executed(quantity=92.0),), seller_quantity=level(800, 708, 8.0),
              buyer_quantity=level(200, 292, 35.0))
    assert judge(f).status == "pending"
    assert judge(f, tolerance=0.1).status == "verified"


def test_the_buyer_rise_must_come_after_the_arrival() -> None:
    early = facts(buyer_quantity=level(200, 300, -30.0))  # rose before the truck was there
    verdict = judge(early)
    assert verdict.status == "pending"
    assert "buyer_rise_mismatch" in reason_codes(verdict)


def test_releases_of_other_lots_or_not_executed_do_not_count() -> None:
    other = executed(lot_id="lot-x")
    approved = ReleaseOrder("r2", "lot-s", UNITS, ReleaseStatus.APPROVED, approved_at=at(5))
    verdict = judge(facts(releases=(other, approved)))
    assert verdict.status == "pending"
    assert "no_executed_release" in reason_codes(verdict)


# --- hostile input ----------------------------------------------------------------------------

def test_non_finite_and_impossible_positions_are_dropped_and_counted() -> None:
    bad = (TrackPoint(at(31), math.nan, DOCK[1], 0.0), TrackPoint(at(32), DOCK[0], math.inf, 0.0),
           TrackPoint(at(33), 1e308, DOCK[1], 0.0), TrackPoint(at(34), 95.0, DOCK[1], 0.0),
           TrackPoint(at(35), DOCK[0], DOCK[1], math.nan),
           TrackPoint(at(36), DOCK[0], DOCK[1], -math.inf))
    verdict = judge(facts(track=drive() + bad))
    assert verdict.status == "verified", verdict.reasons
    assert verdict.evidence["track"]["dropped"] == 4


def test_an_empty_track_is_pending_not_an_error() -> None:
    verdict = judge(facts(track=()))
    assert verdict.status == "pending"
    assert "no_track" in reason_codes(verdict)
    assert verdict.evidence["track"]["points"] == 0
    assert judge(facts(track=(), seller_quantity=(), buyer_quantity=(), releases=())).status == (
        "pending")


def test_points_out_of_order_give_the_same_verdict() -> None:
    track = list(drive())
    random.Random(3).shuffle(track)
    seller = list(level(800, 700, 8.0))
    random.Random(4).shuffle(seller)
    ordered = judge(facts())
    shuffled = judge(facts(track=tuple(track), seller_quantity=tuple(seller)))
    assert shuffled.status == "verified"
    assert shuffled.evidence == ordered.evidence


def test_non_finite_quantities_naive_times_and_unusable_fences_do_not_crash() -> None:
    noisy = (*level(800, 700, 8.0), (at(1), math.nan), (at(2), math.inf), (at(3), -math.inf))
    verdict = judge(facts(seller_quantity=noisy))
    assert verdict.status == "verified", verdict.reasons
    naive = tuple(TrackPoint(p.time.replace(tzinfo=None), p.lat, p.lon, p.speed_kmh)
                  for p in drive())
    assert judge(facts(track=naive)).status == "verified"
    for fence in (((31.0, 121.0), (31.1, 121.1)), ((math.nan, 1.0), (2.0, 3.0), (4.0, 5.0))):
        verdict = judge(facts(buyer_geofence=fence))
        assert verdict.status == "pending"
        assert "buyer_geofence_unknown" in reason_codes(verdict)


def test_a_teleporting_tracker_proves_nothing() -> None:
    track = list(drive())
    track[50] = TrackPoint(track[50].time, 39.9, 116.4, 50.0)  # Beijing for thirty seconds
    verdict = judge(facts(track=tuple(track)))
    assert verdict.status == "pending"
    assert "impossible_track" in reason_codes(verdict)
    assert verdict.evidence["impossible_track"]


@pytest.mark.parametrize("changes", [
    {"quantity": 0.0}, {"quantity": -5.0}, {"quantity": math.nan}, {"quantity": math.inf},
    {"shipped_at": datetime(2026, 3, 2, 8, 10)},  # noqa: DTZ001 - a naive time is refused
    {"buyer_lot_id": "lot-s"}, {"vehicle": " "},
])
def test_a_shipment_refuses_nonsense(changes: dict[str, object]) -> None:
    with pytest.raises(DomainError):
        replace(SHIPMENT, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", [{"tolerance": -0.1}, {"tolerance": math.nan},
                                    {"stop_minutes": -1.0}, {"deadline_hours": math.inf}])
def test_the_judge_refuses_nonsense_tolerances(option: dict[str, Any]) -> None:
    with pytest.raises(DomainError):
        judge_delivery(SHIPMENT, facts(), at(60), **option)


# --- the simulated delivery ------------------------------------------------------------------

def play(plan: DeliveryPlan, step_s: float = 15.0) -> tuple[DeliveryFacts, SimClock]:
    """The three devices' readings (models + the delivery scenario, no broker) as the store would
    give them back: positions of the truck, the lots' weights in units."""
    clock = SimClock(int(T0.timestamp() * 1000), 1.0, plan.span_s)
    specs = delivery_specs("t", plan, truck="veh-1", seller="wh-s", buyer="wh-b")
    track: list[TrackPoint] = []
    lots: dict[str, list[tuple[datetime, float]]] = {"wh-s": [], "wh-b": []}
    for spec in specs:
        model, scenario = build_model(spec), delivery_scenario(spec)
        t_s, step = 0.0, 0
        while t_s <= plan.span_s:
            readings = scenario.apply(step, t_s, model.step(step_s))
            time = T0 + timedelta(seconds=t_s)
            if spec.kind == "vehicle":
                track.append(TrackPoint(time, float(readings["lat"]), float(readings["lon"]),
                                        float(readings["speed_kmh"])))
            else:
                lots[spec.device_id].append((time, float(readings["weight_kg"]) / 25.0))
            t_s, step = t_s + step_s, step + 1
    times = plan.timeline(clock)
    f = DeliveryFacts(window_start=T0 - timedelta(hours=3), window_end=times.end,
                      track=tuple(track), seller_geofence=square(plan.origin),
                      buyer_geofence=square(plan.destination),
                      releases=(ReleaseOrder("r1", "lot-s", UNITS, ReleaseStatus.EXECUTED,
                                             executed_at=times.departure),)
                      if not plan.never_leaves else (),
                      seller_quantity=tuple(lots["wh-s"]), buyer_quantity=tuple(lots["wh-b"]))
    return f, clock


def test_the_simulated_truck_drives_at_a_truck_speed_and_stops_inside_the_buyers_fence() -> None:
    plan = DeliveryPlan(origin=SITE, destination=DOCK, units=int(UNITS))
    assert 8 < plan.distance_km < 10
    assert plan.arrival_s - plan.depart_s == pytest.approx(plan.distance_km / 50 * 3600)
    f, _ = play(plan)
    moving = [p.speed_kmh for p in f.track if p.speed_kmh]
    assert moving and 35 < sum(moving) / len(moving) < 65
    last = f.track[-1]
    assert last.speed_kmh == 0.0 and point_in_polygon(last.lat, last.lon, square(DOCK))
    assert point_in_polygon(f.track[0].lat, f.track[0].lon, square(SITE))


def test_the_simulated_delivery_is_verified_and_the_phantom_one_contradicted() -> None:
    plan = DeliveryPlan(origin=SITE, destination=DOCK, units=int(UNITS))
    f, clock = play(plan)
    times = plan.timeline(clock)
    shipment = Shipment("veh-1", "lot-s", UNITS, "lot-b", times.departure)
    verdict = judge_delivery(shipment, f, times.end)
    assert verdict.status == "verified", verdict.reasons
    phantom, _ = play(replace(plan, never_leaves=True))
    flagged = judge_delivery(shipment, phantom, times.end, deadline_hours=0.25)
    assert flagged.status == "contradicted", flagged.reasons
    assert {"never_left", "goods_never_moved"} <= set(reason_codes(flagged))


def test_a_compressed_delivery_clock_never_dates_a_reading_in_the_future() -> None:
    plan = DeliveryPlan(origin=SITE, destination=DOCK)
    now = T0
    clock = delivery_clock(plan, speed=300.0, now=now)
    real_s = plan.span_s / clock.speed
    assert clock.start_ms / 1000 + plan.span_s == pytest.approx(now.timestamp() + real_s)
    for r in (0.0, real_s / 2, real_s):  # simulated time at real time r is r × speed
        assert clock.start_ms / 1000 + r * clock.speed <= now.timestamp() + r + 1e-6
    assert delivery_clock(plan, now=now).start_ms == int(now.timestamp() * 1000)
    with pytest.raises(ValueError, match="speed"):
        delivery_clock(plan, speed=0.5)


@pytest.mark.parametrize("changes", [{"units": 0}, {"cruise_kmh": 500.0},
                                     {"destination": (math.nan, 1.0)}, {"load_s": 900.0},
                                     {"depart_s": -1.0}])
def test_a_delivery_plan_refuses_nonsense(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="delivery"):
        DeliveryPlan(**({"origin": SITE, "destination": DOCK} | changes))  # type: ignore[arg-type]


def test_a_square_fence_holds_its_centre_and_not_what_lies_a_kilometre_away() -> None:
    fence = square_fence(DOCK, 300.0)
    assert point_in_polygon(DOCK[0], DOCK[1], fence)
    assert point_in_polygon(DOCK[0] + 0.0025, DOCK[1] + 0.003, fence)  # ~280 m north, east
    assert not point_in_polygon(DOCK[0] + 0.009, DOCK[1], fence)  # 1 km north
    assert not point_in_polygon(DOCK[0], DOCK[1] + 0.0106, fence)  # 1 km east
    with pytest.raises(ValueError):
        square_fence(DOCK, 0.0)
