"""`pledgewatch bench revalue`: whole-portfolio revaluation on a price tick, numpy vs a Python loop.

Builds a random book (:func:`lending.domain.revaluation.random_portfolio`), then on each repeat moves
every commodity price by a random factor in 0.9-1.1 and times :func:`revalue` (numpy) and, for the
first few ticks, :func:`revalue_python` (the plain-Python baseline) on the same data in the same
run, checking that both give the same answer. Prints medians and the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import numpy as np

from bench.stats import median
from lending.domain.revaluation import (
    Revaluation,
    RevaluationLists,
    random_portfolio,
    revalue,
    revalue_python,
    to_lists,
)

PYTHON_REPEATS_MAX = 3


def check_agree(fast: Revaluation, slow: RevaluationLists) -> None:
    """Raise ``RuntimeError`` naming the first field where numpy and the Python loop differ."""
    for f in fields(Revaluation):
        a = getattr(fast, f.name)
        b = np.asarray(getattr(slow, f.name))
        same = np.array_equal(a, b) if a.dtype == np.bool_ else np.allclose(a, b)
        if a.shape != b.shape or not same:
            raise RuntimeError(f"numpy and python revaluations disagree on {f.name}")


def run(
    lots: int = 1_000_000,
    facilities: int | None = None,
    repeats: int = 5,
    out: Callable[[str], Any] = print,
    seed: int = 0,
) -> dict[str, Any]:
    """Time numpy vs Python revaluation of ``lots`` lots over ``facilities`` facilities
    (default lots // 10) for ``repeats`` price ticks; the Python loop runs on the first
    min(repeats, 3) ticks only. Returns the figures as a dict."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    n_facilities = facilities if facilities is not None else max(1, lots // 10)
    book = random_portfolio(lots, n_facilities, seed=seed)
    book.validate()
    python_repeats = min(repeats, PYTHON_REPEATS_MAX)
    out(f"revalue: {lots:,} lots, {n_facilities:,} facilities, {book.commodities} commodities, "
        f"{repeats} price ticks (python loop on the first {python_repeats})")

    rng = np.random.default_rng(seed + 1)
    base_price = book.commodity_price.copy()
    book_lists = to_lists(book)  # converted once, outside the timing; only prices change per tick
    numpy_ms: list[float] = []
    python_ms: list[float] = []
    for tick in range(repeats):
        book.commodity_price = base_price * rng.uniform(0.9, 1.1, size=book.commodities)
        start = time.perf_counter()
        fast = revalue(book)
        numpy_ms.append((time.perf_counter() - start) * 1e3)
        if tick < python_repeats:
            ticked = replace(book_lists, commodity_price=book.commodity_price.tolist())
            start = time.perf_counter()
            slow = revalue_python(ticked)
            python_ms.append((time.perf_counter() - start) * 1e3)
            check_agree(fast, slow)

    np_med, py_med = median(numpy_ms), median(python_ms)
    speedup = py_med / np_med if np_med > 0 else float("inf")
    out(f"numpy {np_med:.1f} ms")
    out(f"python {py_med:.1f} ms")
    out(f"speedup {speedup:.0f}x")
    out(f"(medians; numpy min {min(numpy_ms):.1f} / max {max(numpy_ms):.1f} ms over {repeats} ticks, "
        f"python min {min(python_ms):.1f} / max {max(python_ms):.1f} ms over {python_repeats}; "
        "results agree)")
    return {
        "lots": lots,
        "facilities": n_facilities,
        "commodities": book.commodities,
        "repeats": repeats,
        "python_repeats": python_repeats,
        "numpy_ms": np_med,
        "python_ms": py_med,
        "speedup": speedup,
        "numpy_ms_all": numpy_ms,
        "python_ms_all": python_ms,
        "agree": True,
    }
