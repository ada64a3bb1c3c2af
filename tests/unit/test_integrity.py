"""Sensors that lie (lending.domain.integrity): replayed series, impossible GPS tracks, silent
trackers, doors with a frozen load cell, device clocks off from receive time, readings the gateway
refused. Pure: seeded series built here, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from numpy.typing import NDArray

from lending.domain.alerts import (
    AlertType,
    Finding,
    PledgeAlertRaised,
    Severity,
    Signal,
    apply_events,
    merge_findings,
    reconcile,
)
from lending.domain.assess import FacilityInputs, assess
from lending.domain.integrity import (
    IntegrityPolicy,
    check_integrity,
    clock_offset,
    impossible_jumps,
    replayed,
    replayed_steps,
    site_door_times,
)
from lending.domain.model import Commodity, Facility, Lot, PricePoint
from lending.domain.observation import observe
from lending.domain.quantity import Fix, History, LotObservation, Refusal

NOW = datetime(2025, 3, 1, 13, 0, tzinfo=UTC)  # 21:00 at the site (UTC+8)
STEP = timedelta(seconds=5)
POLICY = IntegrityPolicy()
UNITS = 800
UNIT_KG = 25.0
WEIGHT = UNITS * UNIT_KG


def lot(**kw: object) -> Lot:
    base: dict[str, object] = {"id": "lot-1", "facility_id": "fac-1", "commodity": "steel",
                               "declared_quantity": float(UNITS), "unit_weight_kg": UNIT_KG,
                               "registration_no": "R-1", "sensors": ("dev-1",),
                               "business_hours": (7, 19)}
    return Lot(**(base | kw))  # type: ignore[arg-type]


def times(n: int, end: datetime = NOW, step: timedelta = STEP) -> tuple[datetime, ...]:
    return tuple(end - step * (n - 1 - i) for i in range(n))


Values = Sequence[float] | NDArray[np.float64]


def load_cell(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """A load cell under steady goods: ±0.2 % (2σ) noise on a slow drift."""
    drift = np.cumsum(rng.normal(0.0, 0.5, n))
    return np.round(WEIGHT + drift + rng.normal(0.0, 0.001 * WEIGHT, n), 2)


def rfid(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """An RFID count that misses 1–2 % of the tags one read in five."""
    misses = np.where(rng.random(n) < 0.2, rng.integers(8, 17, n), 0)
    return (UNITS - misses).astype(np.float64)


def obs_of(weights: Values = (), counts: Values = (), **kw: object) -> LotObservation:
    return LotObservation(now=NOW, weight_times=times(len(weights)),
                          weight_kg=tuple(float(w) for w in weights),
                          rfid_times=times(len(counts)), rfid_count=tuple(float(c) for c in counts),
                          last_seen={"dev-1": NOW}, **kw)  # type: ignore[arg-type]


def spoofing(found: Sequence[Finding]) -> Finding:
    return next(f for f in found if f.type is AlertType.SENSOR_SPOOFING)


def finding(found: Sequence[Finding], kind: AlertType) -> Finding:
    return next(f for f in found if f.type is kind)


# --- replayed series ------------------------------------------------------------------------------

def replay_tail(values: NDArray[np.float64], length: int, lag_samples: int) -> NDArray[np.float64]:
    """The last ``length`` readings replaced by the ones ``lag_samples`` earlier, verbatim."""
    out = values.copy()
    out[-length:] = values[-length - lag_samples:-lag_samples]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_a_replayed_weight_series_is_spoofing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = load_cell(rng, 720)  # an hour at 5 s
    true[-60:] -= 0.2 * WEIGHT  # 20 % of the goods leave ...
    reported = replay_tail(true, 60, 240)  # ... while the load cell replays 20 minutes ago
    result = check_integrity(lot(), obs_of(reported), POLICY)
    found = spoofing(result.findings)
    assert found.signal is Signal.RAISE and found.severity is Severity.CRITICAL
    assert not found.auto_resolve
    evidence = found.evidence["replayed"]["weight_kg"]
    assert evidence["correlation"] >= 0.98
    assert evidence["lag_s"] >= 600
    assert result.factors["replayed_series"] == POLICY.replay_factor


def test_a_replayed_rfid_count_is_spoofing() -> None:
    """A count that misses tags now and then moves too rarely for 30 steps to be a fingerprint:
    the recent window grows until it holds 20 moves (here about 50 readings)."""
    rng = np.random.default_rng(11)
    counts = rfid(rng, 720)
    reported = replay_tail(counts, 120, 300)
    found = spoofing(check_integrity(lot(), obs_of(counts=reported), POLICY).findings)
    assert found.signal is Signal.RAISE
    assert set(found.evidence["replayed"]) == {"rfid_count"}
    assert found.evidence["replayed"]["rfid_count"]["samples"] > POLICY.replay_samples


def test_an_hour_old_recording_is_found_in_the_longer_history() -> None:
    """From 10:00 the load cell replays its readings of 08:30–09:30: 90 minutes back, further than
    the hour of the engine's window, within the three hours of its compact history."""
    rng = np.random.default_rng(21)
    n, window = 2160, 720  # three hours and one hour at 5 s
    true = load_cell(rng, n)
    reported = true.copy()
    reported[-60:] = true[-60 - 1080:-1080]  # the last 5 minutes replay 90 minutes back
    stamps = times(n)
    recent = obs_of(reported[-window:])
    assert spoofing(check_integrity(lot(), recent, POLICY).findings).signal is Signal.CLEAR
    history = History(np.asarray([t.timestamp() for t in stamps]), reported)
    found = spoofing(check_integrity(lot(), replace(recent, weight_history=history),
                                     POLICY).findings)
    assert found.signal is Signal.RAISE
    assert found.evidence["replayed"]["weight_kg"]["lag_s"] == pytest.approx(5400, abs=10)


