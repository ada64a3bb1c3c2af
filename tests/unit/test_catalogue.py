"""telemetry.contract.catalogue: every metric a device may report, with a sane range."""

from __future__ import annotations

import math

import pytest

from telemetry.contract.catalogue import CATALOGUE, Metric

REQUIRED = {
    "weight_kg": "number", "rfid_count": "count", "temp_c": "number", "humidity_pct": "number",
    "door_open": "bool", "tamper": "bool", "lat": "number", "lon": "number",
    "speed_kmh": "number", "line_count": "count", "line_running": "bool", "power_v": "number",
    "camera_ok": "bool",
}


def test_required_metrics_are_present_with_their_kinds() -> None:
    assert len(REQUIRED) == 13
    missing = set(REQUIRED) - set(CATALOGUE)
    assert not missing
    for name, kind in REQUIRED.items():
        assert CATALOGUE[name].kind == kind, name


@pytest.mark.parametrize("metric", list(CATALOGUE.values()), ids=lambda m: m.name)
def test_metric_is_well_formed(metric: Metric) -> None:
    assert isinstance(metric, Metric)
    assert CATALOGUE[metric.name] is metric
    assert metric.kind in ("number", "count", "bool")
    assert math.isfinite(metric.low) and math.isfinite(metric.high)
    assert metric.low < metric.high
    assert metric.unit
    assert metric.description
    assert len(metric.name) <= 64
    assert metric.name == metric.name.strip().lower()


@pytest.mark.parametrize(
    "metric", [m for m in CATALOGUE.values() if m.kind == "bool"], ids=lambda m: m.name
)
def test_bool_metrics_range_is_zero_to_one(metric: Metric) -> None:
    assert (metric.low, metric.high) == (0, 1)


@pytest.mark.parametrize(
    "metric", [m for m in CATALOGUE.values() if m.kind == "count"], ids=lambda m: m.name
)
def test_count_metrics_have_whole_non_negative_bounds(metric: Metric) -> None:
    assert metric.low == 0
    assert float(metric.high).is_integer()
    assert metric.high < 2**53  # every count in range is exact as a float8


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("lat", -90, 90), ("lon", -180, 180), ("humidity_pct", 0, 100), ("speed_kmh", 0, 250)],
)
def test_physical_ranges(name: str, low: float, high: float) -> None:
    assert (CATALOGUE[name].low, CATALOGUE[name].high) == (low, high)


def test_metrics_are_immutable() -> None:
    with pytest.raises(AttributeError):
        CATALOGUE["temp_c"].high = 1e9  # type: ignore[misc]
