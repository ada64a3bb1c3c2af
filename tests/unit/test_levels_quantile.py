"""The small-array quantile path of :func:`lending.domain.levels.quantile` answers exactly what
numpy answers (it replaced numpy there only for speed)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lending.domain.levels import HIGHER, LINEAR, MEDIAN, SMALL, quantile

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
values = st.lists(finite, min_size=1, max_size=SMALL)
qs = st.one_of(st.just(MEDIAN), st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))


def numpy_quantile(xs: np.ndarray, q: float, method: str) -> float:
    if q == MEDIAN and method == LINEAR:
        return float(np.median(xs))
    return float(np.quantile(xs, q, method=method))  # type: ignore[call-overload]


@settings(max_examples=400, deadline=None)
@given(values, qs, st.sampled_from([LINEAR, HIGHER]))
def test_small_arrays_agree_with_numpy_bit_for_bit(xs: list[float], q: float, method: str) -> None:
    arr = np.array(xs)
    assert quantile(arr, q, method) == numpy_quantile(arr, q, method)


def test_nan_and_infinities_follow_numpy() -> None:
    with_nan = np.array([1.0, math.nan, 3.0])
    assert math.isnan(quantile(with_nan, MEDIAN)) and math.isnan(float(np.median(with_nan)))
    both = np.array([-math.inf, math.inf])
    with np.errstate(invalid="ignore"):  # numpy warns as it answers NaN
        assert math.isnan(quantile(both, MEDIAN)) and math.isnan(float(np.median(both)))
    assert quantile(np.array([1.0, math.inf, 2.0]), MEDIAN) == 2.0


def test_large_arrays_and_empty_ones() -> None:
    big = np.arange(SMALL * 3, dtype=float)
    assert quantile(big, 0.3) == float(np.quantile(big, 0.3))
    assert math.isnan(quantile(np.array([]), MEDIAN))
