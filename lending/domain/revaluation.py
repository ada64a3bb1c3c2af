"""Whole-portfolio revaluation on a price tick, vectorised with numpy.

A price tick moves every lot of a commodity at once, so the whole book can be revalued in one pass
over flat arrays (structure of arrays) instead of looping over lots:

    lot value        = verified quantity * price[commodity] * (1 - haircut[commodity])
    collateral       = sum of lot values per facility
    borrowing base   = sum(lot value * advance rate * trust) + receivables * AR rate - reserves
    limit            = max(0, min(line, borrowing base));  available = limit - outstanding
    LTV              = outstanding / collateral (inf with no collateral but a balance, 0 with neither)
    flags            = LTV >= warning, LTV >= liquidation, collateral < value floor

:func:`revalue_python` is the same computation as a plain-Python loop, kept as the benchmark
baseline and as an independent check; both sum in lot order, so they agree to the last bit.

Nothing in the running system calls this module yet: the engine (:mod:`lending.engine`) assesses
facility by facility (:func:`lending.domain.assess.assess`, with trust, haircuts from volatility and
the alert rules). This kernel is what a vectorised engine path would use for the price-tick part of
that work; today only its benchmark, ``pledgewatch bench revalue`` (``bench/revalue.py``), and the
unit tests run it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Indices = NDArray[np.intp]
Flags = NDArray[np.bool_]


@dataclass
class PortfolioArrays:
    """A portfolio as flat arrays. Lot arrays have one entry per pledged lot, commodity arrays one
    per commodity, facility arrays one per facility; lots point at their facility and commodity by
    index. Ratios are fractions (0.6 = 60 %). ``lot_advance_rate`` is the advance (pledge) rate of
    the lot's facility terms, copied per lot so the kernel needs no extra gather."""

    lot_facility: Indices
    lot_commodity: Indices
    lot_quantity: Floats
    lot_trust: Floats
    lot_advance_rate: Floats
    commodity_price: Floats
    commodity_haircut: Floats
    facility_line: Floats
    facility_outstanding: Floats
    facility_receivables: Floats
    facility_ar_rate: Floats
    facility_reserves: Floats
    facility_warning_ltv: Floats
    facility_liquidation_ltv: Floats
    facility_value_floor: Floats

    @property
    def lots(self) -> int:
        return int(self.lot_facility.shape[0])

    @property
    def facilities(self) -> int:
        return int(self.facility_line.shape[0])

    @property
    def commodities(self) -> int:
        return int(self.commodity_price.shape[0])

    def validate(self) -> None:
        """Raise ``ValueError`` unless shapes match and every index points at a real row.
        One O(lots) pass; call it when the arrays are built, not on every tick."""
        for name, group, size in (("lot_", "lot", self.lots), ("commodity_", "commodity", self.commodities),
                                  ("facility_", "facility", self.facilities)):
            for f in fields(self):
                arr = getattr(self, f.name)
                if f.name.startswith(name) and arr.shape != (size,):
                    raise ValueError(f"{f.name} has shape {arr.shape}, expected ({size},) "
                                     f"like the other {group} arrays")
        for name, bound in (("lot_facility", self.facilities), ("lot_commodity", self.commodities)):
            idx = getattr(self, name)
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= bound):
                raise ValueError(f"{name} holds an index outside 0..{bound - 1}")


@dataclass
class Revaluation:
    """Per-lot values and per-facility results of :func:`revalue`."""

    lot_value: Floats
    collateral: Floats
    borrowing_base: Floats
    limit: Floats
    available: Floats
    ltv: Floats
    above_warning: Flags
    above_liquidation: Flags
    below_floor: Flags


def _sum_by_facility(lot_facility: Indices, weights: Floats, facilities: int) -> Floats:
    """Per-facility sums in lot order (np.bincount returns int64 for an empty input, hence the guard)."""
    if lot_facility.size == 0:
        return np.zeros(facilities, dtype=np.float64)
    # already float64 with weights (no copy); the stubs type bincount as integer
    return np.bincount(lot_facility, weights=weights, minlength=facilities).astype(np.float64, copy=False)


