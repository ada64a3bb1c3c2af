"""Detectors: robust z, CUSUM weight drops, flat-lines, geofences, sales collapse."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lending.domain.detectors import (
    MAD_TO_SIGMA,
    ROBUST_Z_THRESHOLD,
    CusumResult,
    cusum_drop,
    is_flatline,
    point_in_polygon,
    points_in_polygon,
    robust_z,
    robust_z_scores,
    sales_collapse,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


# --- robust z ---------------------------------------------------------------------------------

def test_robust_z_uses_median_and_mad() -> None:
    history = [1.0, 2.0, 3.0, 4.0, 5.0, 1_000.0]  # median 3.5, MAD 1.5: the outlier does not move them
    assert robust_z(history, 3.5) == 0.0
    assert robust_z(history, 3.5 + 2 * MAD_TO_SIGMA * 1.5) == pytest.approx(2.0)
    assert robust_z(history, 3.5 - MAD_TO_SIGMA * 1.5) == pytest.approx(-1.0)


def test_robust_z_flags_an_outlier_that_a_plain_z_score_would_miss() -> None:
    history = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 5_000.0, 100.2]
    x = 110.0
    plain = (x - np.mean(history)) / np.std(history)
    assert abs(plain) < ROBUST_Z_THRESHOLD
    assert robust_z(history, x) > ROBUST_Z_THRESHOLD


def test_robust_z_with_zero_mad_is_finite_and_flags_any_move() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero RuntimeWarning
        assert robust_z([20_000.0] * 9, 20_000.0) == 0.0
        moved = robust_z([20_000.0] * 9, 20_000.5)
        scores = robust_z_scores([7.0, 7.0, 7.0, 8.0])
    assert math.isfinite(moved) and moved > ROBUST_Z_THRESHOLD
    assert np.all(np.isfinite(scores))
    assert scores[:3].tolist() == [0.0, 0.0, 0.0] and scores[3] > ROBUST_Z_THRESHOLD


def test_robust_z_min_scale_caps_the_score_of_a_constant_history() -> None:
    assert robust_z([10.0] * 5, 10.5, min_scale=0.25) == pytest.approx(2.0)
    # a MAD above min_scale wins
    assert robust_z([0.0, 10.0, 20.0], 20.0, min_scale=0.25) == pytest.approx(10 / (MAD_TO_SIGMA * 10))


def test_robust_z_needs_history() -> None:
    with pytest.raises(ValueError):
        robust_z([], 1.0)
    assert robust_z_scores([]).shape == (0,)


@given(st.lists(finite, min_size=1, max_size=30), st.floats(min_value=0.01, max_value=100),
       st.floats(min_value=-1e3, max_value=1e3))
def test_robust_z_scores_match_robust_z_and_are_affine_invariant(values: list[float], a: float,
                                                                 b: float) -> None:
    scores = robust_z_scores(values)
    assert scores.tolist() == [robust_z(values, v) for v in values]
    arr = np.asarray(values)
    if np.median(np.abs(arr - np.median(arr))) > 1e-3:  # away from the epsilon fallback
        moved = robust_z_scores(arr * a + b)
        np.testing.assert_allclose(moved, scores, rtol=1e-6, atol=1e-6)


# --- CUSUM --------------------------------------------------------------------------------------

def loop_cusum(values: list[float], baseline_n: int, k: float, h: float,
               min_sigma: float) -> tuple[float, int | None, float]:
    """The textbook recursion, as the reference for the vectorised version:
    (max S, first index with S > h, closest approach of S to h)."""
    window = np.asarray(values[:baseline_n])
    mu = float(np.median(window))
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(window - mu))), min_sigma)
    s, best, first, closest = 0.0, 0.0, None, math.inf
    for i in range(baseline_n, len(values)):
        s = max(0.0, s + (mu - values[i]) / sigma - k)
        best = max(best, s)
        closest = min(closest, abs(s - h))
        if first is None and s > h:
            first = i
    return best, first, closest


@given(st.lists(st.floats(min_value=0, max_value=1_000), min_size=0, max_size=60),
       st.integers(min_value=1, max_value=12), st.floats(min_value=0.1, max_value=50))
def test_cusum_matches_the_recursion(values: list[float], baseline_n: int, min_sigma: float) -> None:
    result = cusum_drop(values, baseline_n=baseline_n, min_sigma=min_sigma)
    if len(values) <= baseline_n:
        assert not result.alarm and result.index is None and result.statistic == 0.0
        return
    best, first, closest = loop_cusum(values, baseline_n, 0.5, 5.0, min_sigma)
    assert result.statistic == pytest.approx(best, rel=1e-9, abs=1e-6)
    # the two forms round differently, which matters only when S lands on h itself
    if closest > 1e-6:
        assert result.index == first
        assert result.alarm == (first is not None)
    assert result.drop >= 0.0


@settings(max_examples=40)
@given(seeds, st.integers(min_value=0, max_value=60))
def test_cusum_catches_a_sudden_30_percent_drop_at_once(seed: int, before: int) -> None:
    rng = np.random.default_rng(seed)
    noise, min_sigma = 10.0, 40.0  # load cell noise well inside the floor: no false alarm before
    weights = 20_000.0 + rng.normal(0.0, noise, size=10 + before + 30)
    drop_at = 10 + before
    weights[drop_at:] *= 0.7
    result = cusum_drop(weights, min_sigma=min_sigma)
    assert result.alarm
    assert result.index is not None and drop_at <= result.index <= drop_at + 1
    assert result.drop == pytest.approx(6_000.0, rel=0.02)
    assert result.level == pytest.approx(14_000.0, rel=0.01)
    assert result.baseline == pytest.approx(20_000.0, rel=0.005)


@settings(max_examples=40)
@given(seeds)
def test_cusum_catches_a_slow_one_percent_per_sample_leak(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noise = 200.0  # 1 % of the load: each step of the leak is only one noise sigma
    steady = 20_000.0 + rng.normal(0.0, noise, size=20)
    leak = 20_000.0 * (1.0 - 0.01 * np.arange(1, 41)) + rng.normal(0.0, noise, size=40)
    result = cusum_drop(np.concatenate([steady, leak]), min_sigma=2 * noise)
    assert result.alarm
    assert result.index is not None and 20 <= result.index < 20 + 15
    assert result.drop > 0.0


def false_alarm_rate(seed: int, noise: float, min_sigma: float, series: int = 300, n: int = 200) -> float:
    rng = np.random.default_rng(seed)
    data = 5_000.0 + rng.normal(0.0, noise, size=(series, 10 + n))
    return sum(cusum_drop(row, min_sigma=min_sigma).alarm for row in data) / series


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_cusum_rarely_alarms_on_stationary_noise_inside_the_floor(seed: int) -> None:
    # min_sigma at twice the noise: ~1 % of 200-sample series alarm (binomial tail above 6 %: < 1e-7)
    assert false_alarm_rate(seed, noise=5.0, min_sigma=10.0) <= 0.06


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_cusum_false_alarms_with_noise_at_the_floor_as_documented(seed: int) -> None:
    # noise at exactly min_sigma: in-control ARL ~900 samples, a 10-sample baseline shortens it;
    # measured ~30 % of 200-sample series alarm. Bounds sit > 5 binomial sigmas away.
    assert 0.10 <= false_alarm_rate(seed, noise=10.0, min_sigma=10.0) <= 0.45


def test_cusum_needs_more_than_the_baseline() -> None:
    crash = [100.0] * 10
    assert cusum_drop(crash, min_sigma=1.0) == CusumResult(False, None, 0.0, 100.0, 100.0, 0.0)
    result = cusum_drop([*crash, 10.0], min_sigma=1.0)
    assert result.alarm and result.index == 10 and result.drop == 90.0
    empty = cusum_drop([], min_sigma=1.0)
    assert not empty.alarm and empty.drop == 0.0


def test_cusum_is_one_sided_and_reports_level_without_alarm() -> None:
    rising = [100.0] * 10 + [150.0, 200.0, 250.0]
    result = cusum_drop(rising, min_sigma=1.0)
    assert not result.alarm and result.statistic == 0.0
    assert result.level == 250.0 and result.drop == 0.0
    small_dip = cusum_drop([100.0] * 10 + [99.0, 100.0], min_sigma=1.0)  # 1 sigma once: S = 0.5
    assert not small_dip.alarm and small_dip.statistic == pytest.approx(0.5)
    assert small_dip.level == 100.0


def test_cusum_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        cusum_drop([1.0] * 20, min_sigma=0.0)
    with pytest.raises(ValueError):
        cusum_drop([1.0] * 20, baseline_n=0, min_sigma=1.0)
    with pytest.raises(ValueError):
        cusum_drop([1.0] * 20, h=0.0, min_sigma=1.0)


# --- flat-line ----------------------------------------------------------------------------------

def test_flatline_exact_repeats() -> None:
    assert is_flatline([3.0, 1.0, 5.0, 5.0, 5.0], min_points=3)
    assert not is_flatline([3.0, 1.0, 5.0, 5.0, 5.0], min_points=4)
    assert not is_flatline([5.0, 5.0, 5.0, 5.0, 5.000001], min_points=3)
    assert not is_flatline([5.0, 5.0], min_points=3)  # too few readings to tell


def test_flatline_tolerance() -> None:
    readings = [20_000.0, 20_000.4, 19_999.8, 20_000.1]
    assert is_flatline(readings, min_points=4, tolerance=0.61)  # spread 0.6
    assert not is_flatline(readings, min_points=4, tolerance=0.59)
    assert is_flatline(readings, min_points=2, tolerance=0.31)  # only the last two: 0.3 apart


def test_flatline_edge_cases() -> None:
    assert not is_flatline([1.0, float("nan"), 1.0], min_points=3)
    with pytest.raises(ValueError):
        is_flatline([1.0, 1.0], min_points=1)
    with pytest.raises(ValueError):
        is_flatline([1.0, 1.0], min_points=2, tolerance=-1.0)


# --- geofence -----------------------------------------------------------------------------------

# An L-shaped yard (lat, lon) near Shanghai: the notch at the north-east corner is outside.
YARD = [(31.20, 121.40), (31.20, 121.44), (31.22, 121.44), (31.22, 121.42), (31.24, 121.42), (31.24, 121.40)]


@pytest.mark.parametrize(("lat", "lon", "inside"), [
    (31.21, 121.41, True),
    (31.21, 121.43, True),
    (31.23, 121.41, True),
    (31.23, 121.43, False),  # in the notch
    (31.19, 121.41, False),
    (31.21, 121.45, False),
    (31.25, 121.41, False),
    (31.23, 121.39, False),
])
def test_point_in_polygon_concave(lat: float, lon: float, inside: bool) -> None:
    assert point_in_polygon(lat, lon, YARD) is inside
    assert point_in_polygon(lat, lon, [*YARD, YARD[0]]) is inside  # explicitly closed: same answer


def test_point_in_polygon_needs_a_polygon() -> None:
    with pytest.raises(ValueError):
        point_in_polygon(0.0, 0.0, [(0.0, 0.0), (1.0, 1.0)])
    with pytest.raises(ValueError):
        points_in_polygon([0.0], [0.0, 1.0], YARD)


@given(st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=3, max_size=8),
       st.lists(st.tuples(st.floats(-4, 4), st.floats(-4, 4)), min_size=1, max_size=30))
def test_points_in_polygon_agrees_with_the_scalar_version(polygon: list[tuple[float, float]],
                                                          points: list[tuple[float, float]]) -> None:
    lats = np.array([p[0] for p in points])
    lons = np.array([p[1] for p in points])
    vectorised = points_in_polygon(lats, lons, polygon)
    assert vectorised.dtype == np.bool_
    assert vectorised.tolist() == [point_in_polygon(la, lo, polygon) for la, lo in points]


@given(st.floats(-10, 10), st.floats(-10, 10))
def test_points_in_a_rectangle(lat: float, lon: float) -> None:
    rectangle = [(-1.0, -2.0), (-1.0, 2.0), (1.0, 2.0), (1.0, -2.0)]
    if abs(abs(lat) - 1.0) > 1e-9 and abs(abs(lon) - 2.0) > 1e-9:  # off the boundary
        expected = -1.0 < lat < 1.0 and -2.0 < lon < 2.0
        assert point_in_polygon(lat, lon, rectangle) is expected
        assert points_in_polygon([lat], [lon], rectangle).tolist() == [expected]


# --- sales collapse -----------------------------------------------------------------------------

def test_sales_collapse() -> None:
    rng = np.random.default_rng(7)
    daily = (100.0 + rng.normal(0.0, 5.0, size=30)).tolist()
    collapsed, z = sales_collapse([*daily, 20.0])
    assert collapsed and z < -ROBUST_Z_THRESHOLD
    collapsed, z = sales_collapse([*daily, 95.0])
    assert not collapsed and -ROBUST_Z_THRESHOLD < z < 0
    collapsed, z = sales_collapse([*daily, 300.0])  # a boom is not a collapse
    assert not collapsed and z > ROBUST_Z_THRESHOLD
    assert sales_collapse([*daily, 70.0], threshold=10.0)[0] is False


def test_sales_collapse_needs_history() -> None:
    assert sales_collapse([100.0, 100.0, 0.0]) == (False, 0.0)
    assert sales_collapse([]) == (False, 0.0)
    collapsed, _ = sales_collapse([100.0, 100.0, 0.0], min_history=2)
    assert collapsed
