"""The credit matrix: vendors weighted by the borrower's Mahalanobis fit to their populations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rating.credit_matrix import (
    CreditMatrix,
    VendorPopulation,
    load_vendor_scores,
    score_columns,
)
from rating.scale import Scaling

SMALL = VendorPopulation("small_firms", Scaling(600, 50, 20), ("log_revenue", "age_years"),
                         (13.0, 4.0), ((1.0, 0.4), (0.4, 9.0)))
LARGE = VendorPopulation("large_firms", Scaling(80, 20, 10), ("log_revenue", "age_years"),
                         (18.0, 20.0), ((1.5, 0.0), (0.0, 36.0)))
TRADE = VendorPopulation("trade_bureau", Scaling(500, 30, 25), ("log_revenue",), (15.0,), ((4.0,),),
                         prior=0.5)
MATRIX = CreditMatrix((SMALL, LARGE, TRADE))


def profiles(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"log_revenue": rng.normal(15, 3, n), "age_years": rng.uniform(0, 40, n)}


def test_weights_sum_to_one_over_the_vendors_that_scored() -> None:
    n = 500
    rng = np.random.default_rng(1)
    scores = {"small_firms": rng.normal(600, 40, n), "large_firms": rng.normal(80, 10, n),
              "trade_bureau": np.where(rng.uniform(size=n) < 0.3, np.nan, rng.normal(500, 50, n))}
    result = MATRIX.combine(profiles(n), scores)
    assert np.allclose(result.weights.sum(axis=1), 1.0)
    assert np.all(result.weights >= 0)
    assert np.all(result.weights[np.isnan(scores["trade_bureau"]), 2] == 0)
    assert np.all(np.isfinite(result.score))


def test_the_closer_population_weighs_more() -> None:
    scores = {"small_firms": [650.0, 650.0], "large_firms": [60.0, 60.0], "trade_bureau": [np.nan] * 2}
    result = MATRIX.combine({"log_revenue": [13.0, 18.0], "age_years": [4.0, 20.0]}, scores)
    assert result.weights[0, 0] > 0.99 and result.weights[1, 1] > 0.99
    # a small firm takes the small-firm vendor's view: good; a large one the large-firm view: weak
    assert result.pd[0] < 0.02 < result.pd[1]
    assert not result.out_of_population.any()


def test_one_vendor_alone_passes_its_score_through_on_the_platform_scale() -> None:
    only = CreditMatrix((SMALL,))
    result = only.combine({"log_revenue": [13.0], "age_years": [4.0]}, {"small_firms": [620.0]})
    assert result.weights.tolist() == [[1.0]]
    assert result.score[0] == pytest.approx(620.0)  # same scaling as the platform's default
    assert result.grade[0] == "A"


def test_vendor_scales_are_put_on_log_odds_before_averaging() -> None:
    both = CreditMatrix((SMALL, VendorPopulation("twin", Scaling(300, 50, 10), SMALL.features,
                                                 SMALL.centroid, SMALL.covariance)))
    # 620 on 600/50/20 and 310 on 300/50/10 both mean odds 100:1
    result = both.combine({"log_revenue": [13.0], "age_years": [4.0]},
                          {"small_firms": [620.0], "twin": [310.0]})
    assert result.weights[0] == pytest.approx([0.5, 0.5])
    assert result.score[0] == pytest.approx(620.0)


def test_out_of_population_and_unscored_borrowers() -> None:
    result = MATRIX.combine({"log_revenue": [40.0, 13.0], "age_years": [4.0, 4.0]},
                            {"small_firms": [600.0, np.nan], "large_firms": [70.0, np.nan]})
    assert result.out_of_population.tolist() == [True, False]
    assert result.weights[0].sum() == pytest.approx(1.0)  # still a convex combination
    assert np.isnan(result.score[1]) and result.weights[1].sum() == 0 and result.grade[1] == ""


def test_populations_are_validated() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        VendorPopulation("v", Scaling(), ("a", "b"), (0.0, 0.0), ((1.0, 2.0), (2.0, 1.0)))
    with pytest.raises(ValueError, match="match 2 features"):
        VendorPopulation("v", Scaling(), ("a", "b"), (0.0,), ((1.0, 0.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="prior"):
        VendorPopulation("v", Scaling(), ("a",), (0.0,), ((1.0,),), prior=0)


def test_vendor_scores_csv(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("borrower,vendor,score\nb1,small_firms,610\nb1,large_firms,75\n"
                    "b2,trade_bureau,480.5\n")
    vendors = [v.vendor for v in MATRIX.vendors]
    by_borrower = load_vendor_scores(path, vendors)
    assert by_borrower == {"b1": {"small_firms": 610.0, "large_firms": 75.0},
                           "b2": {"trade_bureau": 480.5}}
    columns = score_columns(by_borrower, ["b1", "b2"], vendors)
    assert np.isnan(columns["small_firms"][1]) and columns["trade_bureau"][1] == 480.5
    result = MATRIX.combine({"log_revenue": [13.0, 15.0], "age_years": [4.0, 8.0]}, columns)
    assert np.allclose(result.weights.sum(axis=1), 1.0)
    for body, message in (("borrower,vendor,score\nb1,acme,600\n", "unknown vendor"),
                          ("borrower,vendor,score\nb1,small_firms,nan\n", "finite"),
                          ("borrower,vendor,score\nb1,small_firms,high\n", "not a number"),
                          ("borrower,vendor,score\nb1,small_firms,1\nb1,small_firms,2\n", "second"),
                          ("who,what\n", "header")):
        path.write_text(body)
        with pytest.raises(ValueError, match=message):
            load_vendor_scores(path, vendors)
