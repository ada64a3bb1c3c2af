"""Unit tests of the incident scenarios and the commodity price series (pure; their CSV form is
tests/unit/test_price_file.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.device_models import DeviceKind, DeviceSpec, Readings, build_model, make_device
from firmware_sim.market import PRICE_SCENARIOS, PriceTick, price_series, scenario_series
from firmware_sim.scenarios import SCENARIOS, make_scenario
from lending.domain.model import PricePoint
from pledgewatch.demo_portfolio import price_points
from telemetry.contract.catalogue import CATALOGUE

INCIDENT_NAMES = ("theft", "leak", "tamper", "swap", "geofence", "coldchain", "release")
WAREHOUSE_ONLY = ("theft", "leak", "tamper", "swap", "release")
UNITS = 1000
UNIT_KG = 25.0
ROUTE = [[31.0, 121.0], [31.2, 121.3], [31.1, 121.5]]
START = datetime(2024, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    """One step: the simulated time, what the model said and what the scenario made of it."""

    t_s: float
    model: Readings
    out: Readings


def warehouse(**parameters: Any) -> DeviceSpec:
    return DeviceSpec(
        "acme", "wh-0001", "warehouse", 42, {"units": UNITS, "unit_weight_kg": UNIT_KG, **parameters}
    )


def vehicle(**parameters: Any) -> DeviceSpec:
    return DeviceSpec("acme", "veh-0001", "vehicle", 43, {"route": ROUTE, **parameters})


def line() -> DeviceSpec:
    return DeviceSpec("acme", "line-0001", "line", 44, {})


def drive(name: str, spec: DeviceSpec, steps: int = 120, dt_s: float = 1.0) -> list[Sample]:
    """Run ``spec``'s model for ``steps`` steps through scenario ``name``, as the fleet does."""
    model, scenario = build_model(spec), make_scenario(name, spec)
    samples = []
    for step in range(steps):
        readings = model.step(dt_s)
        out = scenario.apply(step, step * dt_s, dict(readings))
        samples.append(Sample(step * dt_s, readings, out))
    return samples


def assert_in_catalogue(readings: Readings) -> None:
    for name, value in readings.items():
        metric = CATALOGUE[name]
        if metric.kind == "bool":
            assert isinstance(value, bool), name
        elif metric.kind == "count":
            assert isinstance(value, int) and not isinstance(value, bool), name
        else:
            assert isinstance(value, float) and math.isfinite(value), name
        assert metric.low <= value <= metric.high, (name, value)


def before(samples: list[Sample], t_s: float) -> list[Sample]:
    return [s for s in samples if s.t_s < t_s]


def from_(samples: list[Sample], t_s: float) -> list[Sample]:
    return [s for s in samples if s.t_s >= t_s]


# --- registry ----------------------------------------------------------------------------------


def test_all_scenarios_are_registered_by_name() -> None:
    assert set(SCENARIOS) == {"normal", *INCIDENT_NAMES}
    for name, cls in SCENARIOS.items():
        assert cls.name == name


def test_unknown_scenario_error_lists_the_names() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'heist'") as info:
        make_scenario("heist", warehouse())
    for name in SCENARIOS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "parameter", "value"),
    [
        ("theft", "theft_fraction", 1.5),
        ("release", "release_duration_s", -1.0),
        ("leak", "leak_rate_per_s", float("nan")),
        ("swap", "swap_fraction", "lots"),
        ("geofence", "incident_at_s", -5.0),
        ("coldchain", "coldchain_excursion_c", float("inf")),
    ],
)
def test_bad_parameters_are_rejected_by_name(name: str, parameter: str, value: object) -> None:
    spec = vehicle(**{parameter: value}) if name == "geofence" else warehouse(**{parameter: value})
    with pytest.raises(ValueError, match=parameter):
        make_scenario(name, spec)


@pytest.mark.parametrize("name", ["normal", *INCIDENT_NAMES])
def test_the_input_readings_are_not_mutated(name: str) -> None:
    for spec in (warehouse(incident_at_s=0.0), vehicle(incident_at_s=0.0)):
        readings = build_model(spec).step(1.0)
        copy = dict(readings)
        make_scenario(name, spec).apply(0, 30.0, readings)
        assert readings == copy


