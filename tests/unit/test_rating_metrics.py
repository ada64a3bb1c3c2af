"""Discrimination, calibration and stability measures."""

from __future__ import annotations

import numpy as np
import pytest

from rating.metrics import (
    DRIFT_PSI,
    auc,
    baseline,
    brier,
    calibration_by_grade,
    hosmer_lemeshow,
    ks,
    psi,
    stability,
)
from rating.points import CategoricalFeature, NumericFeature, PointsCard


def test_auc_and_ks_on_known_cases() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert ks([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9]) == 0.75
    assert ks([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)


def test_calibration_measures_see_a_miscalibrated_model() -> None:
    rng = np.random.default_rng(3)
    pd = rng.uniform(0.01, 0.5, 20_000)
    bad = (rng.uniform(size=pd.size) < pd).astype(int)
    _, p_good = hosmer_lemeshow(bad, pd)
    _, p_bad = hosmer_lemeshow(bad, np.clip(pd * 1.6, 0, 0.99))
    assert p_good > 0.01 > p_bad
    assert brier(bad, pd) < brier(bad, np.clip(pd * 1.6, 0, 0.99))
    rows = calibration_by_grade(bad, pd, np.where(pd < 0.2, "A", "B"), ["A", "B", "C"])
    assert [r.grade for r in rows] == ["A", "B"]
    assert rows[0].observed == pytest.approx(rows[0].predicted, abs=0.01)


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi([10, 20, 30, 40], [10, 20, 30, 40]) == pytest.approx(0.0, abs=1e-12)
    assert psi([0.1, 0.2, 0.7], [1, 2, 7]) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_shifted_distributions_passes_the_drift_threshold() -> None:
    assert psi([40, 30, 20, 10], [10, 20, 30, 40]) > DRIFT_PSI
    assert psi([50, 50, 0], [0, 50, 50]) > DRIFT_PSI  # empty bins stay finite
    assert 0 < psi([25, 25, 25, 25], [27, 24, 25, 24]) < 0.01
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def card() -> PointsCard:
    return PointsCard("t", (
        NumericFeature("ltv", (0.5, 0.7, 0.9), (30.0, 15.0, 0.0, -20.0)),
        CategoricalFeature("industry", (("a",), ("b",), ("c",)), (10.0, 0.0, -5.0)),
    ), 550.0)


def population(rng: np.random.Generator, n: int, ltv_mean: float) -> dict[str, np.ndarray]:
    return {"ltv": rng.normal(ltv_mean, 0.15, n), "industry": rng.choice(["a", "b", "c"], n)}


def test_stability_flags_the_feature_that_moved_and_the_score() -> None:
    rng = np.random.default_rng(7)
    c = card()
    base = baseline(c, population(rng, 20_000, 0.6))
    same = stability(c, base, population(rng, 20_000, 0.6))
    assert not same.drift
    assert max(same.feature_psi.values()) < 0.02 and same.score_psi < 0.02
    moved = stability(c, base, population(rng, 20_000, 0.9))
    assert moved.drift
    assert moved.feature_psi["ltv"] > DRIFT_PSI and moved.feature_psi["industry"] < 0.02
    assert set(moved.drifted) == {"ltv", "score"}
