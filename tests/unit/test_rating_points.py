"""Points scaling, the master scale and the points card shared by the expert and logistic cards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rating.points import CategoricalFeature, NumericFeature, PointsCard
from rating.scale import MASTER_SCALE, MasterScale, Scaling


def odds(pd: float) -> float:
    return (1 - pd) / pd


def test_pdo_points_double_the_odds() -> None:
    scaling = Scaling(base_points=600, base_odds=50, pdo=20)
    pd = scaling.pd_of_score([600.0, 620.0, 640.0, 580.0])
    assert odds(pd[0]) == pytest.approx(50)
    assert odds(pd[1]) == pytest.approx(100)
    assert odds(pd[2]) == pytest.approx(200)
    assert odds(pd[3]) == pytest.approx(25)
    assert scaling.score_of_pd(pd) == pytest.approx([600, 620, 640, 580])


def test_scaling_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Scaling(pdo=0)
    with pytest.raises(ValueError, match="finite"):
        Scaling(base_points=math.nan)


def card() -> PointsCard:
    return PointsCard("t", (
        NumericFeature("dpd", (1.0, 30.0), (40.0, 10.0, -30.0), missing_points=0.0),
        CategoricalFeature("industry", (("food", "pharma"), ("steel",)), (15.0, 0.0),
                           missing_points=-5.0, other_points=-10.0),
    ), base_points=560.0)


def test_points_bins_missing_and_other() -> None:
    batch = card().score({"dpd": [0, 1, 29.9, 30, np.nan], "industry": ["food", "steel", None,
                                                                          "casino", "pharma"]})
    assert batch.points.tolist() == [[40, 15], [10, 0], [10, -5], [-30, -10], [0, 15]]
    assert batch.score.tolist() == [615, 570, 565, 520, 575]


def test_a_better_bin_by_pdo_points_doubles_the_odds() -> None:
    c = PointsCard("t", (NumericFeature("x", (0.0,), (0.0, 20.0)),), 600.0, Scaling(600, 50, 20))
    batch = c.score({"x": [-1.0, 1.0]})
    assert odds(batch.pd[1]) / odds(batch.pd[0]) == pytest.approx(2.0)


def test_reason_codes_name_the_costliest_features_first() -> None:
    batch = card().score({"dpd": [45, 0, 5], "industry": ["steel", "food", "casino"]})
    worst = batch.rating(0)
    assert [(r.feature, r.points_lost, r.bin) for r in worst.reasons] == [
        ("dpd", 70.0, "[30, inf)"), ("industry", 15.0, "steel")]
    assert batch.rating(1).reasons == ()  # best bin everywhere: nothing to explain
    third = batch.rating(2)
    assert [(r.feature, r.points_lost, r.bin) for r in third.reasons] == [
        ("dpd", 30.0, "[1, 30)"), ("industry", 25.0, "other")]
    assert batch.rating(0, top=1).reasons[0].feature == "dpd"


def test_grades_follow_pd_bands_whatever_the_scaling() -> None:
    for scaling in (Scaling(600, 50, 20), Scaling(300, 10, 40)):
        c = PointsCard("t", (NumericFeature("x", (), (0.0,)),), 0.0, scaling)
        cuts = MASTER_SCALE.score_cutoffs(scaling)
        scores = np.concatenate([cuts + 0.01, [cuts[-1] - 1]])
        grades = MASTER_SCALE.grades_of_pd(scaling.pd_of_score(scores)).tolist()
        assert grades == list("ABCDEFG")
        assert c.rate_one({"x": 1.0}).grade == MASTER_SCALE.grades_of_pd(
            scaling.pd_of_score([0.0]))[0]


def test_master_scale_and_cards_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="one more grade"):
        MasterScale(("A", "B"), (0.1, 0.2))
    with pytest.raises(ValueError, match="rise strictly"):
        MasterScale(("A", "B", "C"), (0.2, 0.1))
    with pytest.raises(ValueError, match="splits"):
        NumericFeature("x", (2.0, 1.0), (0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="two groups"):
        CategoricalFeature("c", (("a",), ("a",)), (1.0, 2.0))
    with pytest.raises(ValueError, match="finite"):
        NumericFeature("x", (), (math.nan,))
    with pytest.raises(KeyError, match="industry"):
        card().score({"dpd": [1]})


def test_card_round_trips_through_a_dict() -> None:
    c = card()
    again = PointsCard.from_dict(c.to_dict())
    frame = {"dpd": [0, 5, np.nan], "industry": ["food", "x", None]}
    assert again.score(frame).score.tolist() == c.score(frame).score.tolist()
