"""Signal detectors for pledged goods: robust z-scores, a CUSUM for weight drops, flat-lines,
geofences and sales collapses.

Pure numpy: values in, values out. Every function takes plain sequences or arrays of finite floats
(the gateway dead-letters non-finite readings before they reach the lending domain) and returns
plain values, so the alert rules (:mod:`lending.domain.rules`) decide what an alarm means for a
facility.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: |z| above this is an outlier (Iglewicz & Hoaglin's recommended cut-off for the modified z-score).
ROBUST_Z_THRESHOLD = 3.5

#: 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826

#: Relative scale used when the MAD is zero (more than half of the reference values are identical):
#: the scale becomes ``MAD_EPSILON * max(1, |median|)``. Any real deviation from such a constant
#: history then gets a very large |z|, which is what a sensor that suddenly moves after repeating
#: itself deserves; a value equal to the median still scores 0. Pass ``min_scale`` to use a known
#: measurement resolution instead.
MAD_EPSILON = 1e-9


def _as_1d(values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a one-dimensional series, got shape {arr.shape}")
    return arr


def _median_scale(reference: NDArray[np.float64], min_scale: float) -> tuple[float, float]:
    """(median, scale) of ``reference``: scale = max(1.4826 * MAD, min_scale, epsilon)."""
    if reference.size == 0:
        raise ValueError("a robust z-score needs at least one reference value")
    med = float(np.median(reference))
    mad = float(np.median(np.abs(reference - med)))
    epsilon = MAD_EPSILON * max(1.0, abs(med))
    return med, max(MAD_TO_SIGMA * mad, min_scale, epsilon)


def robust_z(history: ArrayLike, x: float, *, min_scale: float = 0.0) -> float:
    """Robust z-score of ``x`` against ``history``: (x - median) / (1.4826 * MAD).

    When the MAD is zero (or below ``min_scale``) the scale falls back to
    ``max(min_scale, MAD_EPSILON * max(1, |median|))``, so nothing is divided by zero.
    Raises ``ValueError`` for an empty history.
    """
    med, scale = _median_scale(_as_1d(history), min_scale)
    return (float(x) - med) / scale


def robust_z_scores(values: ArrayLike, *, min_scale: float = 0.0) -> NDArray[np.float64]:
    """Robust z-score of every value against the median and MAD of all of them (same scale
    fallback as :func:`robust_z`). An empty input gives an empty array."""
    arr = _as_1d(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.float64)
    med, scale = _median_scale(arr, min_scale)
    return (arr - med) / scale


@dataclass(frozen=True)
class CusumResult:
    """Outcome of :func:`cusum_drop`.

    alarm: the statistic crossed ``h``; index: first alarm position in the input (None without an
    alarm); statistic: the largest S reached; baseline: median of the baseline window; level: median
    of the values from the alarm on (the last value when there is no alarm); drop: baseline - level,
    never below 0.
    """

    alarm: bool
    index: int | None
    statistic: float
    baseline: float
    level: float
    drop: float


def cusum_drop(
    values: ArrayLike,
    *,
    baseline_n: int = 10,
    k: float = 0.5,
    h: float = 5.0,
    min_sigma: float,
) -> CusumResult:
    """One-sided lower CUSUM on standardised deviations, for sudden or creeping weight drops.

    The first ``baseline_n`` values set the in-control level: mu = their median and
    sigma = max(1.4826 * MAD, ``min_sigma``). Monitoring starts at ``values[baseline_n]`` with
    S_t = max(0, S_{t-1} + (mu - x_t) / sigma - k) and alarms at the first S_t > ``h``.
    ``k`` is half the shift (in sigmas) the chart is tuned for; ``h`` sets the false-alarm rate.

    ``min_sigma`` is the smallest credible noise level in the units of ``values`` (sensor resolution
    and noise); it stops a quiet baseline window from making every wobble an alarm. Set it to about
    twice the sensor's noise standard deviation: with noise at exactly ``min_sigma`` the in-control
    average run length for k=0.5, h=5 is only ~900 samples (and shorter with a 10-sample baseline),
    so roughly one 200-sample stationary series in three alarms (measured); at half ``min_sigma`` about one
    in a hundred does.

    Fewer than ``baseline_n + 1`` values never alarm.
    """
    if baseline_n < 1:
        raise ValueError("baseline_n must be at least 1")
    if not min_sigma > 0:
        raise ValueError("min_sigma must be positive")
    if k < 0 or not h > 0:
        raise ValueError("k must be >= 0 and h > 0")
    arr = _as_1d(values)
    if arr.size == 0:
        return CusumResult(False, None, 0.0, float("nan"), float("nan"), 0.0)
    window = arr[:baseline_n]
    mu = float(np.median(window))
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(window - mu))), float(min_sigma))
    monitored = arr[baseline_n:]
    if monitored.size == 0:
        return _result(False, None, 0.0, mu, float(arr[-1]))
    increments = (mu - monitored) / sigma - k
    # S_t = max(0, S_{t-1} + z_t) with S_0 = 0 equals C_t - min(0, min_{s<=t} C_s), C = cumsum(z).
    cumulative = np.cumsum(increments)
    stat = cumulative - np.minimum(np.minimum.accumulate(cumulative), 0.0)
    crossed = np.flatnonzero(stat > h)
    statistic = float(stat.max())
    if crossed.size == 0:
        return _result(False, None, statistic, mu, float(arr[-1]))
    index = baseline_n + int(crossed[0])
    return _result(True, index, statistic, mu, float(np.median(arr[index:])))


def _result(alarm: bool, index: int | None, statistic: float, baseline: float, level: float) -> CusumResult:
    return CusumResult(alarm, index, statistic, baseline, level, max(0.0, baseline - level))


def is_flatline(values: ArrayLike, *, min_points: int, tolerance: float = 0.0) -> bool:
    """True when the last ``min_points`` values all lie within ``tolerance`` of each other
    (max - min <= tolerance; tolerance 0 means exact repeats). Fewer values than ``min_points``,
    or a NaN in the window, is not a flat-line. ``min_points`` must be at least 2."""
    if min_points < 2:
        raise ValueError("a flat-line needs min_points >= 2")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    arr = _as_1d(values)
    if arr.size < min_points:
        return False
    window = arr[-min_points:]
    return bool(window.max() - window.min() <= tolerance)


Polygon = Sequence[tuple[float, float]]


def _polygon_arrays(polygon: Polygon) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    vertices = np.asarray(polygon, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 3:
        raise ValueError("a polygon needs at least three (lat, lon) vertices")
    return vertices[:, 0], vertices[:, 1]


def point_in_polygon(lat: float, lon: float, polygon: Polygon) -> bool:
    """Ray casting (even-odd rule): is (lat, lon) inside ``polygon``?

    The polygon is a sequence of (lat, lon) vertices, closed implicitly (repeating the first vertex
    at the end is harmless). Coordinates are treated as planar, which is fine for warehouse- and
    city-sized geofences away from the poles; a fence must not straddle the antimeridian. Points
    exactly on an edge may fall either side.
    """
    lats, lons = _polygon_arrays(polygon)
    y, x = float(lat), float(lon)
    inside = False
    n = len(lats)
    j = n - 1
    for i in range(n):
        yi, xi, yj, xj = float(lats[i]), float(lons[i]), float(lats[j]), float(lons[j])
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def points_in_polygon(lats: ArrayLike, lons: ArrayLike, polygon: Polygon) -> NDArray[np.bool_]:
    """Vectorised :func:`point_in_polygon` (same arithmetic, same answers) for many points:
    one boolean per (lat, lon) pair."""
    ys = np.asarray(lats, dtype=np.float64)
    xs = np.asarray(lons, dtype=np.float64)
    if ys.shape != xs.shape:
        raise ValueError("lats and lons must have the same shape")
    vlats, vlons = _polygon_arrays(polygon)
    inside = np.zeros(ys.shape, dtype=np.bool_)
    n = len(vlats)
    j = n - 1
    for i in range(n):
        yi, xi, yj, xj = float(vlats[i]), float(vlons[i]), float(vlats[j]), float(vlons[j])
        if yj != yi:  # a horizontal edge never straddles; skip it to avoid dividing by zero
            straddles = (yi > ys) != (yj > ys)
            with np.errstate(over="ignore", invalid="ignore"):  # near-degenerate edges: inf, like Python
                crossing = (xj - xi) * (ys - yi) / (yj - yi) + xi
            inside ^= straddles & (xs < crossing)
        j = i
    return inside


def sales_collapse(
    velocities: ArrayLike, *, threshold: float = ROBUST_Z_THRESHOLD, min_history: int = 3
) -> tuple[bool, float]:
    """Has the latest sales velocity collapsed? Returns (collapsed, z).

    z is the robust z-score of the last value against the values before it; a collapse is
    z < -``threshold``. With fewer than ``min_history`` earlier values there is no verdict:
    (False, 0.0). A constant history makes any fall a collapse (see :data:`MAD_EPSILON`).
    """
    arr = _as_1d(velocities)
    if min_history < 1:
        raise ValueError("min_history must be at least 1")
    if arr.size < min_history + 1:
        return False, 0.0
    z = robust_z(arr[:-1], float(arr[-1]))
    return z < -threshold, z
