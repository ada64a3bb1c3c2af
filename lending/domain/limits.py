"""Borrowing base, dynamic limit and LTV of one facility, with every input kept.

limit = min(line, Σ lot value × advance rate × trust + Σ eligible receivables × AR rate − reserves)
available = limit − outstanding;  LTV = outstanding ÷ trust-weighted collateral (Σ lot value × trust),
so goods the sensors cannot vouch for (a truck outside its geofence: trust 0) move the LTV too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from lending.domain.model import Facility, Receivable
from lending.domain.quantity import Verified
from lending.domain.valuation import Haircut, lot_value


@dataclass(frozen=True, slots=True)
class LotLine:
    """One lot's contribution to the borrowing base, with its inputs."""

    lot_id: str
    commodity: str
    declared: float
    verified: float
    pledged: float
    trust: float
    trust_factors: dict[str, float]
    price: float | None  # quoted per commodity unit
    units_per_quote: float  # lot units → quoted units (unit weight ÷ commodity unit weight)
    price_time: str | None
    haircut: float
    volatility: float
    value: float  # pledged × units_per_quote × price × (1 − haircut)
    advance_rate: float
    contribution: float  # value × advance rate × trust


@dataclass(frozen=True, slots=True)
class LimitSnapshot:
    """A facility's limit at one moment and everything it was computed from."""

    facility_id: str
    time: datetime
    currency: str
    line: float
    outstanding: float
    reserves: float
    collateral_value: float  # Σ lot value (haircut market value of the pledged goods)
    trusted_collateral_value: float  # Σ lot value × trust: what LTV and the value floor measure
    lots_base: float
    eligible_receivables: float
    ar_advance_rate: float
    receivables_base: float
    borrowing_base: float
    limit: float
    available: float
    ltv: float  # outstanding ÷ trusted collateral; math.inf when there is debt and none
    warning_ltv: float
    liquidation_ltv: float
    lots: tuple[LotLine, ...]
    binding: str  # "line" or "borrowing base": which side of the min() set the limit

    def inputs(self) -> dict[str, Any]:
        """Every input as plain JSON-able values (the snapshot's explanation): what
        ``dataclasses.asdict`` gives, built field by field (asdict deep-copies every value, a
        third of a price tick's cost per facility)."""
        data = {name: getattr(self, name) for name in _SNAPSHOT_FIELDS}
        lots = []
        for lot in self.lots:
            line = {name: getattr(lot, name) for name in _LOT_FIELDS}
            line["trust_factors"] = dict(lot.trust_factors)
            lots.append(line)
        data["lots"] = tuple(lots)
        data["time"] = self.time.isoformat()
        data["ltv"] = None if math.isinf(self.ltv) else self.ltv
        return data

    def explain(self) -> str:
        """A short human explanation of how the limit came about."""
        cur = self.currency
        lines = [
            (f"limit {self.limit:,.2f} {cur} = min(line {self.line:,.2f}, borrowing base "
            f"{self.borrowing_base:,.2f}) — bound by the {self.binding}"),
            (f"  borrowing base = lots {self.lots_base:,.2f} + receivables "
            f"{self.eligible_receivables:,.2f} × {self.ar_advance_rate:.0%} − reserves "
            f"{self.reserves:,.2f}"),
        ]
        for lot in self.lots:
            price = "no price" if lot.price is None else f"{lot.price:,.2f}/quoted unit"
            why = ", ".join(f"{k} ×{v:.2f}" for k, v in sorted(lot.trust_factors.items()))
            lines.append(
                f"  lot {lot.lot_id} ({lot.commodity}): pledged {lot.pledged:,.1f} of declared "
                f"{lot.declared:,.1f} (verified {lot.verified:,.1f}) × {lot.units_per_quote:g}"
                f" × price {price} × "
                f"(1 − haircut {lot.haircut:.1%}) = {lot.value:,.2f}; × advance "
                f"{lot.advance_rate:.0%} × trust {lot.trust:.2f}{' (' + why + ')' if why else ''}"
                f" = {lot.contribution:,.2f}"
            )
        ltv = "∞" if math.isinf(self.ltv) else f"{self.ltv:.1%}"
        lines.append(
            f"  outstanding {self.outstanding:,.2f}, available {self.available:,.2f}, LTV {ltv} "
            f"of trusted collateral {self.trusted_collateral_value:,.2f} (collateral "
            f"{self.collateral_value:,.2f} × trust; warning {self.warning_ltv:.0%}, liquidation "
            f"{self.liquidation_ltv:.0%})"
        )
        return "\n".join(lines)


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(LimitSnapshot))
_LOT_FIELDS = tuple(f.name for f in fields(LotLine))


def lot_line(lot_id: str, commodity: str, declared: float, verified: Verified,
             price: float | None, units_per_quote: float, price_time: datetime | None,
             cut: Haircut, advance_rate: float) -> LotLine:
    value = 0.0 if price is None else lot_value(verified.pledged * units_per_quote, price, cut.value)
    return LotLine(
        lot_id=lot_id, commodity=commodity, declared=declared, verified=verified.quantity,
        pledged=verified.pledged, trust=verified.trust, trust_factors=dict(verified.factors),
        price=price, units_per_quote=units_per_quote,
        price_time=None if price_time is None else price_time.isoformat(),
        haircut=cut.value, volatility=cut.daily_volatility, value=value,
        advance_rate=advance_rate, contribution=value * advance_rate * verified.trust,
    )