@pytest.mark.parametrize("name", ["normal", *INCIDENT_NAMES])
def test_devices_of_other_kinds_pass_unchanged(name: str) -> None:
    others = [line()]
    if name in WAREHOUSE_ONLY:
        others.append(vehicle())
    if name == "geofence":
        others.append(warehouse())
    for spec in others:
        for sample in drive(name, spec, steps=100):
            assert sample.out == sample.model


def test_normal_changes_nothing() -> None:
    for spec in (warehouse(), vehicle(), line()):
        assert all(s.out == s.model for s in drive("normal", spec))


# --- warehouse incidents -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fraction"), [("theft", 0.3), ("release", 0.25)])
def test_removal_takes_the_fraction_through_an_open_door(name: str, fraction: float) -> None:
    samples = drive(name, warehouse())
    removed = round(fraction * UNITS)
    assert all(s.out == s.model for s in before(samples, 5.0))
    after = from_(samples, 8.0)
    for s in after:
        assert s.out["rfid_count"] == UNITS - removed
        assert s.out["weight_kg"] == pytest.approx(float(s.model["weight_kg"]) - removed * UNIT_KG, abs=0.01)
    last = after[-1]
    assert float(last.out["weight_kg"]) / float(last.model["weight_kg"]) == pytest.approx(
        1 - fraction, abs=0.01
    )
    during = [s for s in samples if 5.0 <= s.t_s < 8.0]
    assert all(s.out["door_open"] is True for s in during)
    assert [s.out["door_open"] for s in after] == [s.model["door_open"] for s in after]
    counts = [int(s.out["rfid_count"]) for s in samples]
    assert counts == sorted(counts, reverse=True)
    assert UNITS > int(during[1].out["rfid_count"]) > UNITS - removed


def test_theft_with_coarse_sampling_still_shows_the_open_door() -> None:
    samples = drive("theft", warehouse(), steps=10, dt_s=60.0)
    assert samples[0].out == samples[0].model
    assert samples[1].out["door_open"] is True
    assert samples[1].out["rfid_count"] == UNITS - 300


