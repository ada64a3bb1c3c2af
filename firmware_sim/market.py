"""Commodity price series for the simulator and the demo (pure, seeded), and their CSV form.

A series is a seeded geometric random walk: each step multiplies the price by
``exp(volatility * z)`` with ``z`` standard normal, so the same arguments give the same series.
A crash starting at index ``crash_at`` takes the price down by ``crash_fraction`` (on top of the
walk) spread evenly over ``crash_points`` points, and the level stays down afterwards.

:data:`PRICE_SCENARIOS` names ready-made shapes (``steady``, ``price-crash``) for
:func:`scenario_series`. The CSV form has the header ``time,commodity,price,currency`` with
times in RFC 3339 (UTC, ``Z``); :func:`read_prices_csv` rejects a malformed row with a
``ValueError`` that names its line.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from lending.domain.model import PricePoint

CSV_HEADER: tuple[str, ...] = ("time", "commodity", "price", "currency")
DEFAULT_CURRENCY = "CNY"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
PathOrFile = str | os.PathLike[str] | TextIO


class RowReader(Protocol):
    """What :func:`csv.reader` returns: rows, and the line the last row ended on."""

    @property
    def line_num(self) -> int: ...

    def __next__(self) -> list[str]: ...


def crash_factors(points: int, crash_at: int | None, crash_fraction: float, crash_points: int) -> np.ndarray:
    """Per-point multipliers: 1 before ``crash_at``, then falling to ``1 - crash_fraction``."""
    factors = np.ones(points)
    if crash_at is None:
        return factors
    done = np.clip(np.arange(points) - crash_at + 1, 0, crash_points) / crash_points
    return np.asarray((1.0 - crash_fraction) ** done, dtype=float)


def _check_series_args(
    start_price: float,
    points: int,
    step_s: float,
    volatility: float,
    crash_at: int | None,
    crash_fraction: float,
    crash_points: int,
) -> None:
    """``ValueError`` naming the first argument of :func:`price_series` that is out of range."""
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
) -> list[PricePoint]:
    """``points`` prices of ``commodity`` every ``step_s`` seconds from ``start`` (seeded walk).

    The first point is ``start_price`` (unless the crash starts at index 0). With ``crash_at``
    the price falls by ``crash_fraction`` over ``crash_points`` points starting at that index.
    """
    _check_series_args(start_price, points, step_s, volatility, crash_at, crash_fraction, crash_points)
    shocks = np.random.default_rng(seed).standard_normal(points)
    shocks[0] = 0.0
    walk = start_price * np.exp(np.cumsum(volatility * shocks))
    prices = walk * crash_factors(points, crash_at, crash_fraction, crash_points)
    return [
        PricePoint(commodity, start + timedelta(seconds=i * step_s), float(price), currency)
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
    ) -> list[PricePoint]:
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
) -> list[PricePoint]:
    """The series of price scenario ``name``; ``ValueError`` listing the known names if unknown."""
    try:
        scenario = PRICE_SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(PRICE_SCENARIOS))
        raise ValueError(f"unknown price scenario {name!r} (known: {known})") from None
    return scenario.series(
        commodity, start_price, start=start, points=points, step_s=step_s, seed=seed, currency=currency
    )


def format_time(time: datetime) -> str:
    """``time`` as RFC 3339 in UTC with a ``Z`` suffix."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; ``ValueError`` otherwise."""
    if not RFC3339.fullmatch(text):
        raise ValueError(f"bad time {text!r} (expected RFC 3339, e.g. 2024-01-01T00:00:00Z)")
    try:
        parsed = datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError:
        raise ValueError(f"bad time {text!r} (not a valid date/time)") from None
    return parsed.astimezone(UTC)


def parse_price(text: str) -> float:
    """A finite, positive price; ``ValueError`` otherwise."""
    try:
        price = float(text)
    except ValueError:
        raise ValueError(f"bad price {text!r} (not a number)") from None
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"bad price {text!r} (must be finite and positive)")
    return price


def parse_row(row: list[str]) -> PricePoint:
    """One CSV data row as a :class:`PricePoint`; ``ValueError`` saying what is wrong."""
    if len(row) != len(CSV_HEADER):
        raise ValueError(f"expected {len(CSV_HEADER)} columns {','.join(CSV_HEADER)}, got {len(row)}")
    time_text, commodity, price_text, currency = (cell.strip() for cell in row)
    if not commodity:
        raise ValueError("empty commodity")
    if not currency:
        raise ValueError("empty currency")
    return PricePoint(commodity, parse_time(time_text), parse_price(price_text), currency)


def write_prices_csv(points: Iterable[PricePoint], target: PathOrFile) -> int:
    """Write ``points`` as CSV (header first) to a path or an open text file; the row count."""
    if isinstance(target, str | os.PathLike):
        with Path(target).open("w", encoding="utf-8", newline="") as handle:
            return write_prices_csv(points, handle)
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    count = 0
    for point in points:
        writer.writerow((format_time(point.time), point.commodity, repr(point.price), point.currency))
        count += 1
    return count


def read_prices_csv(source: PathOrFile) -> list[PricePoint]:
    """The price points in a CSV path or open text file; ``ValueError`` naming a bad line."""
    if isinstance(source, str | os.PathLike):
        with Path(source).open(encoding="utf-8", newline="") as handle:
            return read_prices_csv(handle)
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError("line 1: empty price CSV (expected header time,commodity,price,currency)") from None
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: {exc}") from None
    if tuple(cell.strip() for cell in header) != CSV_HEADER:
        raise ValueError(f"line 1: expected header {','.join(CSV_HEADER)}, got {','.join(header)}")
    return list(_parse_rows(reader))


def _parse_rows(reader: RowReader) -> Iterator[PricePoint]:
    """Parse the data rows of ``reader`` (a ``csv.reader``), naming the line of any error."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"line {reader.line_num}: {exc}") from None
        if not any(cell.strip() for cell in row):
            continue
        try:
            yield parse_row(row)
        except ValueError as exc:
            raise ValueError(f"line {reader.line_num}: {exc}") from None


def prices_csv_text(points: Iterable[PricePoint]) -> str:
    """``points`` as CSV text (handy for tests and HTTP responses)."""
    buffer = io.StringIO()
    write_prices_csv(points, buffer)
    return buffer.getvalue()
