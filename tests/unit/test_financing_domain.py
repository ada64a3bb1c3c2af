"""The financing rules without I/O: drawdown decisions, repayment allocation, voucher splits,
advances and settlement payouts conserve every cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lending.domain.financing import (
    BANK,
    DrawdownContext,
    FinancingError,
    Leaf,
    OpenDrawdown,
    advance,
    allocate_repayment,
    decide_drawdown,
    maturity,
    money,
    officer_may_approve,
    settle,
    split,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
cents = st.integers(min_value=1, max_value=10**12).map(lambda c: Decimal(c) / 100)


def ctx(limit: float | None = 1000, outstanding: float = 0, critical: tuple[str, ...] = (),
        black: str | None = None) -> DrawdownContext:
    return DrawdownContext("CNY", None if limit is None else Decimal(str(limit)),
                           Decimal(str(outstanding)), critical, black)


def test_a_drawdown_within_the_available_limit_is_approved_and_each_bar_is_a_reason() -> None:
    assert decide_drawdown(Decimal(600), "CNY", ctx(outstanding=400)).approved
    over = decide_drawdown(Decimal("600.01"), "CNY", ctx(outstanding=400))
    assert not over.approved and over.available == 600
    assert "exceeds the available limit 600.00" in over.reasons[0]
    many = decide_drawdown(Decimal(1), "CNY", ctx(limit=None, critical=("sensor_tamper",),
                                                   black="fraud"))
    assert len(many.reasons) == 3 and not many.approved
    assert decide_drawdown(Decimal(1), "CNY", ctx(outstanding=2000)).available == 0
    with pytest.raises(FinancingError, match="lends in CNY"):
        decide_drawdown(Decimal(1), "USD", ctx())


def test_an_officer_may_pass_an_alert_but_not_the_limit_or_the_blacklist() -> None:
    officer_may_approve(Decimal(10), ctx(critical=("sensor_tamper",)))
    with pytest.raises(FinancingError, match="exceeds"):
        officer_may_approve(Decimal(1001), ctx())
    with pytest.raises(FinancingError, match="blacklist"):
        officer_may_approve(Decimal(1), ctx(black="fraud"))
    with pytest.raises(FinancingError, match="exceeds"):
        officer_may_approve(Decimal(1), ctx(limit=None))


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0", "1.001", "1e16", "abc", float("nan")])
def test_money_refuses_what_is_not_an_amount(bad: object) -> None:
    with pytest.raises(FinancingError):
        money(bad)  # type: ignore[arg-type]


def test_tenor_bounds() -> None:
    assert maturity(T0, 30) == T0 + timedelta(days=30)
    for bad in (0, 3661, -1):
        with pytest.raises(FinancingError):
            maturity(T0, bad)


@given(st.lists(cents, min_size=0, max_size=8), cents)
def test_a_repayment_pays_first_maturing_first_and_never_more_than_owed(
        owed: list[Decimal], paid: Decimal) -> None:
    drawdowns = [OpenDrawdown(f"d{i}", T0 + timedelta(days=len(owed) - i), o)
                 for i, o in enumerate(owed)]
    parts, left = allocate_repayment(paid, drawdowns)
    assert sum((p for _, p in parts), Decimal(0)) + left == paid
    assert left == max(Decimal(0), paid - sum(owed, Decimal(0)))
    by_id = {d.drawdown_id: d for d in drawdowns}
    assert all(0 < p <= by_id[i].owed for i, p in parts)
    order = [by_id[i].maturity for i, _ in parts]
    assert order == sorted(order)
    # only the last part may be partial
    assert all(p == by_id[i].owed for i, p in parts[:-1])


@given(cents, st.integers(min_value=1, max_value=10**12))
def test_a_split_conserves_the_amount(amount: Decimal, part_cents: int) -> None:
    part = Decimal(part_cents) / 100
    if part > amount:
        with pytest.raises(FinancingError):
            split(amount, part)
        return
    s = split(amount, part)
    assert s.transferred + s.kept == amount and s.transferred == part and s.kept >= 0


@given(st.lists(st.tuples(cents, st.booleans()), min_size=1, max_size=6),
       st.floats(min_value=0.01, max_value=1.0))
def test_settlement_pays_the_bank_what_it_financed_and_holders_the_rest(
        parts: list[tuple[Decimal, bool]], rate: float) -> None:
    leaves = [Leaf(f"v{i}", f"holder-{i}", amount, advance(amount, rate) if financed else None)
              for i, (amount, financed) in enumerate(parts)]
    total = sum((leaf.amount for leaf in leaves), Decimal(0))
    payouts = settle(total, total, leaves)
    assert sum((p.amount for p in payouts), Decimal(0)) == total
    bank = sum((p.amount for p in payouts if p.payee == BANK), Decimal(0))
    assert bank == sum((leaf.financed or Decimal(0) for leaf in leaves), Decimal(0))
    assert all(p.amount > 0 for p in payouts)
    with pytest.raises(FinancingError, match="partial"):
        settle(total - Decimal("0.01"), total, leaves) if total > Decimal("0.01") else settle(
            total + 1, total, leaves)


def test_advance_rounds_down_to_the_cent_and_refuses_bad_rates() -> None:
    assert advance(Decimal("100.01"), 0.8) == Decimal("80.00")
    for bad in (0, 1.01, -0.5):
        with pytest.raises(FinancingError):
            advance(Decimal(1), bad)