@pytest.mark.parametrize("seed", range(3))
def test_a_day_of_normal_noise_on_three_hours_of_history_is_no_replay(seed: int) -> None:
    """Checked every 5 minutes over a day, against three hours of history each time: a load cell
    with ±0.2 % noise and an RFID count missing 1–2 % of its tags one read in five."""
    rng = np.random.default_rng(500 + seed)
    n = 17_280  # 24 h at 5 s
    seconds = NOW.timestamp() + 5.0 * np.arange(n) + rng.uniform(0.0, 0.5, n)
    weights, counts = load_cell(rng, n), rfid(rng, n)
    for end in range(400, n, 60):
        lo = max(0, end - 2160)
        assert replayed_steps(seconds[lo:end], weights[lo:end], POLICY) is None, end
        assert replayed_steps(seconds[lo:end], counts[lo:end], POLICY) is None, end


@pytest.mark.parametrize("seed", range(5))
def test_two_real_moves_of_the_same_size_are_no_replay(seed: int) -> None:
    """Two loads of 100 units leaving 45 minutes apart, a reading every 30 s: each window is
    dominated by one big step, which alone would correlate at 0.999. A replay repeats the noise
    between moves, so the moves are clipped before matching."""
    rng = np.random.default_rng(2000 + seed)
    n = 200  # 100 minutes at 30 s
    seconds = NOW.timestamp() + 30.0 * np.arange(n)
    weights = 25_000.0 + rng.normal(0.0, 25.0, n)
    weights[100:] -= 2_500.0  # 100 units of 25 kg at minute 50
    weights[190:] -= 2_500.0  # and 100 more 45 minutes later, in the window just judged
    assert replayed_steps(seconds, weights, POLICY) is None
    unclipped = replace(POLICY, replay_step_clip=math.inf)
    assert replayed_steps(seconds, weights, unclipped) is not None  # what the clip prevents


