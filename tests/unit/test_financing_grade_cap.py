"""Ratings move terms: a product's `by_grade` map is validated (hostile input refused with the grade
and term named), and a drawdown above the auto-approval cap of the borrower's grade waits for an
officer with the reason, while products without `by_grade` decide exactly as before."""

from __future__ import annotations

from decimal import Decimal

import pytest

from lending.domain.financing import DrawdownContext, decide_drawdown
from lending.domain.model import DomainError, ProductTerms
from lending.store import terms_from_json

BY_GRADE = {"A": {"advance_rate": 0.7, "line_cap": 2_000_000, "auto_approve_max": 500_000},
            "C": {"advance_rate": 0.5, "auto_approve_max": 100_000}}


def ctx(grade: str | None = None, cap: str | None = None, limit: str = "1000000") -> DrawdownContext:
    return DrawdownContext("CNY", Decimal(limit), Decimal(0), [], None, grade,
                           None if cap is None else Decimal(cap))


def test_an_amount_above_the_grades_cap_waits_with_the_reason() -> None:
    decision = decide_drawdown(Decimal("150000.00"), "CNY", ctx("C", "100000"))
    assert not decision.approved
    assert decision.reasons == (("amount 150,000.00 is above the auto-approval limit of grade C "
                                "(100,000.00 CNY)"),)


def test_an_amount_at_or_below_the_cap_is_approved() -> None:
    assert decide_drawdown(Decimal("100000.00"), "CNY", ctx("C", "100000")).approved
    assert decide_drawdown(Decimal("99.99"), "CNY", ctx("C", "100000")).approved


def test_without_a_cap_nothing_changes() -> None:
    assert decide_drawdown(Decimal("900000.00"), "CNY", ctx()).approved
    assert decide_drawdown(Decimal("900000.00"), "CNY", ctx("G")).approved  # no cap for G
    old_style = DrawdownContext("CNY", Decimal(1000), Decimal(0), [], None)
    assert decide_drawdown(Decimal("2000.00"), "CNY", old_style).reasons == (
        "amount 2,000.00 exceeds the available limit 1,000.00 CNY",)


def test_the_cap_adds_to_the_other_reasons() -> None:
    decision = decide_drawdown(Decimal("2000000.00"), "CNY", ctx("C", "100000"))
    assert len(decision.reasons) == 2
    assert "exceeds the available limit" in decision.reasons[0]
    assert "grade C" in decision.reasons[1]


def test_by_grade_terms_parse_and_round_trip() -> None:
    terms = terms_from_json({"advance_rate": 0.6, "by_grade": BY_GRADE})
    assert terms.by_grade == {"A": {"advance_rate": 0.7, "line_cap": 2e6, "auto_approve_max": 5e5},
                              "C": {"advance_rate": 0.5, "auto_approve_max": 1e5}}
    assert terms_from_json({}).by_grade is None
    assert hash(terms) == hash(terms_from_json({"advance_rate": 0.6}))  # still hashable


@pytest.mark.parametrize(("by_grade", "message"), [
    ({"Z": {"advance_rate": 0.5}}, "unknown grade 'Z'"),
    ({"a": {"advance_rate": 0.5}}, "unknown grade 'a'"),
    ({"A": {"advance_rate": 1.2}}, "by_grade.A.advance_rate must be in (0, 1]"),
    ({"A": {"advance_rate": 0}}, "by_grade.A.advance_rate must be in (0, 1]"),
    ({"B": {"advance_rate": float("nan")}}, "by_grade.B.advance_rate must be a finite number"),
    ({"B": {"line_cap": float("inf")}}, "by_grade.B.line_cap must be a finite number"),
    ({"B": {"auto_approve_max": -1}}, "by_grade.B.auto_approve_max must be an amount"),
    ({"B": {"line_cap": 1e16}}, "by_grade.B.line_cap must be an amount"),
    ({"B": {"auto_approve_max": "500"}}, "by_grade.B.auto_approve_max must be a finite number"),
    ({"B": {"auto_approve_max": True}}, "by_grade.B.auto_approve_max must be a finite number"),
    ({"B": {"haircut": 0.1}}, "by_grade.B: unknown term 'haircut'"),
    ({"B": {}}, "by_grade.B: give a non-empty map"),
    ({"B": [0.5]}, "by_grade.B: give a non-empty map"),
    ([["A", 0.5]], "by_grade must map grades to terms"),
])
def test_hostile_by_grade_terms_are_refused_with_a_clear_error(by_grade: object,
                                                               message: str) -> None:
    with pytest.raises(DomainError) as refused:
        terms_from_json({"by_grade": by_grade})
    assert message in str(refused.value)
    with pytest.raises(DomainError):
        ProductTerms(by_grade=by_grade)  # type: ignore[arg-type]
