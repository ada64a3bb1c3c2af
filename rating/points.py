"""A points card: bins and points per feature, base points and a scaling. The expert scorecard (read
from a file) and the logistic-regression scorecard (fitted) are both turned into one, so one
vectorised scorer gives every rating its score, PD, grade and reason codes.

Numeric bins are ``[split[i-1], split[i])`` (left-closed, as optbinning's); ``NaN`` takes the
feature's missing points. Categorical bins are groups of values; a value in no group takes the
``other`` points, a missing one (``None``/``NaN``) the missing points. A reason code names a feature
and the points it cost against that feature's best bin; the largest losses come first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rating.scale import MASTER_SCALE, Floats, MasterScale, Scaling

Ints = NDArray[np.intp]
Columns = Mapping[str, Any]  # a name -> 1-D values mapping: a dict of arrays or a DataFrame


def _finite(values: Sequence[float], what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what}: points must be finite")
    return out


@dataclass(frozen=True)
class NumericFeature:
    name: str
    splits: tuple[float, ...]
    points: tuple[float, ...]
    missing_points: float = 0.0

    def __post_init__(self) -> None:
        if len(self.points) != len(self.splits) + 1:
            raise ValueError(f"{self.name}: one more bin than splits")
        if not all(math.isfinite(s) for s in self.splits) or np.any(np.diff(self.splits) <= 0):
            raise ValueError(f"{self.name}: splits must be finite and rise strictly")
        _finite((*self.points, self.missing_points), self.name)

    @property
    def n_bins(self) -> int:
        return len(self.points)

    def labels(self) -> list[str]:
        edges = [-math.inf, *self.splits, math.inf]
        return [f"[{a:g}, {b:g})" for a, b in itertools.pairwise(edges)]

    def bin_index(self, values: Any) -> Ints:
        """Bin of each value; ``n_bins`` for missing."""
        x = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(np.asarray(self.splits, dtype=np.float64), x, side="right")
        idx[np.isnan(x)] = self.n_bins
        return idx

    def points_table(self) -> Floats:
        """Points by bin index: the bins, then missing, then other (same as missing)."""
        return np.asarray([*self.points, self.missing_points, self.missing_points])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "numeric", "name": self.name, "splits": list(self.splits),
                "points": list(self.points), "missing_points": self.missing_points}


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    groups: tuple[tuple[str, ...], ...]
    points: tuple[float, ...]
    missing_points: float = 0.0
    other_points: float = 0.0
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)
    _index: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.points) != len(self.groups) or not self.groups:
            raise ValueError(f"{self.name}: one points value per group, at least one group")
        lookup: dict[str, int] = {}
        for i, group in enumerate(self.groups):
            for value in group:
                if value in lookup:
                    raise ValueError(f"{self.name}: {value!r} is in two groups")
                lookup[value] = i
        _finite((*self.points, self.missing_points, self.other_points), self.name)
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_index", pd.Index(list(lookup), dtype=object))

    @property
    def n_bins(self) -> int:
        return len(self.points)

    def labels(self) -> list[str]:
        return [", ".join(g) for g in self.groups]

    def bin_index(self, values: Any) -> Ints:
        """Bin of each value; ``n_bins`` for missing, ``n_bins + 1`` for a value in no group."""
        series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
        position = self._index.get_indexer(series.astype(object))  # -1: in no group
        table = np.append(np.asarray(list(self._lookup.values()), dtype=np.intp), self.n_bins + 1)
        idx: Ints = table[position]
        idx[series.isna().to_numpy()] = self.n_bins
        return idx

    def points_table(self) -> Floats:
        return np.asarray([*self.points, self.missing_points, self.other_points])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "name": self.name, "groups": [list(g) for g in self.groups],
                "points": list(self.points), "missing_points": self.missing_points,
                "other_points": self.other_points}


Feature = NumericFeature | CategoricalFeature


def feature_from_dict(doc: Mapping[str, Any]) -> Feature:
    if doc["kind"] == "numeric":
        return NumericFeature(doc["name"], tuple(doc["splits"]), tuple(doc["points"]),
                              float(doc["missing_points"]))
    if doc["kind"] == "categorical":
        return CategoricalFeature(doc["name"], tuple(tuple(g) for g in doc["groups"]),
                                  tuple(doc["points"]), float(doc["missing_points"]),
                                  float(doc["other_points"]))
    raise ValueError(f"unknown feature kind {doc['kind']!r}")


@dataclass(frozen=True)
class Reason:
    feature: str
    points_lost: float
    bin: str


@dataclass(frozen=True)
class Rating:
    """One borrower's rating, whichever card produced it."""

    score: float
    pd: float
    grade: str
    reasons: tuple[Reason, ...]
    card: str


