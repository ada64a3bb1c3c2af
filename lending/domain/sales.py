"""Sales velocity by closed day: the series the sales-collapse rule judges.

A day with no sales is a 0, not a missing point, so a complete stop shows; the day still open
(and one that closed less than a grace period ago, for invoices posted overnight) is not judged,
so today's first invoice is never compared with full days; and while sales of days already
judged are still arriving (a history posted invoice by invoice) the series is *loading*, so the
rule holds until the load has settled and judges it once. Weekdays on which the borrower does not
usually sell (a weekday-only trader's weekends) are left out rather than counted as zeros, so they
are neither a collapse nor a history of zeros.

Pure: dated amounts in, daily totals out. Times are compared in UTC; days are the sites' local
days (``utc_offset_hours``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Sale:
    """A sales signal (or the total of several of the same day): when it happened, how much, and
    when the store received it (None when unknown: such a sale never counts as loading)."""

    time: datetime
    amount: float
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SalesDays:
    """Closed-day sales totals, oldest first, from the first day with a sale in the window to the
    last closed day (zero-filled, days of ``idle_weekdays`` left out); ``loading`` when a sale of a
    closed day arrived within the settle time."""

    totals: tuple[float, ...]
    first_day: date | None
    last_closed_day: date
    loading: bool
    open_total: float  # sales of days not yet judged (today, and a day still in its grace period)
    idle_weekdays: tuple[int, ...] = ()  # weekdays (0 = Monday) the borrower does not usually sell


MAX_DAYS = 3660  # the longest look-back a policy may ask for


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def local_day(t: datetime, utc_offset_hours: float) -> date:
    """The sites' local calendar day of ``t``."""
    return (_utc(t) + timedelta(hours=utc_offset_hours)).date()


def last_closed_day(now: datetime, utc_offset_hours: float, close_grace: timedelta) -> date:
    """The newest local day that ended at least ``close_grace`` before ``now``."""
    return local_day(_utc(now) - close_grace, utc_offset_hours) - timedelta(days=1)


def idle_weekdays(days: list[date], totals: list[float], trading_share: float) -> tuple[int, ...]:
    """Weekdays seen at least twice among ``days`` with a sale on fewer than ``trading_share`` of
    them."""
    seen = [0] * 7
    sold = [0] * 7
    for day, total in zip(days, totals, strict=True):
        seen[day.weekday()] += 1
        sold[day.weekday()] += total > 0
    return tuple(w for w in range(7) if seen[w] >= 2 and sold[w] < trading_share * seen[w])


def closed_days(sales: Iterable[Sale], now: datetime, *, days: int, utc_offset_hours: float,
                close_grace: timedelta, settle: timedelta,
                trading_share: float = 0.5) -> SalesDays:
    """The last ``days`` closed days' sales totals (see the module doc). Amounts that are not
    finite or are negative are ignored (the store refuses them; this never crashes on them).
    A weekday is idle when it had sales on fewer than ``trading_share`` of its days before the
    last closed day (seen twice at least); its days are left out."""
    days = min(max(1, int(days)), MAX_DAYS)
    last = last_closed_day(now, utc_offset_hours, close_grace)
    start = last - timedelta(days=days - 1)
    now_utc = _utc(now)
    totals: dict[date, float] = {}
    open_total = 0.0
    loading = False
    for sale in sales:
        amount = float(sale.amount)
        if not (math.isfinite(amount) and amount >= 0):
            continue
        try:
            day = local_day(sale.time, utc_offset_hours)
        except OverflowError:  # a time at the end of the calendar: no day of ours
            continue
        if day > last:
            open_total += amount
            continue
        if sale.recorded_at is not None and abs(now_utc - _utc(sale.recorded_at)) < settle:
            loading = True  # a judged day is still receiving sales: a history load under way
        if day >= start:
            totals[day] = totals.get(day, 0.0) + amount
    if not totals:
        return SalesDays((), None, last, loading, open_total)
    first = min(d for d, v in totals.items() if v > 0) if any(totals.values()) else None
    if first is None:
        return SalesDays((), None, last, loading, open_total)
    span = (last - first).days + 1
    dates = [first + timedelta(days=i) for i in range(span)]
    series = [totals.get(d, 0.0) for d in dates]
    idle = idle_weekdays(dates[:-1], series[:-1], trading_share)
    kept = tuple(v for d, v in zip(dates, series, strict=True) if d.weekday() not in idle)
    return SalesDays(kept, first, last, loading, open_total, idle)
