"""Develop a logistic scorecard end to end: split, fit on the training part, measure on the
held-out part, keep the monitoring baseline, and register the result as a challenger."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from rating.logistic import FitOptions, LogisticScorecard, fit_logistic
from rating.metrics import Baseline, Performance, baseline, performance
from rating.registry import Artefact, Registry


@dataclass(frozen=True)
class Development:
    scorecard: LogisticScorecard
    train: Performance
    validation: Performance
    baseline: Baseline


def develop(frame: pd.DataFrame, bad: np.ndarray, categorical: list[str],
            options: FitOptions | None = None, validation_share: float = 0.3,
            seed: int = 0) -> Development:
    x_train, x_valid, y_train, y_valid = train_test_split(
        frame, bad, test_size=validation_share, stratify=bad, random_state=seed)
    scorecard = fit_logistic(x_train, y_train, categorical, options)
    return Development(scorecard, performance(scorecard.card, x_train, y_train),
                       performance(scorecard.card, x_valid, y_valid),
                       baseline(scorecard.card, x_train))


def register(registry: Registry, dev: Development, data: str) -> Artefact:
    sc = dev.scorecard
    review = {"data": data, "intercept": sc.intercept, "coefficients": sc.coefficients,
              "iv": sc.iv, "dropped_for_sign": list(sc.dropped_for_sign),
              "binned": {n: asdict(b) for n, b in sc.binned.items()},
              "train": dev.train.to_dict()}
    return registry.register("logistic", sc.card, dev.validation.to_dict(), dev.baseline, review)
