"""The credit matrix: vendors' scores of a borrower combined into one external score, each vendor
weighted by how well the borrower fits the population that vendor's model was built on.

Fit is the Mahalanobis distance ``d² = (x − μ)ᵀ Σ⁻¹ (x − μ)`` from the borrower's profile ``x`` (e.g.
log revenue, firm age, share of sales to the core enterprise) to the centroid ``μ`` of the vendor's
population with covariance ``Σ``. Unlike a segment match it is continuous (a borrower just outside a
vendor's size band is not dropped to zero) and unlike a Euclidean distance it is scale-free and
discounts correlated features. A vendor's weight is ``prior × exp(−d² / 2)``, normalised over the
vendors that scored the borrower: the Gaussian kernel turns distance into the relative typicality of
the borrower in each population, and ``prior`` holds the bank's own trust in the vendor. When the
borrower is atypical of every population (``d²`` above the 99 % chi-squared quantile for each), the
weights still sum to 1 but the result is flagged ``out_of_population``.

Vendors score on their own scales; each states its scaling (base points, odds there, PDO), which
puts every score on the log-odds axis, where they are averaged, then re-scaled onto the platform's.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import chi2

from rating.scale import MASTER_SCALE, Floats, Scaling


@dataclass(frozen=True)
class VendorPopulation:
    vendor: str
    scaling: Scaling                 # how this vendor's score maps to odds
    features: tuple[str, ...]        # the profile features of the fit, in order
    centroid: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    prior: float = 1.0

    def __post_init__(self) -> None:
        k = len(self.features)
        cov = np.asarray(self.covariance, dtype=float)
        if len(self.centroid) != k or cov.shape != (k, k):
            raise ValueError(f"{self.vendor}: centroid and covariance must match {k} features")
        if not (np.all(np.isfinite(cov)) and all(math.isfinite(c) for c in self.centroid)):
            raise ValueError(f"{self.vendor}: centroid and covariance must be finite")
        if not np.allclose(cov, cov.T):
            raise ValueError(f"{self.vendor}: covariance must be symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError(f"{self.vendor}: covariance must be positive definite") from None
        if not (math.isfinite(self.prior) and self.prior > 0):
            raise ValueError(f"{self.vendor}: prior must be positive")

    def distance2(self, profiles: Floats) -> Floats:
        """Squared Mahalanobis distance of each row of ``profiles`` (n × k) to the centroid."""
        diff = profiles - np.asarray(self.centroid)
        solved = np.linalg.solve(np.asarray(self.covariance, dtype=float), diff.T).T
        return np.asarray(np.einsum("ij,ij->i", diff, solved), dtype=np.float64)


@dataclass(frozen=True)
class ExternalScores:
    score: Floats                    # on the platform's scaling; NaN where no vendor scored
    pd: Floats
    grade: np.ndarray
    weights: Floats                  # n × vendors, rows sum to 1 (0 where a vendor gave no score)
    distance2: Floats                # n × vendors
    out_of_population: np.ndarray    # bool per borrower


@dataclass(frozen=True)
class CreditMatrix:
    vendors: tuple[VendorPopulation, ...]
    scaling: Scaling = field(default_factory=Scaling)
    atypical_quantile: float = 0.99

    def weights(self, profiles: Floats, scored: np.ndarray) -> tuple[Floats, Floats]:
        """Weights (n × vendors) over the vendors with a score (``scored``), and the distances."""
        d2 = np.column_stack([v.distance2(self._columns(profiles, v)) for v in self.vendors])
        log_w = -0.5 * d2 + np.log([v.prior for v in self.vendors])
        log_w = np.where(scored, log_w, -np.inf)
        top = np.max(log_w, axis=1, keepdims=True)
        w = np.exp(log_w - np.where(np.isfinite(top), top, 0.0))
        total = w.sum(axis=1, keepdims=True)
        return np.divide(w, total, out=np.zeros_like(w), where=total > 0), d2

    def _columns(self, profiles: Floats, vendor: VendorPopulation) -> Floats:
        return profiles[:, [self.profile_features.index(f) for f in vendor.features]]

    @property
    def profile_features(self) -> list[str]:
        return list(dict.fromkeys(f for v in self.vendors for f in v.features))

    def combine(self, profiles: Mapping[str, Any], scores: Mapping[str, Any]) -> ExternalScores:
        """``profiles``: feature -> values per borrower; ``scores``: vendor -> score per borrower
        (NaN where that vendor has none)."""
        x = np.column_stack([np.asarray(profiles[f], dtype=float) for f in self.profile_features])
        n = x.shape[0]
        s = np.column_stack([np.asarray(scores.get(v.vendor, np.full(n, np.nan)), dtype=float)
                             for v in self.vendors])
        scored = np.isfinite(s)
        w, d2 = self.weights(x, scored)
        log_odds = np.column_stack([v.scaling.log_odds_of_score(s[:, j])
                                    for j, v in enumerate(self.vendors)])
        combined = np.where(scored.any(axis=1),
                            np.sum(np.where(scored, w * log_odds, 0.0), axis=1), np.nan)
        score = self.scaling.score_of_log_odds(combined)
        pd = self.scaling.pd_of_score(score)
        grades = np.where(np.isnan(pd), "", MASTER_SCALE.grades_of_pd(np.nan_to_num(pd, nan=1.0)))
        limit = chi2.ppf(self.atypical_quantile, df=[len(v.features) for v in self.vendors])
        atypical = np.all(~scored | (d2 > limit), axis=1) & scored.any(axis=1)
        return ExternalScores(score, pd, grades, w, d2, atypical)


def load_vendor_scores(path: Path, vendors: Sequence[str]) -> dict[str, dict[str, float]]:
    """Read ``borrower,vendor,score`` rows into borrower -> vendor -> score. Unknown vendors,
    non-numeric or non-finite scores and duplicate (borrower, vendor) rows are refused with the
    line number."""
    known = set(vendors)
    out: dict[str, dict[str, float]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"borrower", "vendor", "score"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the header must name borrower, vendor, score")
        for line, row in enumerate(reader, start=2):
            vendor = (row["vendor"] or "").strip()
            borrower = (row["borrower"] or "").strip()
            if vendor not in known:
                raise ValueError(f"{path}:{line}: unknown vendor {vendor!r}")
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: score {row['score']!r} is not a number") from None
            if not math.isfinite(score) or not borrower:
                raise ValueError(f"{path}:{line}: need a borrower and a finite score")
            if vendor in out.setdefault(borrower, {}):
                raise ValueError(f"{path}:{line}: a second score of {borrower} by {vendor}")
            out[borrower][vendor] = score
    return out


def score_columns(by_borrower: Mapping[str, Mapping[str, float]], borrowers: Sequence[str],
                  vendors: Sequence[str]) -> dict[str, Floats]:
    """vendor -> scores in ``borrowers`` order (NaN where missing), for :meth:`CreditMatrix.combine`."""
    return {v: np.asarray([by_borrower.get(b, {}).get(v, np.nan) for b in borrowers], dtype=float)
            for v in vendors}
