"""Mark-to-market: price volatility → haircut → lot value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lending.domain.model import PricePoint, ProductTerms

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Haircut:
    value: float
    daily_volatility: float  # standard deviation of daily log returns
    liquidation_days: float
    observations: int


def daily_closes(prices: Sequence[PricePoint]) -> list[PricePoint]:
    """The last price of each UTC day, oldest first."""
    closes: dict[int, PricePoint] = {}
    for p in sorted(prices, key=lambda p: p.time):
        closes[int(p.time.timestamp() // SECONDS_PER_DAY)] = p
    return [closes[day] for day in sorted(closes)]


_VOLATILITY: dict[int, tuple[tuple[PricePoint, ...], tuple[float, int]]] = {}
_VOLATILITY_KEPT = 64


def daily_volatility(prices: Sequence[PricePoint]) -> tuple[float, int]:
    """:func:`volatility_of`, remembered for a tuple of prices (immutable; the engine hands the
    same tuple to every lot of a commodity in a chunk, so it is computed once, not per lot). The
    memo holds the tuple itself, so its id cannot be reused while remembered."""
    if not isinstance(prices, tuple):
        return volatility_of(prices)
    hit = _VOLATILITY.get(id(prices))
    if hit is not None and hit[0] is prices:
        return hit[1]
    result = volatility_of(prices)
    if len(_VOLATILITY) >= _VOLATILITY_KEPT:
        _VOLATILITY.clear()
    _VOLATILITY[id(prices)] = (prices, result)
    return result


def volatility_of(prices: Sequence[PricePoint]) -> tuple[float, int]:
    """Root mean square of the log returns between daily closes, each scaled to one day by the
    square root of the days between them, and the number of returns used.

    Intraday ticks collapse to their day's close, so a live feed's tick spacing does not change
    the figure. Zero-mean (RiskMetrics-style): a steady fall is risk too, not a drift to subtract.
    Fewer than two days of prices give 0 volatility (the base haircut alone applies).
    """
    closes = daily_closes(prices)
    if len(closes) < 2:
        return 0.0, 0
    values = np.fromiter((p.price for p in closes), dtype=float, count=len(closes))
    days = np.fromiter((p.time.timestamp() // SECONDS_PER_DAY for p in closes), dtype=float,
                       count=len(closes))
    scaled = np.diff(np.log(values)) / np.sqrt(np.diff(days))
    return float(np.sqrt(np.mean(scaled * scaled))), int(scaled.size)


def haircut(prices: Sequence[PricePoint], liquidation_days: float, terms: ProductTerms) -> Haircut:
    """base + z × σ_daily × √(liquidation days), within [base, max]."""
    sigma, n = daily_volatility(prices)
    raw = terms.base_haircut + terms.haircut_z * sigma * math.sqrt(max(liquidation_days, 0.0))
    value = min(terms.max_haircut, max(terms.base_haircut, raw))
    return Haircut(value, sigma, liquidation_days, n)


def lot_value(quantity: float, price: float, cut: float) -> float:
    """Verified quantity × price × (1 − haircut)."""
    return quantity * price * (1.0 - cut)
