"""How good and how stable a scorecard is: discrimination (AUC, Gini, KS), calibration (Brier,
Hosmer–Lemeshow, observed vs predicted default rate by grade) and the population-stability index
(PSI) per feature and for the score, with a drift flag above 0.25 (the usual reading: < 0.10
stable, 0.10–0.25 watch, > 0.25 shifted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rating.points import Columns, PointsCard
from rating.scale import Floats

# scikit-learn and SciPy are imported where a validation metric needs them: the monitoring side
# (PSI, baselines) is imported by every process that rates (the CLI, the engine, the API), and
# importing both cost about 1 s at each start.
_LAZY = ("sklearn.metrics", "scipy.stats")

DRIFT_PSI = 0.25
PSI_FLOOR = 1e-4  # an empty bin counts as this share, so the log stays finite


def auc(bad: ArrayLike, pd: ArrayLike) -> float:
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - see _LAZY
    return float(roc_auc_score(np.asarray(bad), np.asarray(pd)))


def ks(bad: ArrayLike, pd: ArrayLike) -> float:
    """Kolmogorov–Smirnov: the largest gap between the cumulative shares of bads and goods."""
    from sklearn.metrics import roc_curve  # noqa: PLC0415 - see _LAZY
    fpr, tpr, _ = roc_curve(np.asarray(bad), np.asarray(pd))
    return float(np.max(tpr - fpr))


def brier(bad: ArrayLike, pd: ArrayLike) -> float:
    return float(np.mean((np.asarray(pd, dtype=float) - np.asarray(bad, dtype=float)) ** 2))


def hosmer_lemeshow(bad: ArrayLike, pd: ArrayLike, groups: int = 10) -> tuple[float, float]:
    """Hosmer–Lemeshow statistic over ``groups`` bands of predicted PD and its p-value
    (chi-squared, ``groups - 2`` degrees of freedom). A small p-value says PDs are off."""
    y = np.asarray(bad, dtype=float)
    p = np.asarray(pd, dtype=float)
    order = np.argsort(p, kind="stable")
    stat = 0.0
    for band in np.array_split(order, groups):
        if band.size == 0:
            continue
        n, observed, expected = band.size, y[band].sum(), p[band].sum()
        mean = expected / n
        if 0 < mean < 1:
            stat += (observed - expected) ** 2 / (n * mean * (1 - mean))
    from scipy.stats import chi2  # noqa: PLC0415 - see _LAZY
    return float(stat), float(chi2.sf(stat, max(groups - 2, 1)))


@dataclass(frozen=True)
class GradeCalibration:
    grade: str
    count: int
    observed: float
    predicted: float


def calibration_by_grade(bad: ArrayLike, pd: ArrayLike, grades: ArrayLike,
                         scale: Sequence[str]) -> list[GradeCalibration]:
    y = np.asarray(bad, dtype=float)
    p = np.asarray(pd, dtype=float)
    g = np.asarray(grades)
    out = []
    for grade in scale:
        mask = g == grade
        if mask.any():
            out.append(GradeCalibration(grade, int(mask.sum()), float(y[mask].mean()),
                                        float(p[mask].mean())))
    return out


@dataclass(frozen=True)
class Performance:
    n: int
    bad_rate: float
    auc: float
    gini: float
    ks: float
    brier: float
    hosmer_lemeshow: float
    hosmer_lemeshow_p: float
    by_grade: tuple[GradeCalibration, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def performance(card: PointsCard, frame: Columns, bad: ArrayLike) -> Performance:
    y = np.asarray(bad, dtype=int)
    batch = card.score(frame)
    a = auc(y, batch.pd)
    hl, hl_p = hosmer_lemeshow(y, batch.pd)
    return Performance(int(y.size), float(y.mean()), a, 2 * a - 1, ks(y, batch.pd),
                       brier(y, batch.pd), hl, hl_p,
                       tuple(calibration_by_grade(y, batch.pd, batch.grade,
                                                  card.master_scale.grades)))


def psi(expected: ArrayLike, actual: ArrayLike) -> float:
    """PSI of two distributions over the same bins, given as counts or shares:
    ``Σ (a − e) × ln(a / e)``, empty bins floored at 0.01 %."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi: two non-empty distributions over the same bins")
    e = np.maximum(e / e.sum(), PSI_FLOOR)
    a = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def shares(index: ArrayLike, n_bins: int) -> Floats:
    counts = np.bincount(np.asarray(index, dtype=np.intp), minlength=n_bins).astype(np.float64)
    out: Floats = counts / max(float(counts.sum()), 1.0)
    return out


@dataclass(frozen=True)
class Baseline:
    """What monitoring compares against: each feature's bin shares (bins, missing, other) and the
    score's decile edges and shares, from the development sample."""

    feature_shares: dict[str, list[float]]
    score_edges: list[float]
    score_shares: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Baseline:
        return cls(dict(doc["feature_shares"]), list(doc["score_edges"]), list(doc["score_shares"]))


def baseline(card: PointsCard, frame: Columns, deciles: int = 10) -> Baseline:
    batch = card.score(frame)
    features = {f.name: shares(batch.bins[:, j], f.n_bins + 2).tolist()
                for j, f in enumerate(card.features)}
    edges = np.unique(np.quantile(batch.score, np.linspace(0, 1, deciles + 1)[1:-1]))
    score_shares = shares(np.searchsorted(edges, batch.score, side="right"), edges.size + 1)
    return Baseline(features, edges.tolist(), score_shares.tolist())


@dataclass(frozen=True)
class Stability:
    feature_psi: dict[str, float]
    score_psi: float
    drifted: tuple[str, ...]  # features (and "score") whose PSI passes the threshold

    @property
    def drift(self) -> bool:
        return bool(self.drifted)


def stability(card: PointsCard, base: Baseline, frame: Columns,
              threshold: float = DRIFT_PSI) -> Stability:
    """PSI of ``frame`` (the current population) against the baseline, per feature and score."""
    batch = card.score(frame)
    feature_psi = {}
    for j, f in enumerate(card.features):
        feature_psi[f.name] = psi(base.feature_shares[f.name], shares(batch.bins[:, j], f.n_bins + 2))
    edges = np.asarray(base.score_edges)
    score_psi = psi(base.score_shares, shares(np.searchsorted(edges, batch.score, side="right"),
                                              edges.size + 1))
    drifted = [n for n, v in feature_psi.items() if v > threshold]
    if score_psi > threshold:
        drifted.append("score")
    return Stability(feature_psi, score_psi, tuple(drifted))