def revalue(p: PortfolioArrays) -> Revaluation:
    """Revalue every lot and facility of ``p`` at its current commodity prices (numpy kernel)."""
    facilities = p.facilities
    unit_value = p.commodity_price * (1.0 - p.commodity_haircut)  # one entry per commodity
    lot_value = np.take(unit_value, p.lot_commodity)
    lot_value *= p.lot_quantity
    collateral = _sum_by_facility(p.lot_facility, lot_value, facilities)

    lendable = np.multiply(lot_value, p.lot_advance_rate)
    lendable *= p.lot_trust
    base = _sum_by_facility(p.lot_facility, lendable, facilities)
    del lendable
    base += p.facility_receivables * p.facility_ar_rate
    base -= p.facility_reserves

    limit = np.minimum(p.facility_line, base)
    np.maximum(limit, 0.0, out=limit)
    available = limit - p.facility_outstanding

    outstanding = p.facility_outstanding
    has_collateral = collateral > 0.0
    ltv = np.where(outstanding > 0.0, np.inf, 0.0)
    with np.errstate(over="ignore"):  # a vanishing (subnormal) collateral gives LTV inf, as in Python
        np.divide(outstanding, collateral, out=ltv, where=has_collateral)
    return Revaluation(
        lot_value=lot_value,
        collateral=collateral,
        borrowing_base=base,
        limit=limit,
        available=available,
        ltv=ltv,
        above_warning=ltv >= p.facility_warning_ltv,
        above_liquidation=ltv >= p.facility_liquidation_ltv,
        below_floor=collateral < p.facility_value_floor,
    )


@dataclass
class PortfolioLists:
    """The same portfolio as plain Python lists (the input of :func:`revalue_python`)."""

    lot_facility: list[int]
    lot_commodity: list[int]
    lot_quantity: list[float]
    lot_trust: list[float]
    lot_advance_rate: list[float]
    commodity_price: list[float]
    commodity_haircut: list[float]
    facility_line: list[float]
    facility_outstanding: list[float]
    facility_receivables: list[float]
    facility_ar_rate: list[float]
    facility_reserves: list[float]
    facility_warning_ltv: list[float]
    facility_liquidation_ltv: list[float]
    facility_value_floor: list[float]


@dataclass
class RevaluationLists:
    """:class:`Revaluation` as plain Python lists."""

    lot_value: list[float]
    collateral: list[float]
    borrowing_base: list[float]
    limit: list[float]
    available: list[float]
    ltv: list[float]
    above_warning: list[bool]
    above_liquidation: list[bool]
    below_floor: list[bool]


def to_lists(p: PortfolioArrays) -> PortfolioLists:
    """Convert once with ``.tolist()`` (outside any timing) for :func:`revalue_python`."""
    return PortfolioLists(**{f.name: getattr(p, f.name).tolist() for f in fields(PortfolioArrays)})


def revalue_python(p: PortfolioLists) -> RevaluationLists:
    """:func:`revalue` as a plain-Python loop: the baseline, with the same operation order."""
    unit_value = [price * (1.0 - haircut) for price, haircut in zip(p.commodity_price, p.commodity_haircut,
                                                                  strict=True)]
    facilities = len(p.facility_line)
    collateral = [0.0] * facilities
    lendable = [0.0] * facilities
    lot_value = [0.0] * len(p.lot_facility)
    for i, (fac, com, qty, trust, rate) in enumerate(zip(p.lot_facility, p.lot_commodity, p.lot_quantity,
                                                         p.lot_trust, p.lot_advance_rate, strict=True)):
        value = unit_value[com] * qty
        lot_value[i] = value
        collateral[fac] += value
        lendable[fac] += value * rate * trust

    base: list[float] = []
    limit: list[float] = []
    available: list[float] = []
    ltv: list[float] = []
    above_warning: list[bool] = []
    above_liquidation: list[bool] = []
    below_floor: list[bool] = []
    for f in range(facilities):
        b = lendable[f] + p.facility_receivables[f] * p.facility_ar_rate[f] - p.facility_reserves[f]
        lim = max(min(p.facility_line[f], b), 0.0)
        out = p.facility_outstanding[f]
        coll = collateral[f]
        ratio = out / coll if coll > 0.0 else (float("inf") if out > 0.0 else 0.0)
        base.append(b)
        limit.append(lim)
        available.append(lim - out)
        ltv.append(ratio)
        above_warning.append(ratio >= p.facility_warning_ltv[f])
        above_liquidation.append(ratio >= p.facility_liquidation_ltv[f])
        below_floor.append(coll < p.facility_value_floor[f])
    return RevaluationLists(lot_value, collateral, base, limit, available, ltv,
                            above_warning, above_liquidation, below_floor)


