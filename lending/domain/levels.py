"""Robust levels of a sensor's series: what a lot holds by weight or by RFID count, estimated over
a window so that one noisy sample or a missed tag does not move it.

- a load cell's level is the median of its samples over the last ``window`` by timestamp (at
  least ``min_samples`` of them), not its latest sample;
- an RFID reader misses tags but never invents them, so its level is a high quantile of its last
  reads (:data:`HIGHER`: an actual read, not an interpolation);
- a sensor's noise is estimated from its own first differences (1.4826 × MAD ÷ √2): blind to a
  slow drift and to a single step, it is what one sample may wobble by;
- two channels disagree by the median of their paired differences (each sample of one paired with
  the latest sample of the other at or before it), so a missed tag or one odd weight does not flap
  a mismatch.

Pure numpy, values in and values out. Non-finite times or values are dropped, values are clipped
to ±:data:`VALUE_LIMIT` (a hostile 1e308 must not overflow a difference), and series are sorted by
time whatever order they came in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from itertools import islice
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from lending.domain.detectors import MAD_TO_SIGMA

VALUE_LIMIT = 1e12  # beyond any sensor's range: values are clipped to ± this
MEDIAN = 0.5
HIGHER = "higher"  # np.quantile method: the level is a value that was read
LINEAR = "linear"

Floats = NDArray[np.float64]


class Series(NamedTuple):
    """A sensor's samples as arrays, sorted by time: epoch seconds, values, and the sample's
    position in the series it came from (to find its datetime again)."""

    t: Floats
    v: Floats
    pos: NDArray[np.intp]

    @property
    def size(self) -> int:
        return int(self.t.size)

    def take(self, mask: NDArray[np.bool_]) -> Series:
        return Series(self.t[mask], self.v[mask], self.pos[mask])

    def scaled(self, factor: float, *, floor: float | None = None) -> Series:
        """Values divided by ``factor`` (e.g. kg → units), after clamping them at ``floor``."""
        v = self.v if floor is None else np.maximum(self.v, floor)
        return Series(self.t, v / factor, self.pos)


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan


def series(times: Sequence[datetime], values: Sequence[float]) -> Series:
    """The finite samples of ``(times, values)`` as a time-sorted :class:`Series` (pairs beyond
    the shorter of the two sequences are ignored)."""
    n = min(len(times), len(values))
    t = np.fromiter(map(datetime.timestamp, islice(times, n)), dtype=np.float64, count=n)
    v = np.asarray(list(islice(values, n)))
    if v.dtype.kind in "biuf":  # numbers (and booleans) as the store gives them: one C loop
        v = v.astype(np.float64)
    else:  # anything else, one at a time: a non-number is NaN and dropped below
        v = np.fromiter((_number(x) for x in islice(values, n)), dtype=np.float64, count=n)
    keep = np.isfinite(t) & np.isfinite(v)
    index = np.flatnonzero(keep)
    t, v = t[keep], np.clip(v[keep], -VALUE_LIMIT, VALUE_LIMIT)
    order = np.argsort(t, kind="stable")
    return Series(t[order], v[order], index[order])


def window_start(t: Floats, end: int, window_s: float, min_samples: int) -> int:
    """First index of the window ending at sample ``end`` (inclusive): the samples newer than
    ``t[end] − window_s``, widened to at least ``min_samples`` samples where there are that many."""
    lo = int(np.searchsorted(t, t[end] - window_s, side="right")) if window_s > 0 else end + 1
    return max(0, min(lo, end + 1 - max(1, min_samples)))


SMALL = 128  # below this many values a sorted list beats numpy's per-call overhead (~10x)


def _small_quantile(values: Floats, q: float, method: str) -> float | None:
    """numpy's ``linear`` and ``higher`` quantiles of a few finite values, bit for bit, from a
    sorted list; None where numpy must answer (many values, NaN, another method)."""
    if values.size > SMALL or method not in (LINEAR, HIGHER):
        return None
    ordered: list[float] = sorted(values.tolist())
    total = sum(ordered)
    if total != total:  # a NaN (or +inf beside -inf): numpy's rules
        return None
    index = q * (len(ordered) - 1)
    below = math.floor(index)
    if method == HIGHER:
        return float(ordered[math.ceil(index)])
    above = min(below + 1, len(ordered) - 1)
    a, b, t = ordered[below], ordered[above], index - below
    if q == MEDIAN:  # numpy's median: the mean of the middle two
        return float(ordered[below]) if len(ordered) % 2 else float((a + b) / 2.0)
    return float(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)  # numpy's _lerp


def quantile(values: Floats, q: float, method: str = LINEAR) -> float:
    """The ``q`` quantile of ``values`` (the median for 0.5); NaN for no values."""
    if values.size == 0:
        return math.nan
    q = min(1.0, max(0.0, q))
    small = _small_quantile(values, q, method)
    if small is not None:
        return small
    if q == MEDIAN and method == LINEAR:
        return float(np.median(values))
    return float(np.quantile(values, q, method=method))  # type: ignore[call-overload]


def level_at(s: Series, end: int, *, window_s: float, min_samples: int, q: float = MEDIAN,
             method: str = LINEAR, start: int = 0) -> float:
    """The level of ``s`` as of sample ``end``: the ``q`` quantile of the window ending there,
    never reaching back before sample ``start`` unless that leaves fewer than ``min_samples``."""
    lo = window_start(s.t, end, window_s, min_samples)
    lo = max(lo, min(start, end + 1 - max(1, min_samples)), 0)
    return quantile(s.v[lo:end + 1], q, method)


def rolling_levels(s: Series, ends: NDArray[np.intp], *, window_s: float, min_samples: int,
                   q: float = MEDIAN, method: str = LINEAR) -> Floats:
    """:func:`level_at` at each sample index in ``ends``."""
    return np.array([level_at(s, int(i), window_s=window_s, min_samples=min_samples, q=q,
                              method=method) for i in ends], dtype=np.float64)


def noise_sigma(values: Floats) -> float:
    """A sensor's sample-to-sample noise: 1.4826 × MAD of its first differences ÷ √2 (0 for
    fewer than three values)."""
    if values.size < 3:
        return 0.0
    diffs = np.diff(values)
    mad = quantile(np.abs(diffs - quantile(diffs, MEDIAN)), MEDIAN)
    return MAD_TO_SIGMA * mad / math.sqrt(2.0)


def paired_differences(a: Series, b: Series) -> Floats:
    """``a``'s values minus ``b``'s latest value at or before each of ``a``'s samples (samples of
    ``a`` older than all of ``b`` are left out)."""
    if a.size == 0 or b.size == 0:
        return np.empty(0, dtype=np.float64)
    j = np.searchsorted(b.t, a.t, side="right") - 1
    keep = j >= 0
    return np.asarray(a.v[keep] - b.v[j[keep]], dtype=np.float64)