def test_theft_parameters_are_read_from_the_spec() -> None:
    samples = drive("theft", warehouse(incident_at_s=50.0, theft_fraction=0.5, theft_duration_s=10.0))
    assert all(s.out == s.model for s in before(samples, 50.0))
    assert all(s.out["rfid_count"] == UNITS // 2 for s in from_(samples, 60.0))


def test_leak_lowers_weight_but_not_rfid_and_is_capped() -> None:
    samples = drive("leak", warehouse(), steps=200)
    assert all(s.out == s.model for s in before(samples, 5.0))
    true_kg = UNITS * UNIT_KG
    for s in from_(samples, 5.0):
        lost = min(0.01 * (s.t_s - 5.0), 0.4) * true_kg
        assert s.out["weight_kg"] == pytest.approx(float(s.model["weight_kg"]) - lost, abs=0.01)
        assert s.out["rfid_count"] == UNITS
        assert s.out["door_open"] is False
    last = samples[-1]
    assert float(last.out["weight_kg"]) / float(last.model["weight_kg"]) == pytest.approx(0.6, abs=0.01)


def test_tamper_sets_the_switch_then_flat_lines_the_weight() -> None:
    samples = drive("tamper", warehouse(), steps=60)
    pre = before(samples, 5.0)
    assert all(s.out == s.model for s in pre)
    frozen = pre[-1].out["weight_kg"]
    unplugged = [s for s in samples if 5.0 <= s.t_s < 7.0]
    assert unplugged and all(s.out["tamper"] is True for s in unplugged)
    assert all(float(s.out["power_v"]) < 50.0 for s in unplugged)
    later = from_(samples, 7.0)
    assert all(s.out["tamper"] is False and s.out["power_v"] == s.model["power_v"] for s in later)
    assert {s.out["weight_kg"] for s in from_(samples, 5.0)} == {frozen}
    assert len({s.model["weight_kg"] for s in later}) > 1  # the model itself is not flat
    assert all(s.out["rfid_count"] == s.model["rfid_count"] == UNITS for s in samples)


def test_swap_keeps_weight_but_lowers_rfid() -> None:
    samples = drive("swap", warehouse(swap_fraction=0.3))
    assert all(s.out == s.model for s in before(samples, 5.0))
    for s in from_(samples, 5.0):
        assert s.out["weight_kg"] == s.model["weight_kg"]
        assert s.out["rfid_count"] == UNITS - 300


# --- vehicles and climate ------------------------------------------------------------------------


def offset_deg(s: Sample) -> float:
    return math.hypot(
        float(s.out["lat"]) - float(s.model["lat"]), float(s.out["lon"]) - float(s.model["lon"])
    )


def test_geofence_drives_the_vehicle_away_from_its_route() -> None:
    samples = drive("geofence", vehicle(), steps=120)
    assert all(s.out == s.model for s in before(samples, 5.0))
    offsets = [offset_deg(s) for s in samples]
    assert offsets == pytest.approx(sorted(offsets), abs=2e-6)
    assert all(offset_deg(s) > 0.3 for s in from_(samples, 25.0))
    assert max(offsets) == pytest.approx(1.0, abs=1e-5)
    assert all(s.out["speed_kmh"] == s.model["speed_kmh"] for s in samples)


def test_geofence_direction_is_fixed() -> None:
    samples = from_(drive("geofence", vehicle(geofence_bearing_deg=90.0), steps=40), 6.0)
    for s in samples:
        assert float(s.out["lat"]) == pytest.approx(float(s.model["lat"]), abs=1e-6)
        assert float(s.out["lon"]) > float(s.model["lon"])


@pytest.mark.parametrize("spec", [warehouse(), vehicle()], ids=["warehouse", "vehicle"])
def test_coldchain_raises_temperature_then_returns(spec: DeviceSpec) -> None:
    samples = drive("coldchain", spec, steps=120)
    assert all(s.out == s.model for s in before(samples, 5.0))
    held = [s for s in samples if 8.0 <= s.t_s <= 68.0]
    assert len(held) == 61
    for s in held:
        assert float(s.out["temp_c"]) == pytest.approx(float(s.model["temp_c"]) + 12.0, abs=0.011)
    assert 0 < float(samples[6].out["temp_c"]) - float(samples[6].model["temp_c"]) < 12.0
    assert all(s.out == s.model for s in from_(samples, 71.0))


# --- catalogue ranges ----------------------------------------------------------------------------


overrides = st.fixed_dictionaries(
    {},
    optional={
        "incident_at_s": st.floats(0.0, 30.0),
        "theft_fraction": st.floats(0.0, 1.0),
        "release_fraction": st.floats(0.0, 1.0),
        "leak_rate_per_s": st.floats(0.0, 1.0),
        "leak_max_fraction": st.floats(0.0, 1.0),
        "swap_fraction": st.floats(0.0, 1.0),
        "tamper_power_v": st.floats(-100.0, 2000.0),
        "geofence_speed_deg_per_s": st.floats(0.0, 10.0),
        "geofence_max_offset_deg": st.floats(0.0, 400.0),
        "coldchain_excursion_c": st.floats(-300.0, 300.0),
        "coldchain_duration_s": st.floats(0.0, 100.0),
        "coldchain_ramp_s": st.floats(0.0, 10.0),
    },
)
kinds: st.SearchStrategy[DeviceKind] = st.sampled_from(["warehouse", "line", "vehicle"])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(SCENARIOS)),
    kind=kinds,
    seed=st.integers(0, 2**32 - 1),
    dt_s=st.sampled_from([0.5, 1.0, 7.0]),
    extra=overrides,
)
def test_readings_stay_in_catalogue_ranges(
    name: str, kind: DeviceKind, seed: int, dt_s: float, extra: dict[str, Any]
) -> None:
    base = make_device("acme", kind, 1, seed)
    spec = DeviceSpec(base.tenant, base.device_id, kind, base.seed, {**base.parameters, **extra})
    model, scenario = build_model(spec), make_scenario(name, spec)
    for step in range(80):
        readings = model.step(dt_s)
        out = scenario.apply(step, step * dt_s, dict(readings))
        assert set(out) == set(readings)
        assert_in_catalogue(out)


