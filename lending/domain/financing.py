"""Supply-chain finance rules, without I/O: when a drawdown is approved at once, how a repayment is
allocated over drawdowns, how a voucher splits when part of it is transferred, what financing a
voucher advances, and who is paid what when the core enterprise pays a confirmed payable.

Money is :class:`~decimal.Decimal` rounded to cents (the database's ``numeric(20, 2)``), so
amounts are conserved exactly: children sum to their parent and payouts to the payment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from lending.domain.model import DomainError

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1e15")
MAX_TENOR_DAYS = 3660


class FinancingError(DomainError):
    """A financing request that breaks a rule (the API answers 409 or 422 with the message)."""


def money(value: Decimal | float | int | str) -> Decimal:
    """An amount as cents; refuses NaN, infinities, non-positive and absurdly large amounts."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise FinancingError(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise FinancingError(f"{value!r} is not a finite amount")
    cents = amount.quantize(CENT, rounding=ROUND_DOWN)
    if cents != amount:
        raise FinancingError(f"{value} has more than 2 decimal places")
    if not (0 < cents < MAX_AMOUNT):
        raise FinancingError(f"an amount must be > 0 and < 1e15, got {value}")
    return cents


# --- drawdowns ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DrawdownContext:
    """What the decision reads, all in the transaction that holds the facility's lock."""

    facility_currency: str
    credit_limit: Decimal | None  # the latest limit snapshot's; None when the engine has none yet
    outstanding: Decimal  # derived from approved drawdowns, read under the lock
    critical_alerts: Sequence[str]  # types of the facility's open or acknowledged critical alerts
    blacklisted: str | None  # the active blacklist entry's reason
    grade: str | None = None  # the borrower's current credit grade; None: not rated
    grade_auto_approve_max: Decimal | None = None  # the product's auto-approval cap for that grade


@dataclass(frozen=True)
class DrawdownDecision:
    approved: bool
    reasons: tuple[str, ...]  # why it waits for an officer (empty when approved)
    available: Decimal  # the live available limit the decision saw


def available_limit(ctx: DrawdownContext) -> Decimal:
    if ctx.credit_limit is None:
        return Decimal(0)
    return max(Decimal(0), ctx.credit_limit - ctx.outstanding)


def decide_drawdown(amount: Decimal, currency: str, ctx: DrawdownContext) -> DrawdownDecision:
    """Approved at once when the amount fits the live available limit, the facility has no open
    critical alert, the borrower is not blacklisted and the amount is within the auto-approval cap
    of the borrower's credit grade (when the product sets one); otherwise pending, with every
    reason."""
    if currency != ctx.facility_currency:
        raise FinancingError(f"the facility lends in {ctx.facility_currency}, not {currency}")
    available = available_limit(ctx)
    reasons: list[str] = []
    if ctx.credit_limit is None:
        reasons.append("no live limit yet: the engine has not assessed this facility")
    elif amount > available:
        reasons.append(f"amount {amount:,.2f} exceeds the available limit {available:,.2f} "
                       f"{ctx.facility_currency}")
    if ctx.critical_alerts:
        kinds = ", ".join(sorted(set(ctx.critical_alerts)))
        reasons.append(f"open critical alert on the facility: {kinds}")
    if ctx.blacklisted is not None:
        reasons.append(f"borrower is on the blacklist: {ctx.blacklisted}")
    if ctx.grade_auto_approve_max is not None and amount > ctx.grade_auto_approve_max:
        reasons.append(f"amount {amount:,.2f} is above the auto-approval limit of grade "
                       f"{ctx.grade} ({ctx.grade_auto_approve_max:,.2f} {ctx.facility_currency})")
    return DrawdownDecision(not reasons, tuple(reasons), available)


