"""Platform features as scorecard columns: the windows end at midnight UTC after `as_of`; every
indicator becomes a column (numeric NaN or categorical None where the platform has no value), in
the borrowers' order, so the expert card scores stored features as they are."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from rating.expert import load_expert
from rating.features import day_end, indicator_columns
from rating.indicators import INDICATORS


def test_windows_end_at_midnight_utc_after_the_day() -> None:
    assert day_end(date(2026, 2, 28)) == datetime(2026, 3, 1, tzinfo=UTC)


def test_every_indicator_is_a_column_missing_values_included() -> None:
    rows: dict[str, dict[str, Any]] = {
        "b1": {"ltv_max_90d": 0.5, "industry": "steel", "alerts_by_type_90d": {"x": 1}},
        "b2": {"ltv_max_90d": None}}
    columns = indicator_columns(rows)
    assert set(columns) == set(INDICATORS)
    assert columns["ltv_max_90d"][0] == 0.5 and math.isnan(columns["ltv_max_90d"][1])
    assert columns["industry"] == ["steel", None]
    assert all(math.isnan(v) for v in columns["tenure_months"])


def test_the_expert_card_scores_stored_features_and_names_missing_ones() -> None:
    card = load_expert()
    good = {"days_past_due_max_90d": 0, "ltv_max_90d": 0.3, "trust_below_one_share_30d": 0.0,
            "critical_alerts_90d": 0, "sales_trend_90d": 1.0, "core_on_time_share_180d": 1.0,
            "tenure_months": 48.0, "industry": "food_staples"}
    batch = card.score(indicator_columns({"good": good, "new": {}}))
    assert batch.grade[0] < batch.grade[1]  # "A" before a worse grade
    new = batch.rating(1)
    assert new.reasons and all(r.bin == "missing" for r in new.reasons)
    assert batch.rating(0).reasons == ()
