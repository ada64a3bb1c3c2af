"""The logistic-regression scorecard: optimal binning with a monotonic weight of evidence
(optbinning), features kept by information value, a scikit-learn logistic regression on the WoE,
then points scaling into a :class:`PointsCard` that reproduces the regression's PD exactly.

optbinning's WoE is ``ln(share of goods / share of bads)`` (higher is safer), so every coefficient of
the regression of default on WoE should be negative; a feature whose coefficient comes out positive
(a sign the binning and the fit disagree, usually collinearity) is dropped and the fit repeated.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from optbinning import BinningProcess
from sklearn.linear_model import LogisticRegression

from rating.points import CategoricalFeature, Feature, NumericFeature, PointsCard
from rating.scale import Scaling


@dataclass(frozen=True)
class FitOptions:
    min_iv: float = 0.02          # below this a feature is too weak to keep (common rule: 0.02)
    max_iv: float = 1.0           # above it the feature is suspiciously strong (leak)
    monotonic_trend: str = "auto_asc_desc"
    min_bin_size: float = 0.05    # each bin holds at least 5 % of the sample
    max_n_bins: int | None = 6
    c: float = 1.0                # inverse L2 strength of the regression
    scaling: Scaling = field(default_factory=Scaling)


@dataclass(frozen=True)
class BinnedFeature:
    """What the binning learnt about one feature (kept in the artefact for review)."""

    name: str
    iv: float
    woe: tuple[float, ...]
    event_rate: tuple[float, ...]
    count: tuple[int, ...]
    missing_woe: float


@dataclass(frozen=True)
class LogisticScorecard:
    card: PointsCard
    intercept: float
    coefficients: dict[str, float]
    binned: dict[str, BinnedFeature]
    iv: dict[str, float]              # every candidate's IV, kept or not
    dropped_for_sign: tuple[str, ...] = ()

    def predict_pd(self, frame: Any) -> np.ndarray:
        return self.card.score(frame).pd


@contextmanager
def _quiet() -> Iterator[None]:
    """optbinning writes the Totals row's blanks into float columns, which pandas 3 warns of."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting an item of incompatible dtype")
        yield


def _binned_feature(optb: Any, categorical: bool) -> BinnedFeature:
    n_bins = len(optb.splits) if categorical else len(optb.splits) + 1
    with _quiet():
        table = optb.binning_table.build()  # rows: the bins, Special, Missing, Totals
    rows = table.iloc[: n_bins + 2]
    woe = rows["WoE"].to_numpy(dtype=float)
    rate = np.nan_to_num(rows["Event rate"].to_numpy(dtype=float))
    count = rows["Count"].to_numpy(dtype=float)
    return BinnedFeature(str(optb.name), float(table.loc["Totals", "IV"]),
                         tuple(float(w) for w in woe[:n_bins]),
                         tuple(float(r) for r in rate[:n_bins]),
                         tuple(int(c) for c in count[:n_bins]), float(woe[n_bins + 1]))


def _to_points(name: str, optb: Any, categorical: bool, binned: BinnedFeature, coef: float,
               factor: float) -> Feature:
    """Points of a bin: ``-factor × coef × woe`` (a WoE of 0, the population's odds, scores 0)."""
    points = tuple(float(-factor * coef * w) for w in binned.woe)
    missing = float(-factor * coef * binned.missing_woe)
    if categorical:
        groups = tuple(tuple(str(v) for v in group) for group in optb.splits)
        return CategoricalFeature(name, groups, points, missing, other_points=0.0)
    return NumericFeature(name, tuple(float(s) for s in optb.splits), points, missing)


def fit_logistic(frame: pd.DataFrame, bad: Sequence[int] | np.ndarray, categorical: Sequence[str],
                 options: FitOptions | None = None, name: str = "logistic") -> LogisticScorecard:
    """Bin every column of ``frame`` against ``bad`` (1 = default), keep the features whose IV is in
    ``[min_iv, max_iv]``, fit the regression on their WoE and scale it to points."""
    opts = options or FitOptions()
    y = np.asarray(bad, dtype=int)
    if set(np.unique(y)) != {0, 1}:
        raise ValueError("the outcome needs both goods (0) and bads (1)")
    names = list(frame.columns)
    cats = set(categorical)
    fit_params = {n: {"monotonic_trend": opts.monotonic_trend} for n in names if n not in cats}
    process = BinningProcess(
        names, categorical_variables=[n for n in names if n in cats],
        min_bin_size=opts.min_bin_size, max_n_bins=opts.max_n_bins,
        selection_criteria={"iv": {"min": opts.min_iv, "max": opts.max_iv}},
        binning_fit_params=fit_params)
    with _quiet():
        process.fit(frame, y)
    binned = {n: _binned_feature(process.get_binned_variable(n), n in cats) for n in names}
    iv = {n: b.iv for n, b in binned.items()}
    selected = [str(n) for n in process.get_support(names=True)]
    if not selected:
        raise ValueError(f"no feature has an IV in [{opts.min_iv}, {opts.max_iv}]: "
                         + ", ".join(f"{n} {v:.3f}" for n, v in sorted(iv.items())))
    with _quiet():
        woe = process.transform(frame, metric="woe")
    dropped: list[str] = []
    while True:
        model = LogisticRegression(C=opts.c, max_iter=1000)
        model.fit(woe[selected].to_numpy(dtype=float), y)
        coefs = dict(zip(selected, (float(c) for c in model.coef_[0]), strict=True))
        wrong = [n for n, c in coefs.items() if c > 0]
        if not wrong or len(selected) == 1:
            break
        worst = max(wrong, key=lambda n: coefs[n])
        dropped.append(worst)
        selected.remove(worst)
    factor = opts.scaling.factor
    intercept = float(model.intercept_[0])
    features = tuple(_to_points(n, process.get_binned_variable(n), n in cats, binned[n], coefs[n],
                                factor) for n in selected)
    base = opts.scaling.offset - factor * intercept
    card = PointsCard(name, features, base, opts.scaling)
    return LogisticScorecard(card, intercept, coefs, {n: binned[n] for n in selected}, iv,
                             tuple(dropped))
