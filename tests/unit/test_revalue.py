"""Whole-portfolio revaluation: numpy kernel vs the Python loop, limits, LTV and flags."""

from __future__ import annotations

import re
from dataclasses import fields, replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.revalue import check_agree, run
from lending.domain.revaluation import (
    PortfolioArrays,
    Revaluation,
    random_portfolio,
    revalue,
    revalue_python,
    to_lists,
)


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def idx(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.intp)


def two_facilities(**overrides: np.ndarray) -> PortfolioArrays:
    """Facility 0 holds lots 0 and 1, facility 1 holds lot 2; two commodities."""
    book = PortfolioArrays(
        lot_facility=idx(0, 0, 1),
        lot_commodity=idx(0, 1, 1),
        lot_quantity=arr(10.0, 4.0, 2.0),
        lot_trust=arr(1.0, 0.5, 1.0),
        lot_advance_rate=arr(0.5, 0.5, 0.75),
        commodity_price=arr(100.0, 50.0),
        commodity_haircut=arr(0.5, 0.25),
        facility_line=arr(10_000.0, 20.0),
        facility_outstanding=arr(300.0, 0.0),
        facility_receivables=arr(200.0, 0.0),
        facility_ar_rate=arr(0.75, 0.8),
        facility_reserves=arr(10.0, 0.0),
        facility_warning_ltv=arr(0.6, 0.6),
        facility_liquidation_ltv=arr(0.8, 0.8),
        facility_value_floor=arr(0.0, 0.0),
    )
    return replace(book, **overrides)


def test_hand_computed_revaluation() -> None:
    r = revalue(two_facilities())
    # lot values: 10*100*0.5 = 500, 4*50*0.75 = 150, 2*50*0.75 = 75
    assert r.lot_value.tolist() == [500.0, 150.0, 75.0]
    assert r.collateral.tolist() == [650.0, 75.0]
    # base 0: 500*0.5*1 + 150*0.5*0.5 + 200*0.75 - 10 = 250 + 37.5 + 150 - 10
    assert r.borrowing_base.tolist() == [427.5, 75.0 * 0.75]
    assert r.limit.tolist() == [427.5, 20.0]  # facility 1 is capped by its line
    assert r.available.tolist() == [127.5, 20.0]
    assert r.ltv.tolist() == [300.0 / 650.0, 0.0]
    assert r.above_warning.tolist() == [False, False]


def test_limit_is_clipped_at_zero_and_available_can_go_negative() -> None:
    r = revalue(two_facilities(facility_reserves=arr(10_000.0, 0.0)))
    assert r.borrowing_base[0] < 0
    assert r.limit[0] == 0.0
    assert r.available[0] == -300.0  # drawn 300 against a zero limit


def test_ltv_with_no_collateral() -> None:
    book = two_facilities(
        lot_quantity=arr(0.0, 0.0, 0.0),
        facility_outstanding=arr(300.0, 0.0),
        facility_value_floor=arr(1.0, 0.0),
    )
    r = revalue(book)
    assert r.collateral.tolist() == [0.0, 0.0]
    assert r.ltv[0] == np.inf and r.ltv[1] == 0.0
    assert r.above_warning.tolist() == [True, False]
    assert r.above_liquidation.tolist() == [True, False]
    assert r.below_floor.tolist() == [True, False]  # 0 < 1, but 0 is not below a floor of 0
    slow = revalue_python(to_lists(book))
    assert slow.ltv == [float("inf"), 0.0]


def test_a_facility_without_lots() -> None:
    book = two_facilities(lot_facility=idx(0, 0, 0), facility_outstanding=arr(300.0, 5.0))
    r = revalue(book)
    assert r.collateral[1] == 0.0 and r.ltv[1] == np.inf and r.limit[1] == 0.0
    assert r.available[1] == -5.0


def test_empty_book() -> None:
    book = random_portfolio(0, 3, commodities=2, seed=1)
    r = revalue(book)
    assert r.lot_value.shape == (0,) and r.collateral.tolist() == [0.0, 0.0, 0.0]
    check_agree(r, revalue_python(to_lists(book)))


def test_flags_exactly_at_the_thresholds() -> None:
    # collateral 650 and 75: 390 / 650 == 0.6 and 60 / 75 == 0.8 exactly in floating point
    at_lines = two_facilities(facility_outstanding=arr(390.0, 60.0),
                              facility_liquidation_ltv=arr(0.9, 0.8), facility_value_floor=arr(650.0, 75.0))
    r = revalue(at_lines)
    assert r.ltv.tolist() == [0.6, 0.8]
    assert r.above_warning.tolist() == [True, True]
    assert r.above_liquidation.tolist() == [False, True]
    assert r.below_floor.tolist() == [False, False]  # collateral equal to the floor is not below it

    just_under = replace(at_lines, facility_outstanding=arr(389.99, 59.99),
                         facility_value_floor=arr(650.01, 75.01))
    r = revalue(just_under)
    assert r.ltv[0] < 0.6 and r.ltv[1] < 0.8
    assert r.above_warning.tolist() == [False, True]  # facility 1 stays above warning (0.8 > 0.6)
    assert r.above_liquidation.tolist() == [False, False]
    assert r.below_floor.tolist() == [True, True]
    slow = revalue_python(to_lists(just_under))
    assert slow.above_liquidation == [False, False] and slow.below_floor == [True, True]


