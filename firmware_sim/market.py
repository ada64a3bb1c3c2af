"""Commodity price series for the simulator and the demo (pure, seeded).

A series is a seeded geometric random walk: each step multiplies the price by
``exp(volatility * z)`` with ``z`` standard normal, so the same arguments give the same series.
A crash starting at index ``crash_at`` takes the price down by ``crash_fraction`` (on top of the
walk) spread evenly over ``crash_points`` points, and the level stays down afterwards.

:data:`PRICE_SCENARIOS` names ready-made shapes (``steady``, ``price-crash``) for
:func:`scenario_series`. A series is a list of :class:`PriceTick` (the simulator's own type: it
speaks only the MQTT contract); the composition layer turns ticks into the lending domain's
prices, and :mod:`lending.price_file` reads and writes them as CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

DEFAULT_CURRENCY = "CNY"


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One simulated price of one commodity at one instant (``time`` aware, in UTC)."""

    commodity: str
    time: datetime
    price: float
    currency: str = DEFAULT_CURRENCY


def crash_factors(points: int, crash_at: int | None, crash_fraction: float, crash_points: int) -> np.ndarray:
    """Per-point multipliers: 1 before ``crash_at``, then falling to ``1 - crash_fraction``."""
    factors = np.ones(points)
    if crash_at is None:
        return factors
    done = np.clip(np.arange(points) - crash_at + 1, 0, crash_points) / crash_points
    return np.asarray((1.0 - crash_fraction) ** done, dtype=float)


def _check_series_args(
    start: datetime,
    start_price: float,
    points: int,
    step_s: float,
    volatility: float,
    crash_at: int | None,
    crash_fraction: float,
    crash_points: int,
) -> None:
    """``ValueError`` naming the first argument of :func:`price_series` that is out of range."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware, got {start.isoformat()}")
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"start_price must be finite and positive, got {start_price!r}")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step_s must be finite and positive, got {step_s!r}")
    if not (math.isfinite(volatility) and volatility >= 0):
        raise ValueError(f"volatility must be finite and >= 0, got {volatility!r}")
    if crash_at is not None and not 0 <= crash_at < points:
        raise ValueError(f"crash_at must be an index in [0, {points}), got {crash_at}")
    if not 0 <= crash_fraction < 1:
        raise ValueError(f"crash_fraction must be in [0, 1), got {crash_fraction!r}")
    if crash_points < 1:
        raise ValueError(f"crash_points must be >= 1, got {crash_points}")


def price_series(
    commodity: str,
    start_price: float,
    *,
    start: datetime,
    points: int = 100,
    step_s: float = 3600.0,
    volatility: float = 0.01,
    seed: int = 0,
    crash_at: int | None = None,
    crash_fraction: float = 0.35,
    crash_points: int = 3,
    currency: str = DEFAULT_CURRENCY,
) -> list[PriceTick]:
    """``points`` prices of ``commodity`` every ``step_s`` seconds from ``start`` (seeded walk).

    The first point is ``start_price`` (unless the crash starts at index 0). With ``crash_at``
    the price falls by ``crash_fraction`` over ``crash_points`` points starting at that index.
    """
    _check_series_args(start, start_price, points, step_s, volatility, crash_at, crash_fraction, crash_points)
    shocks = np.random.default_rng(seed).standard_normal(points)
    shocks[0] = 0.0
    walk = start_price * np.exp(np.cumsum(volatility * shocks))
    prices = walk * crash_factors(points, crash_at, crash_fraction, crash_points)
    origin = start.astimezone(UTC)
    return [
        PriceTick(commodity, origin + timedelta(seconds=i * step_s), float(price), currency)
        for i, price in enumerate(prices)
    ]


@dataclass(frozen=True, slots=True)
class PriceScenario:
    """A named shape of price series: its volatility and whether (and where) it crashes."""

    name: str
    description: str
    volatility: float
    crash_fraction: float = 0.0
    crash_at_share: float = 0.5

    def series(
        self,
        commodity: str,
        start_price: float,
        *,
        start: datetime,
        points: int = 100,
        step_s: float = 3600.0,
        seed: int = 0,
        currency: str = DEFAULT_CURRENCY,
    ) -> list[PriceTick]:
        """This scenario's series; a crash starts ``crash_at_share`` of the way through."""
        crash_at = int(points * self.crash_at_share) if self.crash_fraction > 0 else None
        return price_series(
            commodity,
            start_price,
            start=start,
            points=points,
            step_s=step_s,
            volatility=self.volatility,
            seed=seed,
            crash_at=crash_at,
            crash_fraction=self.crash_fraction,
            currency=currency,
        )


PRICE_SCENARIOS: dict[str, PriceScenario] = {
    s.name: s
    for s in (
        PriceScenario("steady", "a calm market: small random moves", volatility=0.005),
        PriceScenario(
            "price-crash", "the price falls 35 % halfway through", volatility=0.01, crash_fraction=0.35
        ),
    )
}


def scenario_series(
    name: str,
    commodity: str,
    start_price: float,
    *,
    start: datetime,
    points: int = 100,
    step_s: float = 3600.0,
    seed: int = 0,
    currency: str = DEFAULT_CURRENCY,
) -> list[PriceTick]:
    """The series of price scenario ``name``; ``ValueError`` listing the known names if unknown."""
    try:
        scenario = PRICE_SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(PRICE_SCENARIOS))
        raise ValueError(f"unknown price scenario {name!r} (known: {known})") from None
    return scenario.series(
        commodity, start_price, start=start, points=points, step_s=step_s, seed=seed, currency=currency
    )
