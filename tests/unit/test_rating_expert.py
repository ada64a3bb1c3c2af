"""The expert scorecard file: the shipped version loads and scores; hostile edits are refused with
an error that says what and where."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rating.expert import EXPERT_V1, ExpertFileError, load_expert, parse_expert


def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXPERT_V1.read_text())
    return doc


def indicator(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(i for i in doc["indicators"] if i["name"] == name)


def test_the_shipped_file_scores_grades_and_explains() -> None:
    card = load_expert()
    assert card.name == "expert_v1"
    strong = {"days_past_due_max_90d": 0, "ltv_max_90d": 0.4, "trust_below_one_share_30d": 0.0,
              "critical_alerts_90d": 0, "sales_trend_90d": 1.1, "core_on_time_share_180d": 0.99,
              "tenure_months": 60, "industry": "food_staples"}
    weak = {**strong, "days_past_due_max_90d": 45, "ltv_max_90d": 0.92, "industry": "casino"}
    best, worst = card.rate_one(strong), card.rate_one(weak)
    assert best.grade == "A" and best.reasons == ()
    assert best.score > worst.score and worst.grade > best.grade
    assert [r.feature for r in worst.reasons] == ["days_past_due_max_90d", "ltv_max_90d", "industry"]
    assert worst.reasons[0].points_lost == 80.0


def test_missing_values_take_the_missing_points() -> None:
    card = load_expert()
    row: dict[str, Any] = dict.fromkeys(card.feature_names, np.nan)
    row["industry"] = None
    expected = card.base_points + sum(i["missing_points"] for i in shipped()["indicators"])
    assert card.rate_one(row).score == pytest.approx(expected)


def refused(doc: Any, *fragments: str) -> str:
    with pytest.raises(ExpertFileError) as err:
        parse_expert(doc, "hostile.yaml")
    message = str(err.value)
    assert "hostile.yaml" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_bins_are_refused() -> None:
    doc = shipped()
    indicator(doc, "ltv_max_90d")["bins"] = []
    refused(doc, "indicators.1.bins", "at least 1")
    doc = shipped()
    del indicator(doc, "ltv_max_90d")["bins"]
    refused(doc, "indicators.1.bins", "Field required")
    doc = shipped()
    indicator(doc, "ltv_max_90d")["bins"].pop()  # the top bin: nothing scores LTV >= 0.8
    refused(doc, "last bin must have no 'to'")


def test_overlapping_and_gapped_bins_are_refused() -> None:
    doc = shipped()
    indicator(doc, "ltv_max_90d")["bins"][1]["from"] = 0.45
    refused(doc, "bins 1 and 2 overlap")
    doc = shipped()
    indicator(doc, "ltv_max_90d")["bins"][2]["from"] = 0.7
    refused(doc, "gap between bins 2 and 3")
    doc = shipped()
    indicator(doc, "industry")["bins"][1]["values"].append("food_staples")
    refused(doc, "more than one bin", "food_staples")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), ".nan", "forty"])
def test_points_must_be_finite_numbers(bad: Any) -> None:
    doc = shipped()
    indicator(doc, "tenure_months")["bins"][0]["points"] = bad
    refused(doc, "indicators.6.bins")


def test_nan_points_written_in_yaml_are_refused(tmp_path: Path) -> None:
    text = EXPERT_V1.read_text().replace("{to: 12, points: 0}", "{to: 12, points: .nan}")
    path = tmp_path / "expert.yaml"
    path.write_text(text)
    with pytest.raises(ExpertFileError, match="finite"):
        load_expert(path)


def test_unknown_and_miskinded_indicators_are_refused() -> None:
    doc = shipped()
    indicator(doc, "tenure_months")["name"] = "tenure_monhts"
    refused(doc, "unknown indicator 'tenure_monhts'", "known:")
    doc = shipped()
    indicator(doc, "industry")["name"] = "ltv_max_90d"
    refused(doc, "listed twice")
    doc = shipped()
    doc["indicators"].append({"name": "chain_tier", "missing_points": 0,
                              "bins": [{"points": 1}]})
    refused(doc, "chain_tier", "categorical")


def test_structure_errors_are_refused(tmp_path: Path) -> None:
    doc = shipped()
    doc["scaling"]["pdo"] = -20
    refused(doc, "scaling.pdo")
    doc = shipped()
    doc["surprise"] = 1
    refused(doc, "surprise", "Extra inputs")
    doc = copy.deepcopy(shipped())
    indicator(doc, "ltv_max_90d")["bins"][0]["pts"] = 3
    refused(doc, "pts")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ExpertFileError, match="mapping"):
        load_expert(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ExpertFileError, match="cannot read"):
        load_expert(tmp_path / "broken.yaml")
    with pytest.raises(ExpertFileError, match="cannot read"):
        load_expert(tmp_path / "absent.yaml")
