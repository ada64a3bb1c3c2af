"""Points scaling and the master scale of grades.

A score is a linear function of the log-odds of a good outcome: ``score = offset + factor × ln(odds)``
with ``factor = pdo / ln 2`` (``pdo`` points double the odds) and ``offset`` chosen so that
``base_odds`` (good:bad) sit at ``base_points``. Grades are bands of probability of default (PD), the
same for every scorecard, so a grade means the same risk whichever card produced it; the score
cut-offs of a grade follow from the card's scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Scaling:
    """``base_points`` at odds ``base_odds`` (good:bad); every ``pdo`` points double the odds."""

    base_points: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    def __post_init__(self) -> None:
        for name in ("base_points", "base_odds", "pdo"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"scaling: {name} must be finite")
        if self.base_odds <= 0 or self.pdo <= 0:
            raise ValueError("scaling: base_odds and pdo must be positive")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2)

    @property
    def offset(self) -> float:
        return self.base_points - self.factor * math.log(self.base_odds)

    def score_of_log_odds(self, log_odds_good: ArrayLike) -> Floats:
        return self.offset + self.factor * np.asarray(log_odds_good, dtype=np.float64)

    def log_odds_of_score(self, score: ArrayLike) -> Floats:
        return (np.asarray(score, dtype=np.float64) - self.offset) / self.factor

    def pd_of_score(self, score: ArrayLike) -> Floats:
        """Probability of default: ``1 / (1 + odds_good)``."""
        return 1.0 / (1.0 + np.exp(self.log_odds_of_score(score)))

    def score_of_pd(self, pd: ArrayLike) -> Floats:
        p = np.clip(np.asarray(pd, dtype=np.float64), 1e-12, 1 - 1e-12)
        return self.score_of_log_odds(np.log((1 - p) / p))

    def to_dict(self) -> dict[str, float]:
        return {"base_points": self.base_points, "base_odds": self.base_odds, "pdo": self.pdo}


@dataclass(frozen=True)
class MasterScale:
    """Grades as PD bands: grade ``grades[i]`` holds PD below ``pd_upper[i]`` (and at or above the
    previous bound); the last grade holds everything above the last bound."""

    grades: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G")
    pd_upper: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.20, 0.40)

    def __post_init__(self) -> None:
        if len(self.grades) != len(self.pd_upper) + 1:
            raise ValueError("master scale: one more grade than PD bounds")
        bounds = np.asarray(self.pd_upper)
        if not (np.all(np.diff(bounds) > 0) and bounds[0] > 0 and bounds[-1] < 1):
            raise ValueError("master scale: PD bounds must rise strictly inside (0, 1)")

    def score_cutoffs(self, scaling: Scaling) -> Floats:
        """Lowest score of grades A.. (one per bound, falling): a score at or above
        ``cutoffs[i]`` is grade ``i`` or better."""
        return scaling.score_of_pd(self.pd_upper)

    def grade_index(self, pd: ArrayLike) -> NDArray[np.intp]:
        return np.searchsorted(np.asarray(self.pd_upper), np.asarray(pd, dtype=np.float64),
                               side="right")

    def grades_of_pd(self, pd: ArrayLike) -> NDArray[np.str_]:
        return np.asarray(self.grades)[self.grade_index(pd)]


MASTER_SCALE = MasterScale()