@st.composite
def books(draw: st.DrawFn) -> PortfolioArrays:
    """Random books, some with zeroed prices, quantities or trust to reach the edge cases."""
    book = random_portfolio(draw(st.integers(0, 60)), draw(st.integers(1, 8)),
                            commodities=draw(st.integers(1, 5)), seed=draw(st.integers(0, 2**32 - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        book.lot_quantity[rng.random(book.lots) < 0.3] = 0.0
    if draw(st.booleans()):
        book.commodity_price[rng.random(book.commodities) < 0.3] = 0.0
    if draw(st.booleans()):
        book.lot_trust[rng.random(book.lots) < 0.3] = 0.0
    return book


@given(books())
def test_numpy_and_python_agree_exactly(book: PortfolioArrays) -> None:
    book.validate()
    fast = revalue(book)
    slow = revalue_python(to_lists(book))
    for f in fields(Revaluation):
        assert getattr(fast, f.name).tolist() == getattr(slow, f.name), f.name


@given(books())
def test_limit_between_zero_and_line(book: PortfolioArrays) -> None:
    r = revalue(book)
    assert np.all(r.limit <= book.facility_line)
    assert np.all(r.limit >= 0.0)
    np.testing.assert_array_equal(r.available, r.limit - book.facility_outstanding)


@given(books(), st.data())
def test_limit_never_rises_when_a_price_falls(book: PortfolioArrays, data: st.DataObject) -> None:
    commodity = data.draw(st.integers(0, book.commodities - 1))
    factor = data.draw(st.floats(0.0, 1.0))
    before = revalue(book)
    price = book.commodity_price.copy()
    price[commodity] *= factor
    after = revalue(replace(book, commodity_price=price))
    assert np.all(after.limit <= before.limit)
    assert np.all(after.collateral <= before.collateral)
    assert np.all(after.ltv >= before.ltv)


@given(books(), st.data())
def test_limit_never_rises_when_trust_falls(book: PortfolioArrays, data: st.DataObject) -> None:
    if book.lots == 0:
        return
    lots = data.draw(st.lists(st.integers(0, book.lots - 1), min_size=1, max_size=5))
    factor = data.draw(st.floats(0.0, 1.0))
    trust = book.lot_trust.copy()
    trust[lots] *= factor
    before, after = revalue(book), revalue(replace(book, lot_trust=trust))
    assert np.all(after.limit <= before.limit)
    np.testing.assert_array_equal(after.collateral, before.collateral)  # trust moves the base, not the value


def test_a_price_crash_raises_flags() -> None:
    book = random_portfolio(5_000, 500, seed=3)
    before = revalue(book)
    after = revalue(replace(book, commodity_price=book.commodity_price * 0.5))
    assert after.above_warning.sum() > before.above_warning.sum()
    assert after.above_liquidation.sum() > before.above_liquidation.sum()
    assert after.below_floor.sum() > before.below_floor.sum()
    assert after.limit.sum() < before.limit.sum()


def test_random_portfolio_is_deterministic_and_plausible() -> None:
    a, b = random_portfolio(1_000, 100, seed=5), random_portfolio(1_000, 100, seed=5)
    for f in fields(PortfolioArrays):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    a.validate()
    assert a.lot_facility.dtype == np.intp and a.lot_quantity.dtype == np.float64
    for facility in np.unique(a.lot_facility):  # the advance rate is the facility's, copied per lot
        assert np.unique(a.lot_advance_rate[a.lot_facility == facility]).size == 1
    assert np.all(a.facility_liquidation_ltv > a.facility_warning_ltv)
    r = revalue(a)
    assert 0 < (r.limit == a.facility_line).mean() < 1  # both the line and the base bind somewhere


def test_validate_rejects_bad_books() -> None:
    with pytest.raises(ValueError, match="lot_facility"):
        two_facilities(lot_facility=idx(0, 0, 2)).validate()
    with pytest.raises(ValueError, match="lot_commodity"):
        two_facilities(lot_commodity=idx(0, -1, 1)).validate()
    with pytest.raises(ValueError, match="facility_reserves"):
        two_facilities(facility_reserves=arr(1.0)).validate()
    two_facilities().validate()


def test_check_agree_catches_a_difference() -> None:
    book = two_facilities()
    slow = revalue_python(to_lists(book))
    check_agree(revalue(book), slow)
    slow.limit[0] += 1.0
    with pytest.raises(RuntimeError, match="limit"):
        check_agree(revalue(book), slow)


def test_bench_prints_the_figures() -> None:
    lines: list[str] = []
    result = run(lots=20_000, repeats=2, out=lines.append)
    assert lines[0].startswith("revalue: 20,000 lots, 2,000 facilities, 20 commodities, 2 price ticks")
    assert re.fullmatch(r"numpy \d+\.\d ms", lines[1])
    assert re.fullmatch(r"python \d+\.\d ms", lines[2])
    assert re.fullmatch(r"speedup \d+x", lines[3])
    assert result["python_repeats"] == 2 and len(result["numpy_ms_all"]) == 2
    assert result["speedup"] > 1.0