def loan_to_value(outstanding: float, collateral: float) -> float:
    if collateral > 0:
        return outstanding / collateral
    return math.inf if outstanding > 0 else 0.0


def compute_limit(facility: Facility, lots: Sequence[LotLine], receivables: Iterable[Receivable],
                  now: datetime, sums: tuple[float, float, float] | None = None) -> LimitSnapshot:
    """The facility's limit snapshot from its valued lots and receivables; ``sums``: Σ value,
    Σ value × trust and Σ contribution of ``lots`` when already summed in lot order (the
    vectorised value phase of :func:`lending.domain.assess.assess_many`; the same floats)."""
    terms = facility.terms
    if sums is None:
        collateral = sum(line.value for line in lots)
        trusted = sum(line.value * line.trust for line in lots)
        lots_base = sum(line.contribution for line in lots)
    else:
        collateral, trusted, lots_base = sums
    eligible = sum(r.amount for r in receivables
                   if r.eligible(now, terms.receivable_max_days_past_due))
    receivables_base = eligible * terms.ar_advance_rate
    base = lots_base + receivables_base - facility.reserves
    limit = max(0.0, min(facility.line, base))
    return LimitSnapshot(
        facility_id=facility.id, time=now, currency=facility.currency, line=facility.line,
        outstanding=facility.outstanding, reserves=facility.reserves, collateral_value=collateral,
        trusted_collateral_value=trusted, lots_base=lots_base, eligible_receivables=eligible,
        ar_advance_rate=terms.ar_advance_rate,
        receivables_base=receivables_base, borrowing_base=base, limit=limit,
        available=limit - facility.outstanding, ltv=loan_to_value(facility.outstanding, trusted),
        warning_ltv=terms.warning_ltv, liquidation_ltv=terms.liquidation_ltv, lots=tuple(lots),
        binding="line" if facility.line <= base else "borrowing base",
    )


def limit_moved(old: LimitSnapshot | None, new: LimitSnapshot, *, tolerance: float = 0.005) -> bool:
    """True when the limit or LTV moved by more than ``tolerance`` (relative) or a lot's trust did."""
    if old is None:
        return True
    scale = max(abs(old.limit), 1.0)
    if abs(new.limit - old.limit) > tolerance * scale:
        return True
    if math.isinf(old.ltv) != math.isinf(new.ltv):
        return True
    if not math.isinf(new.ltv) and abs(new.ltv - old.ltv) > tolerance:
        return True
    if abs(new.outstanding - old.outstanding) > tolerance * max(old.outstanding, 1.0):
        return True
    trust_before = {lot.lot_id: lot.trust for lot in old.lots}
    return any(abs(lot.trust - trust_before.get(lot.lot_id, -1.0)) > tolerance for lot in new.lots) \
        or len(old.lots) != len(new.lots)


def _money(value: float | None) -> str:
    return "none" if value is None else f"{value:,.2f}"


def explain_change(old: LimitSnapshot, new: LimitSnapshot) -> list[str]:
    """Why the limit moved from ``old`` to ``new``: the inputs that changed, largest first."""
    changes: list[tuple[float, str]] = []
    before = {lot.lot_id: lot for lot in old.lots}
    for lot in new.lots:
        prev = before.pop(lot.lot_id, None)
        if prev is None:
            changes.append((lot.contribution, f"lot {lot.lot_id} added: +{lot.contribution:,.2f}"))
            continue
        delta = lot.contribution - prev.contribution
        if abs(delta) < 0.005:
            continue
        parts = []
        if abs(lot.pledged - prev.pledged) >= 0.05:
            parts.append(f"quantity {prev.pledged:,.1f} → {lot.pledged:,.1f}")
        if lot.price != prev.price:
            parts.append(f"price {_money(prev.price)} → {_money(lot.price)}")
        if abs(lot.haircut - prev.haircut) >= 0.0005:
            parts.append(f"haircut {prev.haircut:.1%} → {lot.haircut:.1%}")
        if abs(lot.trust - prev.trust) >= 0.005:
            parts.append(f"trust {prev.trust:.2f} → {lot.trust:.2f}")
        changes.append((delta, f"lot {lot.lot_id}: {delta:+,.2f} ({', '.join(parts)})"))
    changes.extend((-lot.contribution, f"lot {lot.lot_id} removed: {-lot.contribution:+,.2f}")
                   for lot in before.values())
    if abs(new.receivables_base - old.receivables_base) >= 0.005:
        delta = new.receivables_base - old.receivables_base
        changes.append((delta, f"eligible receivables: {delta:+,.2f}"))
    if abs(new.outstanding - old.outstanding) >= 0.005:
        changes.append((0.0, f"outstanding {old.outstanding:,.2f} → {new.outstanding:,.2f}"))
    return [text for _, text in sorted(changes, key=lambda c: -abs(c[0]))]
