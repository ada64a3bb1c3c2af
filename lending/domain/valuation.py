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


def daily_volatility(prices: Sequence[PricePoint]) -> tuple[float, int]:
    """Root mean square of log returns scaled to one day, and the number of returns used.

    Returns are scaled by the square root of each interval, so ticks at any spacing give a daily
    figure. Fewer than two prices give 0 volatility (the base haircut alone applies).
    """
    if len(prices) < 2:
        return 0.0, 0
    ordered = sorted(prices, key=lambda p: p.time)
    values = np.fromiter((p.price for p in ordered), dtype=float, count=len(ordered))
    seconds = np.fromiter((p.time.timestamp() for p in ordered), dtype=float, count=len(ordered))
    gaps_days = np.diff(seconds) / SECONDS_PER_DAY
    keep = gaps_days > 0
    if not keep.any():
        return 0.0, 0
    scaled = np.diff(np.log(values))[keep] / np.sqrt(gaps_days[keep])
    # Zero-mean (RiskMetrics-style) RMS: a steady fall is risk too, not a drift to subtract.
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