@dataclass(frozen=True)
class ScoreBatch:
    """Ratings of many borrowers at once: ``points[i, j]`` is borrower i's points on feature j."""

    card: PointsCard
    bins: Ints
    points: Floats
    score: Floats
    pd: Floats
    grade: NDArray[np.str_]

    def reason_codes(self, top: int = 3) -> tuple[Ints, Floats]:
        """Feature indices of the ``top`` largest losses per borrower (``-1`` where none is lost)
        and the losses, largest first."""
        loss = self.card.best_points()[None, :] - self.points
        order = np.argsort(-loss, axis=1, kind="stable")[:, :top]
        lost = np.take_along_axis(loss, order, axis=1)
        order[lost <= 1e-9] = -1
        return order, np.where(lost > 1e-9, lost, 0.0)

    def rating(self, i: int, top: int = 3) -> Rating:
        order, lost = self.reason_codes(top)
        reasons = []
        for j, loss in zip(order[i], lost[i], strict=True):
            if j < 0:
                continue
            feature = self.card.features[j]
            b = int(self.bins[i, j])
            label = (feature.labels()[b] if b < feature.n_bins
                     else "missing" if b == feature.n_bins else "other")
            reasons.append(Reason(feature.name, round(float(loss), 2), label))
        return Rating(float(self.score[i]), float(self.pd[i]), str(self.grade[i]), tuple(reasons),
                      self.card.name)


@dataclass(frozen=True)
class PointsCard:
    name: str
    features: tuple[Feature, ...]
    base_points: float
    scaling: Scaling = field(default_factory=Scaling)
    master_scale: MasterScale = MASTER_SCALE

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a feature is listed twice")
        _finite([self.base_points], self.name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def best_points(self) -> Floats:
        return np.asarray([max(f.points) for f in self.features])

    def bin_matrix(self, frame: Columns) -> Ints:
        missing = [f.name for f in self.features if f.name not in frame]
        if missing:
            raise KeyError(f"{self.name}: no column for {', '.join(missing)}")
        columns = [f.bin_index(frame[f.name]) for f in self.features]
        return np.stack(columns, axis=1) if columns else np.zeros((0, 0), dtype=np.intp)

    def score(self, frame: Columns) -> ScoreBatch:
        bins = self.bin_matrix(frame)
        points = np.empty(bins.shape, dtype=np.float64)
        for j, feature in enumerate(self.features):
            points[:, j] = feature.points_table()[bins[:, j]]
        score = self.base_points + points.sum(axis=1)
        pd = self.scaling.pd_of_score(score)
        return ScoreBatch(self, bins, points, score, pd, self.master_scale.grades_of_pd(pd))

    def rate_one(self, row: Mapping[str, Any], top: int = 3) -> Rating:
        return self.score({k: [v] for k, v in row.items()}).rating(0, top)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_points": self.base_points,
                "scaling": self.scaling.to_dict(),
                "master_scale": {"grades": list(self.master_scale.grades),
                                 "pd_upper": list(self.master_scale.pd_upper)},
                "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PointsCard:
        scale = doc["master_scale"]
        return cls(doc["name"], tuple(feature_from_dict(f) for f in doc["features"]),
                   float(doc["base_points"]), Scaling(**doc["scaling"]),
                   MasterScale(tuple(scale["grades"]), tuple(scale["pd_upper"])))
