"""Duplicate pledges on a normalised registration number: one number however it is typed (case,
spaces, punctuation, full-width characters, invisible marks), in Python and in the migration."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lending.domain.model import Lot
from lending.domain.pledges import SEPARATORS, pledge_conflicts, registration_key
from lending.portfolio_file import PortfolioError, parse_portfolio

MIGRATION = Path(__file__).parents[2] / "schema" / "migrations" / "0007_pledge_normalised.sql"
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "ZDW-2026-0001")  # an IME in full-width mode


def lot(lot_id: str, facility: str, number: str, sensors: tuple[str, ...] = ()) -> Lot:
    return Lot(lot_id, facility, "steel", 100.0, 1000.0, number, sensors)


@pytest.mark.parametrize("typed", [
    "ZDW-2026-0001", "zdw 2026 0001 ", FULL_WIDTH, " Zdw_2026/0001", "ZDW–2026—0001",  # dashes
    "ZDW\u00a02026\u30000001", "\ufeffZDW\u200b2026\u00ad0001", "zdw.2026.0001\t\n",
    "ZDW·2026·0001", "「ZDW」2026、0001",
])
def test_the_same_number_however_it_is_typed(typed: str) -> None:
    assert registration_key(typed) == "zdw20260001"


@pytest.mark.parametrize(("a", "b"), [
    ("ZDW-2026-0001", "ZDW-2026-0002"), ("ZDW-2026-0001", "ZDW-2026-00010"),
    ("质押-2026-1", "抵押-2026-1"),  # letters of any script tell numbers apart
    ("A1", "A l"),
])
def test_different_numbers_stay_different(a: str, b: str) -> None:
    assert registration_key(a) != registration_key(b)


def test_case_is_folded_beyond_ascii_and_non_latin_letters_are_kept() -> None:
    assert registration_key("STRASSE-1") == registration_key("straße 1") == "strasse1"
    assert registration_key("ÄRZTE-7") == registration_key("ärzte7")
    assert registration_key("质押登记 " + FULL_WIDTH[4:]) == "质押登记20260001"
    assert registration_key("Ⅻ-1") == "xii1"  # compatibility forms become plain ones


@pytest.mark.parametrize("hostile", ["", " ", "---", "\u200b\ufeff", "\x00\x01\x7f", "。、「」",
                                     "\t\n\r"])
def test_a_number_without_letters_or_digits_has_an_empty_key(hostile: str) -> None:
    assert registration_key(hostile) == ""


def test_huge_input_is_fine() -> None:
    assert registration_key("A-1 " * 50_000) == "a1" * 50_000


def test_the_migration_removes_exactly_the_python_separators() -> None:
    sql = MIGRATION.read_text()
    (used,) = re.findall(r"regexp_replace\(lower\(normalize\(number, NFKC\)\), '([^']*)'", sql)
    assert used == SEPARATORS
    assert "UNIQUE INDEX lots_registration_key ON lots (registration_key)" in sql


text = st.text(st.characters(codec="utf-8"), max_size=40)  # no surrogates


@given(text)
def test_the_key_is_stable_and_has_no_separators(number: str) -> None:
    key = registration_key(number)
    assert registration_key(key) == key
    assert registration_key(unicodedata.normalize("NFKC", number)) == key
    assert not re.search(SEPARATORS, key)
    assert not any(ch.isspace() for ch in key)


@given(text, text)
def test_spaces_and_dashes_between_parts_do_not_matter(a: str, b: str) -> None:
    assert registration_key(f"{a} - {b}") == registration_key(a + b)


# --- the duplicate check -------------------------------------------------------------------------

def test_a_variant_of_a_pledged_number_in_another_facility_is_a_duplicate() -> None:
    held = lot("lot-1", "fac-1", "ZDW-2026-0001", ("s1",))
    for typed in ("zdw 2026 0001 ", FULL_WIDTH):
        (conflict,) = pledge_conflicts([lot("lot-9", "fac-2", typed, ("s9",))], [held])
        assert conflict.what == "registration number"
        assert conflict.existing is held
        described = conflict.describe()
        assert repr(typed) in described and "'ZDW-2026-0001'" in described
        assert "lot-1" in described and "fac-1" in described


def test_variants_within_one_file_conflict_with_each_other() -> None:
    first = lot("lot-1", "fac-1", "ZDW-2026-0001", ("s1",))
    second = lot("lot-2", "fac-2", "zdw20260001", ("s2",))
    (conflict,) = pledge_conflicts([first, second], [])
    assert (conflict.lot.id, conflict.existing.id) == ("lot-2", "lot-1")


def test_restating_a_lot_with_its_number_retyped_is_an_update() -> None:
    held = lot("lot-1", "fac-1", "ZDW-2026-0001", ("s1",))
    assert pledge_conflicts([lot("lot-1", "fac-1", "zdw 2026 0001", ("s1",))], [held]) == []


def test_numbers_without_letters_or_digits_match_nothing() -> None:
    held = lot("lot-1", "fac-1", "---", ("s1",))
    assert pledge_conflicts([lot("lot-2", "fac-2", "///", ("s2",))], [held]) == []


def test_a_portfolio_refuses_a_number_without_letters_or_digits() -> None:
    doc = """
lots:
  - {id: lot-x, facility: fac-1, commodity: steel, declared_quantity: 1, unit_weight_kg: 1,
     registration_no: " -- / -- "}
"""
    with pytest.raises(PortfolioError, match=r"registration_no.*letter or a digit"):
        parse_portfolio(doc, "yaml")
    with pytest.raises(PortfolioError, match="letter or a digit"):
        parse_portfolio("id,facility,commodity,declared_quantity,unit_weight_kg,registration_no\n"
                        "lot-x,fac-1,steel,1,1,\u3000\u3001\n", "csv")


def test_a_mark_split_from_its_letter_by_a_separator_still_composes() -> None:
    assert registration_key("CAFE - \u0301 1") == registration_key("CAFÉ1") == "café1"