# --- prices --------------------------------------------------------------------------------------


def test_price_series_is_seeded_timed_and_positive() -> None:
    a = price_series("copper", 70_000.0, start=START, points=50, step_s=600.0, volatility=0.02, seed=3)
    b = price_series("copper", 70_000.0, start=START, points=50, step_s=600.0, volatility=0.02, seed=3)
    c = price_series("copper", 70_000.0, start=START, points=50, step_s=600.0, volatility=0.02, seed=4)
    assert a == b != c
    assert len(a) == 50 and a[0].price == 70_000.0
    assert [p.time for p in a] == [START + timedelta(seconds=600 * i) for i in range(50)]
    assert all(p.time.tzinfo is UTC and p.price > 0 and p.commodity == "copper" for p in a)


def test_price_crash_falls_by_about_the_crash_fraction() -> None:
    series = price_series("rebar", 4000.0, start=START, points=40, volatility=0.005, seed=1, crash_at=20)
    fall = 1 - series[22].price / series[19].price
    assert fall == pytest.approx(0.35, abs=0.03)
    flat = price_series(
        "rebar", 4000.0, start=START, points=40, volatility=0.0, crash_at=20, crash_fraction=0.5
    )
    assert [p.price for p in flat[:20]] == [4000.0] * 20
    assert all(p.price == pytest.approx(2000.0) for p in flat[22:])
    assert 2000.0 < flat[20].price < flat[19].price


def test_price_scenarios_steady_and_crash() -> None:
    assert {"steady", "price-crash"} <= set(PRICE_SCENARIOS)
    steady = scenario_series("steady", "corn", 2500.0, start=START, points=100, seed=9)
    assert all(2000.0 < p.price < 3000.0 for p in steady)
    crash = scenario_series("price-crash", "corn", 2500.0, start=START, points=100, seed=9)
    assert crash[-1].price / crash[49].price < 0.75


def test_unknown_price_scenario_lists_the_names() -> None:
    with pytest.raises(ValueError, match=r"price-crash.*steady"):
        scenario_series("boom", "corn", 1.0, start=START)


@pytest.mark.parametrize(
    "kwargs",
    [{"points": 0}, {"step_s": 0.0}, {"volatility": -1.0}, {"crash_at": 10}, {"crash_fraction": 1.0}],
)
def test_price_series_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"start": START, "points": 10, "crash_at": 2, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        price_series("corn", 1.0, **args)


def test_price_point_rejects_naive_times_and_normalises_to_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PricePoint("corn", datetime(2024, 1, 1), 1.0)  # noqa: DTZ001 (naive on purpose)
    shanghai = timezone(timedelta(hours=8))
    point = PricePoint("corn", datetime(2024, 1, 1, 8, tzinfo=shanghai), 1.0)
    assert point.time == START.replace(month=1) and point.time.tzinfo is UTC


def test_price_series_are_simulator_ticks_that_become_domain_prices() -> None:
    ticks = price_series("copper", 70_123.45, start=START, points=3, volatility=0.03, seed=5)
    assert all(isinstance(t, PriceTick) for t in ticks)
    points = price_points(ticks)
    assert all(isinstance(p, PricePoint) for p in points)
    assert [(p.commodity, p.time, p.price, p.currency) for p in points] == [
        (t.commodity, t.time, t.price, t.currency) for t in ticks]
    later = START + timedelta(days=1)
    assert {p.time for p in price_points(ticks, at=later)} == {later}


def test_price_series_start_must_be_aware_and_is_normalised_to_utc() -> None:
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        price_series("corn", 1.0, start=datetime(2024, 3, 1))  # noqa: DTZ001 (naive on purpose)
    shanghai = timezone(timedelta(hours=8))
    ticks = price_series("corn", 1.0, start=datetime(2024, 3, 1, 8, tzinfo=shanghai), points=2)
    assert [t.time for t in ticks] == [START, START + timedelta(hours=1)]
    assert all(t.time.tzinfo is UTC for t in ticks)