def random_portfolio(lots: int, facilities: int, commodities: int = 20, seed: int = 0) -> PortfolioArrays:
    """A plausible random book for benchmarks and tests, lots in random facility order.

    Prices are log-normal around 500 per unit, haircuts 5-40 %, advance rates 50-80 % per facility,
    about one lot in ten has reduced trust, lines sit between 60 % and 160 % of the facility's
    lendable value (so both the line and the base bind), drawings up to the line, receivables on
    about half the facilities, reserves up to 2 % of the line, warning LTV 55-75 % with the
    liquidation line 10-20 points above it, value floors up to 110 % of the collateral value.
    Facilities without lots (zero collateral) occur naturally for small books.
    """
    if facilities < 1 or commodities < 1 or lots < 0:
        raise ValueError("need at least one facility and one commodity, and lots >= 0")
    rng = np.random.default_rng(seed)
    lot_facility = rng.integers(0, facilities, size=lots, dtype=np.intp)
    lot_commodity = rng.integers(0, commodities, size=lots, dtype=np.intp)
    lot_quantity = rng.uniform(1.0, 1_000.0, size=lots)
    lot_trust = np.where(rng.random(lots) < 0.9, 1.0, rng.uniform(0.0, 1.0, size=lots))
    facility_advance = rng.uniform(0.5, 0.8, size=facilities)
    lot_advance_rate = np.take(facility_advance, lot_facility)
    price = rng.lognormal(np.log(500.0), 1.0, size=commodities)
    haircut = rng.uniform(0.05, 0.4, size=commodities)

    lot_value = lot_quantity * np.take(price * (1.0 - haircut), lot_commodity)
    collateral = _sum_by_facility(lot_facility, lot_value, facilities)
    lendable = _sum_by_facility(lot_facility, lot_value * lot_advance_rate * lot_trust, facilities)
    line = np.round(np.maximum(lendable, 1_000.0) * rng.uniform(0.6, 1.6, size=facilities), 2)
    outstanding = np.round(line * rng.uniform(0.0, 1.0, size=facilities), 2)
    outstanding[rng.random(facilities) < 0.05] = 0.0
    receivables = np.round(line * rng.uniform(0.0, 0.5, size=facilities), 2)
    receivables[rng.random(facilities) < 0.5] = 0.0
    warning = rng.uniform(0.55, 0.75, size=facilities)
    return PortfolioArrays(
        lot_facility=lot_facility,
        lot_commodity=lot_commodity,
        lot_quantity=lot_quantity,
        lot_trust=lot_trust,
        lot_advance_rate=lot_advance_rate,
        commodity_price=price,
        commodity_haircut=haircut,
        facility_line=line,
        facility_outstanding=outstanding,
        facility_receivables=receivables,
        facility_ar_rate=rng.uniform(0.8, 0.85, size=facilities),
        facility_reserves=np.round(line * rng.uniform(0.0, 0.02, size=facilities), 2),
        facility_warning_ltv=warning,
        facility_liquidation_ltv=warning + rng.uniform(0.1, 0.2, size=facilities),
        facility_value_floor=np.round(collateral * rng.uniform(0.0, 1.1, size=facilities), 2),
    )
