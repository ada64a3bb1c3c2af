"""Rating drift on the Prometheus side: the gauge carries each subject's PSI of the latest run,
drops the series of an earlier card, is served from the engine's registry beside the engine's own
metrics; drift is strictly above the threshold."""

from __future__ import annotations

from datetime import date

from prometheus_client import generate_latest

from lending.metrics import EngineMetrics
from rating.metrics import DRIFT_PSI
from rating.monitoring import SCORE, Drift, RatingMetrics

DAY = date(2026, 11, 29)


def drift(version: int = 1, **psi: float) -> Drift:
    return Drift(DAY, "expert_v1", version, 200, "first_run", psi)


def value(metrics: RatingMetrics, subject: str, version: int = 1) -> float | None:
    return metrics.registry.get_sample_value(
        "pledgewatch_rating_psi", {"model": "expert_v1", "version": str(version),
                                   "subject": subject})


def test_the_gauge_carries_each_subjects_psi() -> None:
    metrics = RatingMetrics()
    metrics.publish(drift(score=0.31, ltv_max_90d=0.04))
    assert value(metrics, SCORE) == 0.31
    assert value(metrics, "ltv_max_90d") == 0.04


def test_a_new_run_replaces_the_series_of_the_earlier_card() -> None:
    metrics = RatingMetrics()
    metrics.publish(drift(1, score=0.5, ltv_max_90d=0.4))
    metrics.publish(drift(2, score=0.01))
    assert value(metrics, SCORE, 2) == 0.01
    assert value(metrics, SCORE, 1) is None and value(metrics, "ltv_max_90d", 1) is None
    metrics.publish(None)
    assert value(metrics, SCORE, 2) is None


def test_the_engines_registry_serves_the_gauge_beside_its_own() -> None:
    engine = EngineMetrics()
    RatingMetrics(engine.registry).publish(drift(score=0.27))
    text = generate_latest(engine.registry).decode()
    assert 'pledgewatch_rating_psi{model="expert_v1",subject="score",version="1"} 0.27' in text
    assert "pledgewatch_engine_lag_seconds" in text


def test_drift_is_strictly_above_the_threshold() -> None:
    d = drift(score=DRIFT_PSI + 1e-9, ltv_max_90d=DRIFT_PSI, tenure_months=0.1)
    assert d.drifted == (SCORE,)
    assert d.to_dict()["drifted"] == [SCORE]
    assert drift(score=0.0).drifted == ()