@pytest.mark.parametrize("seed", range(30))
def test_normal_noise_is_not_a_replay(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    result = check_integrity(lot(), obs_of(load_cell(rng, 720), rfid(rng, 720)), POLICY)
    assert spoofing(result.findings).signal is Signal.CLEAR
    assert result.factors == {}


def test_a_replay_too_recent_or_too_short_is_not_judged() -> None:
    rng = np.random.default_rng(3)
    values = load_cell(rng, 720)
    recent_copy = replay_tail(values, 60, 60)  # five minutes back: under the 10-minute lag
    assert replayed(times(720), recent_copy.tolist(), POLICY) is None
    assert replayed(times(50), values[:50].tolist(), POLICY) is None  # not enough history


def test_a_periodic_pattern_is_no_fingerprint() -> None:
    """An RFID reader that misses the same tags every fifth read repeats itself everywhere:
    matching its own past proves nothing."""
    counts = np.array([UNITS - (8 if i % 5 == 0 else 0) for i in range(720)], dtype=float)
    assert replayed(times(720), counts.tolist(), POLICY) is None


def test_a_flat_or_barely_moving_series_is_left_to_the_flatline_rule() -> None:
    assert replayed(times(720), [WEIGHT] * 720, POLICY) is None
    barely = [WEIGHT + (1.0 if i % 97 == 0 else 0.0) for i in range(720)]
    assert replayed(times(720), barely, POLICY) is None


# --- GPS ------------------------------------------------------------------------------------------

def route(n: int, rng: np.random.Generator, speed_kmh: float = 60.0, jitter_m: float = 30.0
          ) -> list[Fix]:
    """A truck driving north at ``speed_kmh`` with GPS jitter of up to ``jitter_m``."""
    fixes = []
    for i, t in enumerate(times(n)):
        north_km = speed_kmh * i * STEP.total_seconds() / 3600.0
        jitter = rng.uniform(-jitter_m, jitter_m, 2) / 111_000.0
        fixes.append(Fix(t, t, 31.2 + north_km / 111.0 + jitter[0], 121.4 + jitter[1], speed_kmh))
    return fixes


@pytest.mark.parametrize("seed", range(10))
def test_gps_jitter_of_tens_of_metres_is_not_a_jump(seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert impossible_jumps(route(120, rng), POLICY) == []
    parked = route(120, rng, speed_kmh=0.0, jitter_m=30.0)
    assert impossible_jumps(parked, POLICY) == []


def test_a_300_km_jump_in_10_seconds_is_spoofing() -> None:
    rng = np.random.default_rng(5)
    track = route(60, rng)
    last = track[-1]
    jump = Fix(last.time + timedelta(seconds=10), last.time + timedelta(seconds=10),
               last.lat + 300.0 / 111.0, last.lon, 65.0)
    obs = LotObservation(now=NOW + timedelta(seconds=10), track=(*track, jump),
                         position=(jump.lat, jump.lon), position_at=jump.time,
                         last_seen={"dev-1": jump.received})
    result = check_integrity(lot(vehicle="veh-1"), obs, POLICY)
    found = spoofing(result.findings)
    assert found.signal is Signal.RAISE
    (hop,) = found.evidence["impossible_track"]
    assert hop["km"] == pytest.approx(300.0, rel=0.01)
    assert hop["seconds"] == 10.0 and hop["implied_kmh"] > 100_000
    assert result.factors["implausible_track"] == POLICY.implausible_track_factor


def test_a_fast_but_possible_hop_reported_by_the_tracker_is_not_spoofing() -> None:
    """10 km in 2 minutes is 300 km/h: above a truck, but only twice the speed the tracker reports
    (a high-speed train, a plane): not beyond the margin."""
    a = Fix(NOW - timedelta(minutes=2), NOW - timedelta(minutes=2), 31.2, 121.4, 290.0)
    b = Fix(NOW, NOW, 31.2 + 10.0 / 111.0, 121.4, 290.0)
    assert impossible_jumps([a, b], POLICY) == []
    assert impossible_jumps([a._replace(speed_kmh=60.0), b._replace(speed_kmh=60.0)],
                            POLICY) != []


def test_a_tracker_silent_while_the_device_reports_is_spoofing() -> None:
    fixed_at = NOW - timedelta(minutes=25)
    obs = LotObservation(now=NOW, position=(31.2, 121.4), position_at=fixed_at,
                         position_received={"dev-1": fixed_at}, last_seen={"dev-1": NOW})
    found = spoofing(check_integrity(lot(vehicle="veh-1"), obs, POLICY).findings)
    assert found.signal is Signal.RAISE
    assert found.evidence["position_silent"]["dev-1"]["silent_s"] == 25 * 60


def test_a_tracker_that_is_silent_altogether_is_stale_not_spoofing() -> None:
    fixed_at = NOW - timedelta(minutes=25)
    obs = LotObservation(now=NOW, position=(31.2, 121.4), position_at=fixed_at,
                         position_received={"dev-1": fixed_at}, last_seen={"dev-1": fixed_at})
    assert spoofing(check_integrity(lot(), obs, POLICY).findings).signal is Signal.CLEAR


# --- clock skew and the door rule -------------------------------------------------------------------

def live(n: int, lag: timedelta, end: datetime = NOW) -> tuple[tuple[datetime, datetime], ...]:
    """``n`` live arrivals every 5 s up to ``end`` from a device whose clock is ``lag`` behind."""
    return tuple((r - lag, r) for r in times(n, end))


def test_a_clock_hours_behind_is_a_skew() -> None:
    arrivals = live(60, timedelta(hours=2, minutes=30))
    assert clock_offset(arrivals, NOW, POLICY) == pytest.approx(9000.0)
    obs = LotObservation(now=NOW, arrivals={"dev-1": arrivals})
    result = check_integrity(lot(), obs, POLICY)
    skew = finding(result.findings, AlertType.CLOCK_SKEW)
    assert skew.signal is Signal.RAISE and skew.severity is Severity.WARNING
    assert skew.evidence["offsets_s"] == {"dev-1": pytest.approx(9000.0)}
    assert result.factors["clock_skew"] == POLICY.clock_skew_factor


def test_a_backlog_is_not_a_skew() -> None:
    """30 minutes of readings sent in one burst after an outage, then live ones: lag only comes
    from the backlog, the freshest reading shows the clock is right."""
    burst_at = NOW - timedelta(minutes=3)
    backlog = tuple((burst_at - timedelta(seconds=5 * k), burst_at) for k in range(360, 0, -1))
    arrivals = backlog + live(36, timedelta(seconds=0.3))
    assert abs(clock_offset(arrivals, NOW, POLICY) or 0.0) < 1.0
    obs = LotObservation(now=NOW, arrivals={"dev-1": arrivals})
    assert finding(check_integrity(lot(), obs, POLICY).findings,
                   AlertType.CLOCK_SKEW).signal is Signal.CLEAR


def test_a_burst_alone_proves_no_skew_either_way() -> None:
    burst = tuple((NOW - timedelta(hours=1, seconds=5 * k), NOW) for k in range(50))
    assert clock_offset(burst, NOW, POLICY) is None  # no receive-time span: too little to judge
    obs = LotObservation(now=NOW, arrivals={"dev-1": burst})
    assert finding(check_integrity(lot(), obs, POLICY).findings,
                   AlertType.CLOCK_SKEW).signal is Signal.HOLD


def test_a_clock_ahead_refused_by_the_gateway_is_a_skew() -> None:
    refused: dict[str, tuple[Refusal, ...]] = {
        "dev-1": (Refusal(NOW - timedelta(minutes=1), "ts_in_future", "ts ahead"),)}
    skew = finding(check_integrity(lot(), LotObservation(now=NOW, refused=refused),
                                   POLICY).findings, AlertType.CLOCK_SKEW)
    assert skew.signal is Signal.RAISE
    assert skew.evidence["refused"]["dev-1"][0]["reason"] == "ts_in_future"


class ArrivalFake:
    """Readings by (device, metric) with the time each arrived."""

    def __init__(self, readings: Mapping[tuple[str, str], Sequence[tuple[datetime, float, datetime]]]
                 ) -> None:
        self.readings = dict(readings)

    def get(self, device: str, metric: str) -> Sequence[tuple[datetime, float]]:
        return [(t, v) for t, v, _ in self.readings.get((device, metric), ())]

    def received(self, device: str, metric: str) -> Sequence[datetime]:
        return [r for _, _, r in self.readings.get((device, metric), ())]

    def arrivals(self, device: str) -> Sequence[tuple[datetime, datetime]]:
        pairs = {(t, r) for (d, _), rows in self.readings.items() if d == device for t, _, r in rows}
        return sorted(pairs, key=lambda p: (p[1], p[0]))


def door_case(lag: timedelta, *, door_lag: timedelta | None = None) -> FacilityInputs:
    """A warehouse lot, business hours 7–19 site time, at 21:00 site time; its device reports
    every 5 s with its clock ``lag`` behind; the door opened a minute ago (or a reading that
    arrived ``door_lag`` late, from a right clock)."""
    rng = np.random.default_rng(2)
    received = times(120)
    weights = load_cell(rng, 120)
    door_arrived = NOW - timedelta(minutes=1)
    door_time = door_arrived - (lag if door_lag is None else door_lag)
    readings = {
        ("dev-1", "weight_kg"): [(r - lag, float(w), r) for r, w in zip(received, weights, strict=True)],
        ("dev-1", "rfid_count"): [(r - lag, float(UNITS), r) for r in received],
        ("dev-1", "door_open"): [(door_time, 1.0, door_arrived)],
    }
    source = ArrivalFake(readings)
    the_lot = lot()
    obs = observe(the_lot, source, {"dev-1": (True, NOW)}, NOW, timedelta(hours=2))
    return FacilityInputs(
        facility=Facility("fac-1", "b-1", 1e6), lots=[the_lot],
        commodities={"steel": Commodity("steel", unit_kg=1000.0)}, observations={"lot-1": obs},
        prices={"steel": [PricePoint("steel", NOW - timedelta(days=d), 4000.0) for d in range(3)]})


def test_a_door_judged_by_receive_time_when_the_device_clock_is_hours_behind() -> None:
    """At 21:00 site time a device 2.5 h behind says 18:30 — inside business hours. Its door
    opening is judged by the corrected clock: out of hours, and an outbound warning."""
    inputs = door_case(timedelta(hours=2, minutes=30))
    obs = inputs.observations["lot-1"]
    assert obs.door_open_at and (obs.door_open_at[0] + timedelta(hours=8)).hour == 18
    (corrected,) = site_door_times(obs, POLICY)
    assert corrected == NOW - timedelta(minutes=1)
    result = assess(inputs, NOW)
    outbound = finding(result.findings, AlertType.UNAUTHORISED_OUTBOUND)
    assert outbound.signal is Signal.RAISE
    assert outbound.evidence["door_open_out_of_hours"] == [corrected.isoformat()]
    assert finding(result.findings, AlertType.CLOCK_SKEW).signal is Signal.RAISE
    assert result.verified["lot-1"].factors["clock_skew"] == POLICY.clock_skew_factor


def test_without_receive_times_the_skewed_door_would_hide() -> None:
    """The same readings without their arrival times (the old cache): the door reads 18:30."""
    inputs = door_case(timedelta(hours=2, minutes=30))
    obs = inputs.observations["lot-1"]
    blind = replace(obs, arrivals={}, door_open_received=(), weight_received=(), rfid_received=())
    result = assess(replace(inputs, observations={"lot-1": blind}), NOW)
    assert finding(result.findings, AlertType.UNAUTHORISED_OUTBOUND).signal is Signal.CLEAR


def test_a_backlogged_door_from_a_right_clock_is_judged_by_its_own_time() -> None:
    """A door opening from 20:00 site time that arrives an hour late (an outage): the clock is
    right, so its own time counts (out of hours), not its arrival."""
    inputs = door_case(timedelta(0), door_lag=timedelta(hours=1))
    obs = inputs.observations["lot-1"]
    assert site_door_times(obs, POLICY) == obs.door_open_at
    outbound = finding(assess(inputs, NOW).findings, AlertType.UNAUTHORISED_OUTBOUND)
    assert outbound.signal is Signal.RAISE
    assert finding(assess(inputs, NOW).findings, AlertType.CLOCK_SKEW).signal is Signal.CLEAR


def test_a_right_clock_in_business_hours_raises_nothing() -> None:
    inputs = door_case(timedelta(0))
    day = NOW - timedelta(hours=8)  # 13:00 site time
    moved = {"lot-1": replace(inputs.observations["lot-1"], now=day,
                              door_open_at=(day - timedelta(minutes=1),),
                              door_open_received=(day - timedelta(minutes=1),),
                              arrivals={})}
    result = assess(replace(inputs, observations=moved), day)
    assert finding(result.findings, AlertType.UNAUTHORISED_OUTBOUND).signal is Signal.CLEAR


# --- door with no movement ----------------------------------------------------------------------------

def test_a_door_opening_while_the_load_cell_freezes_is_spoofing() -> None:
    rng = np.random.default_rng(8)
    weights = load_cell(rng, 240)
    weights[-60:] = weights[-61]  # frozen for the last five minutes
    door = NOW - timedelta(minutes=2)
    found = spoofing(check_integrity(lot(), obs_of(weights, door_open_at=(door,)), POLICY).findings)
    assert found.signal is Signal.RAISE
    assert found.evidence["door_without_movement"][0]["door_open_at"] == door.isoformat()


def test_a_door_opening_with_goods_standing_still_is_normal() -> None:
    rng = np.random.default_rng(9)
    obs = obs_of(load_cell(rng, 240), rfid(rng, 240), door_open_at=(NOW - timedelta(minutes=2),))
    result = check_integrity(lot(), obs, POLICY)
    assert spoofing(result.findings).signal is Signal.CLEAR and result.factors == {}


def test_a_coarse_scale_that_always_reads_flat_is_no_door_spoofing() -> None:
    obs = obs_of([WEIGHT] * 240, door_open_at=(NOW - timedelta(minutes=2),))
    assert spoofing(check_integrity(lot(), obs, POLICY).findings).signal is Signal.CLEAR


# --- readings the gateway refused ------------------------------------------------------------------

def test_out_of_range_readings_refused_by_the_gateway_are_a_sensor_fault() -> None:
    refused = {"dev-1": tuple(Refusal(NOW - timedelta(minutes=m), "out_of_range",
                                      "weight_kg=-900 outside [-50, 5000000] kg") for m in (3, 2, 1))}
    result = check_integrity(lot(), obs_of(load_cell(np.random.default_rng(1), 100),
                                           refused=refused), POLICY)
    fault = finding(result.findings, AlertType.SENSOR_FAULT)
    assert fault.signal is Signal.RAISE and fault.severity is Severity.WARNING
    assert "not a theft" in fault.message
    assert len(fault.evidence["refused"]["dev-1"]) == 3
    assert result.factors["refused_readings"] == POLICY.refused_factor


def test_old_or_unrelated_refusals_are_no_fault() -> None:
    refused = {"dev-1": (Refusal(NOW - timedelta(hours=1), "out_of_range", "old"),
                         Refusal(NOW - timedelta(minutes=1), "invalid_schema", "typo")),
               "someone-else": (Refusal(NOW, "out_of_range", "not ours"),)}
    result = check_integrity(lot(), obs_of(refused=refused), POLICY)
    assert finding(result.findings, AlertType.SENSOR_FAULT).signal is Signal.CLEAR


def test_two_rules_on_one_key_merge_and_do_not_flap() -> None:
    """A load-cell fault rule that clears and the refused-readings rule that raises speak for the
    same ``sensor_fault`` key: one RAISE, raised once, held on the next pass."""
    raising = Finding(AlertType.SENSOR_FAULT, "fac-1", "lot-1", Signal.RAISE, message="refused",
                      evidence={"refused": {}})
    clearing = Finding(AlertType.SENSOR_FAULT, "fac-1", "lot-1", Signal.CLEAR)
    (merged,) = merge_findings([clearing, raising])
    assert merged.signal is Signal.RAISE
    events = reconcile({}, [clearing, raising], NOW)
    assert [type(e) for e in events] == [PledgeAlertRaised]
    latest = apply_events({}, events)
    assert reconcile(latest, [clearing, raising], NOW + timedelta(minutes=1)) == []
    other = Finding(AlertType.SENSOR_FAULT, "fac-1", "lot-1", Signal.RAISE, Severity.CRITICAL,
                    "load cell at 0", {"load_cell": 0.0}, magnitude=5.0)
    (both,) = merge_findings([raising, other])
    assert both.severity is Severity.CRITICAL and both.message.startswith("load cell at 0")
    assert set(both.evidence) == {"refused", "load_cell"} and both.magnitude == 5.0


# --- trust and hostile input --------------------------------------------------------------------------

def test_spoofing_lowers_the_limit_through_trust() -> None:
    rng = np.random.default_rng(4)
    honest = load_cell(rng, 720)
    inputs = FacilityInputs(
        facility=Facility("fac-1", "b-1", 1e7), lots=[lot(business_hours=(0, 24))],
        commodities={"steel": Commodity("steel", unit_kg=1000.0)},
        observations={"lot-1": obs_of(honest)},
        prices={"steel": [PricePoint("steel", NOW - timedelta(days=d), 4000.0) for d in range(3)]})
    before = assess(inputs, NOW)
    spoofed = assess(replace(inputs, observations={"lot-1": obs_of(replay_tail(honest, 60, 240))}),
                     NOW)
    assert spoofed.verified["lot-1"].trust == pytest.approx(before.verified["lot-1"].trust
                                                            * POLICY.replay_factor)
    assert spoofed.snapshot.limit < before.snapshot.limit * 0.2
    assert finding(spoofed.findings, AlertType.SENSOR_SPOOFING).signal is Signal.RAISE


@pytest.mark.parametrize("values", [
    [], [math.nan] * 100, [math.inf, -math.inf] * 60, [1e308, -1e308] * 400,
    [-5.0] * 720, list(np.linspace(-1e12, 1e12, 720)),
    [math.nan if i % 7 == 0 else WEIGHT + i % 5 for i in range(720)],
])
def test_hostile_series_never_crash(values: list[float]) -> None:
    obs = obs_of(values, values, door_open_at=(NOW - timedelta(minutes=1),))
    result = check_integrity(lot(), obs, POLICY)
    assert {f.type for f in result.findings} == {AlertType.CLOCK_SKEW, AlertType.SENSOR_SPOOFING,
                                                 AlertType.SENSOR_FAULT}
    assert all(0.0 <= v <= 1.0 for v in result.factors.values())


def test_hostile_tracks_and_clocks_never_crash() -> None:
    t = NOW
    track = (Fix(t, t, math.nan, 121.0), Fix(t, t, 1e9, -1e9), Fix(t, t, 31.0, 121.0, math.nan),
             Fix(t, t, 31.0, 121.0, -50.0), Fix(t, t, 32.0, 121.0, math.inf),
             Fix(t - timedelta(seconds=5), t, 90.0, 180.0))
    arrivals: dict[str, tuple[tuple[datetime, datetime], ...]] = {
        "dev-1": ((datetime.min.replace(tzinfo=UTC), t), (t, t), (t, t - timedelta(days=9)))}
    obs = LotObservation(now=NOW, track=track, arrivals=arrivals, position=(math.nan, math.nan),
                         position_received={"dev-1": t}, last_seen={"dev-1": t},
                         refused={"dev-1": (Refusal(t, "", ""),)})
    result = check_integrity(lot(), obs, POLICY)
    assert len(result.findings) == 3
    # the one hop that is a real 100+ km jump at the same instant is found; the garbage is not
    assert len(spoofing(result.findings).evidence["impossible_track"]) >= 1


def test_an_empty_observation_finds_nothing() -> None:
    result = check_integrity(lot(), LotObservation(now=NOW), POLICY)
    assert {f.signal for f in result.findings} == {Signal.CLEAR}
    assert result.factors == {} and result.offsets_s == {}
