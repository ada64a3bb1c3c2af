"""T+0 reconciliation without I/O: the bank's core-ledger statement against the platform's drawdowns
and repayments, and goods three ways (sensors, the warehouse operator's stock ledger, the pledge).

Money matches by reference first (a disbursement carries the drawdown id as its end-to-end
reference; a repayment ``rp-<id>``); a credit whose reference the platform does not know is matched
to an unmatched repayment of the same facility, amount and value date. What is left are breaks:

* ``duplicate`` — a reference the statement books more than once (every line after the first);
* ``missing_in_platform`` — a statement line nothing in the platform explains;
* ``missing_in_bank`` — a drawdown or repayment of the statement's accounts and period the bank
  did not book;
* ``amount_mismatch`` — same reference, another amount, currency or direction;
* ``date_mismatch`` — same reference and amount, a value date further apart than the tolerance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

Direction = Literal["debit", "credit"]  # debit: money out of the bank (a disbursement)
BreakKind = Literal["duplicate", "missing_in_platform", "missing_in_bank", "amount_mismatch",
                    "date_mismatch"]


@dataclass(frozen=True, slots=True)
class BankLine:
    line: int  # where it is in the statement file (1-based)
    facility_id: str  # the loan account
    reference: str
    amount: Decimal
    currency: str
    direction: Direction
    value_date: date


@dataclass(frozen=True, slots=True)
class PlatformMove:
    reference: str  # a drawdown id, or rp-<repayment id>
    facility_id: str
    amount: Decimal
    currency: str
    direction: Direction
    value_date: date


@dataclass(frozen=True, slots=True)
class Break:
    kind: BreakKind
    facility_id: str
    reference: str
    detail: str
    bank_line: int | None = None
    platform_reference: str | None = None


@dataclass
class Reconciliation:
    matched: list[tuple[int, str]] = field(default_factory=list)  # (bank line, platform reference)
    breaks: list[Break] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for b in self.breaks:
            out[b.kind] += 1
        return dict(out)


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def reconcile(bank: Sequence[BankLine], platform: Iterable[PlatformMove], *,
              date_tolerance_days: int = 0) -> Reconciliation:
    """Match ``bank`` against ``platform`` (the moves of the statement's accounts and period)."""
    result = Reconciliation()
    moves = {m.reference: m for m in platform}
    used: set[str] = set()
    seen: dict[str, int] = {}
    unknown: list[BankLine] = []
    for line in sorted(bank, key=lambda b: b.line):
        if line.reference in seen:
            result.breaks.append(Break(
                "duplicate", line.facility_id, line.reference,
                f"booked again (first on line {seen[line.reference]}): "
                f"{_money(line.amount, line.currency)}", bank_line=line.line))
            continue
        seen[line.reference] = line.line
        move = moves.get(line.reference)
        if move is None or move.reference in used:
            unknown.append(line)
            continue
        used.add(move.reference)
        if (move.amount, move.currency, move.direction, move.facility_id) != (
                line.amount, line.currency, line.direction, line.facility_id):
            result.breaks.append(Break(
                "amount_mismatch", line.facility_id, line.reference,
                f"bank {line.direction} {_money(line.amount, line.currency)} on {line.facility_id}"
                f", platform {move.direction} {_money(move.amount, move.currency)} on "
                f"{move.facility_id}", bank_line=line.line, platform_reference=move.reference))
        elif abs((move.value_date - line.value_date).days) > date_tolerance_days:
            result.breaks.append(Break(
                "date_mismatch", line.facility_id, line.reference,
                f"value date {line.value_date} at the bank, {move.value_date} in the platform",
                bank_line=line.line, platform_reference=move.reference))
        else:
            result.matched.append((line.line, move.reference))
    # a credit the borrower paid under its own reference: the same facility, amount and day
    open_repayments: dict[tuple[str, Decimal, str, date], list[PlatformMove]] = defaultdict(list)
    for m in moves.values():
        if m.reference not in used and m.direction == "credit":
            open_repayments[(m.facility_id, m.amount, m.currency, m.value_date)].append(m)
    for line in unknown:
        candidates = open_repayments.get(
            (line.facility_id, line.amount, line.currency, line.value_date), [])
        if line.direction == "credit" and candidates:
            move = candidates.pop(0)
            used.add(move.reference)
            result.matched.append((line.line, move.reference))
            continue
        result.breaks.append(Break(
            "missing_in_platform", line.facility_id, line.reference,
            f"the bank booked a {line.direction} of {_money(line.amount, line.currency)} on "
            f"{line.value_date} that no drawdown or repayment explains", bank_line=line.line))
    for m in sorted(moves.values(), key=lambda m: m.reference):
        if m.reference not in used:
            what = "drawdown" if m.direction == "debit" else "repayment"
            result.breaks.append(Break(
                "missing_in_bank", m.facility_id, m.reference,
                f"the {what} of {_money(m.amount, m.currency)} on {m.value_date} is not on the "
                "statement", platform_reference=m.reference))
    return result


# --- goods three ways -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GoodsLine:
    lot_id: str
    facility_id: str
    pledged: float  # declared quantity of the pledge
    sensors: float | None  # sensor-verified quantity (latest limit snapshot)
    operator: float | None  # the warehouse operator's stock ledger (latest import)
    differences: dict[str, float]
    flagged: tuple[str, ...]  # which differences pass the tolerance


def goods_three_ways(lot_id: str, facility_id: str, pledged: float, sensors: float | None,
                     operator: float | None, *, tolerance: float = 0.02) -> GoodsLine:
    """Differences between the three quantities of one lot; each flagged past ``tolerance`` of
    the pledged quantity (at least one unit)."""
    pairs = {"sensors_vs_pledged": (sensors, pledged), "operator_vs_pledged": (operator, pledged),
             "sensors_vs_operator": (sensors, operator)}
    bound = max(1.0, abs(pledged) * tolerance)
    differences = {name: round(a - b, 6) for name, (a, b) in pairs.items()
                   if a is not None and b is not None}
    flagged = tuple(name for name, d in differences.items() if abs(d) > bound)
    return GoodsLine(lot_id, facility_id, pledged, sensors, operator, differences, flagged)