def officer_may_approve(amount: Decimal, ctx: DrawdownContext) -> None:
    """An officer may approve a waiting drawdown past an alert, but never past the limit or for a
    blacklisted borrower: those still hold when the officer decides."""
    available = available_limit(ctx)
    if ctx.credit_limit is None or amount > available:
        raise FinancingError(f"amount {amount:,.2f} exceeds the available limit {available:,.2f} "
                             f"{ctx.facility_currency}")
    if ctx.blacklisted is not None:
        raise FinancingError(f"borrower is on the blacklist: {ctx.blacklisted}")


def maturity(decided_at: datetime, tenor_days: int) -> datetime:
    if not 1 <= tenor_days <= MAX_TENOR_DAYS:
        raise FinancingError(f"a tenor must be 1..{MAX_TENOR_DAYS} days, got {tenor_days}")
    return decided_at + timedelta(days=tenor_days)


@dataclass(frozen=True)
class OpenDrawdown:
    drawdown_id: str
    maturity: datetime
    owed: Decimal  # amount − repaid


def allocate_repayment(amount: Decimal,
                       drawdowns: Sequence[OpenDrawdown]) -> tuple[list[tuple[str, Decimal]], Decimal]:
    """A repayment pays the drawdowns that mature first; returns (drawdown id, part) and what is
    left unapplied (more than was owed)."""
    left = amount
    parts: list[tuple[str, Decimal]] = []
    for d in sorted(drawdowns, key=lambda d: (d.maturity, d.drawdown_id)):
        if left <= 0:
            break
        part = min(left, d.owed)
        if part > 0:
            parts.append((d.drawdown_id, part))
            left -= part
    return parts, left


# --- vouchers -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    transferred: Decimal  # the new holder's voucher
    kept: Decimal  # the remainder the holder keeps (0: the whole voucher moved)


def split(voucher_amount: Decimal, transfer: Decimal) -> Split:
    """Transferring part of a voucher spends it into two children that sum to it."""
    transfer = money(transfer)
    if transfer > voucher_amount:
        raise FinancingError(f"cannot transfer {transfer:,.2f} out of a voucher of "
                             f"{voucher_amount:,.2f}")
    return Split(transfer, voucher_amount - transfer)


def advance(amount: Decimal, advance_rate: float) -> Decimal:
    """What the bank pays a holder who finances a voucher (rounded down to the cent)."""
    if not 0 < advance_rate <= 1:
        raise FinancingError(f"an advance rate must be in (0, 1], got {advance_rate}")
    return (amount * Decimal(str(advance_rate))).quantize(CENT, rounding=ROUND_DOWN)


@dataclass(frozen=True)
class Leaf:
    """A voucher that has not been spent: active (the holder's) or financed (the bank advanced)."""

    voucher_id: str
    holder_id: str
    amount: Decimal
    financed: Decimal | None


@dataclass(frozen=True)
class Payout:
    voucher_id: str
    payee: str  # "bank" or the holder's borrower id
    amount: Decimal


BANK = "bank"


def settle(paid: Decimal, root_amount: Decimal, leaves: Sequence[Leaf]) -> list[Payout]:
    """The core enterprise pays a confirmed payable in full: for each leaf the bank is repaid what
    it financed and the holder gets the rest. The payouts sum to the payment."""
    if paid != root_amount:
        raise FinancingError(f"the payable is {root_amount:,.2f}; a payment of {paid:,.2f} "
                             "does not settle it (partial payments are not supported)")
    total = sum((leaf.amount for leaf in leaves), Decimal(0))
    if total != root_amount:
        raise FinancingError(f"the vouchers under this payable sum to {total:,.2f}, not "
                             f"{root_amount:,.2f}")
    payouts: list[Payout] = []
    for leaf in sorted(leaves, key=lambda x: x.voucher_id):
        financed = leaf.financed or Decimal(0)
        if financed > 0:
            payouts.append(Payout(leaf.voucher_id, BANK, financed))
        if leaf.amount - financed > 0:
            payouts.append(Payout(leaf.voucher_id, leaf.holder_id, leaf.amount - financed))
    return payouts
