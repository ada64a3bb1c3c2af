"""T+0 reconciliation without I/O: every kind of break, the fallback match of a repayment booked
under the borrower's own reference, goods three ways, and the statement parsers (CSV and camt.053)
with malformed and hostile input."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from lending.domain.reconciliation import BankLine, PlatformMove, goods_three_ways, reconcile
from lending.statement_file import (
    StatementFileError,
    parse_camt053,
    parse_statement,
    parse_statement_csv,
    parse_stock_csv,
)

D = date(2026, 11, 30)
NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


def bank(line: int, ref: str, amount: str, direction: str = "debit", day: date = D,
         facility: str = "fac-a", currency: str = "CNY") -> BankLine:
    return BankLine(line, facility, ref, Decimal(amount), currency, direction, day)  # type: ignore[arg-type]


def move(ref: str, amount: str, direction: str = "debit", day: date = D,
         facility: str = "fac-a") -> PlatformMove:
    return PlatformMove(ref, facility, Decimal(amount), "CNY", direction, day)  # type: ignore[arg-type]


def test_every_kind_of_break_is_found_and_the_rest_matches() -> None:
    result = reconcile(
        [bank(1, "dd-1", "100.00"), bank(2, "dd-1", "100.00"),            # booked twice
         bank(3, "dd-2", "250.00"),                                        # another amount
         bank(4, "dd-3", "75.00", day=date(2026, 11, 28)),                 # another day
         bank(5, "BANK-REF-9", "40.00", "credit"),                         # the borrower's ref
         bank(6, "dd-ghost", "999.00")],                                   # nothing explains it
        [move("dd-1", "100.00"), move("dd-2", "200.00"), move("dd-3", "75.00"),
         move("rp-7", "40.00", "credit"), move("dd-4", "10.00")])          # dd-4: not booked
    kinds = {(b.kind, b.reference) for b in result.breaks}
    assert kinds == {("duplicate", "dd-1"), ("amount_mismatch", "dd-2"), ("date_mismatch", "dd-3"),
                     ("missing_in_platform", "dd-ghost"), ("missing_in_bank", "dd-4")}
    assert sorted(result.matched) == [(1, "dd-1"), (5, "rp-7")]
    assert result.counts() == {"duplicate": 1, "amount_mismatch": 1, "date_mismatch": 1,
                               "missing_in_platform": 1, "missing_in_bank": 1}
    dup = next(b for b in result.breaks if b.kind == "duplicate")
    assert dup.bank_line == 2 and "first on line 1" in dup.detail


def test_a_tolerance_matches_nearby_value_dates_and_direction_or_currency_count_as_amount() -> None:
    near = reconcile([bank(1, "dd-3", "75.00", day=date(2026, 11, 29))], [move("dd-3", "75.00")],
                     date_tolerance_days=1)
    assert near.breaks == [] and near.matched == [(1, "dd-3")]
    flipped = reconcile([bank(1, "dd-1", "10.00", "credit")], [move("dd-1", "10.00")])
    assert [b.kind for b in flipped.breaks] == ["amount_mismatch"]
    other = reconcile([bank(1, "dd-1", "10.00", currency="USD")], [move("dd-1", "10.00")])
    assert [b.kind for b in other.breaks] == ["amount_mismatch"]
    # a debit is never matched by amount alone: only repayments fall back
    assert [b.kind for b in reconcile([bank(1, "x", "10.00")], [move("rp-1", "10.00", "credit")]
                                      ).breaks] == ["missing_in_platform", "missing_in_bank"]


def test_goods_three_ways_flags_differences_beyond_the_tolerance() -> None:
    ok = goods_three_ways("lot-1", "fac-a", 100.0, 99.0, 100.5)
    assert ok.flagged == () and ok.differences["sensors_vs_pledged"] == -1.0
    off = goods_three_ways("lot-1", "fac-a", 100.0, 70.0, 100.0)
    assert off.flagged == ("sensors_vs_pledged", "sensors_vs_operator")
    unknown = goods_three_ways("lot-1", "fac-a", 100.0, None, None)
    assert unknown.differences == {} and unknown.flagged == ()


CSV_HEADER = "reference,facility_id,amount,currency,direction,value_date\n"


def test_a_statement_csv_is_read_and_every_bad_field_is_named() -> None:
    lines = parse_statement_csv(CSV_HEADER + "dd-1,fac-a,100.50,CNY,debit,2026-11-30\n"
                                "\nrp-2,fac-a,7,CNY,CREDIT,2026-11-30\n")
    assert [(x.line, x.reference, x.amount, x.direction) for x in lines] == [
        (2, "dd-1", Decimal("100.50"), "debit"), (4, "rp-2", Decimal("7.00"), "credit")]
    with pytest.raises(StatementFileError) as caught:
        parse_statement_csv(CSV_HEADER + "dd-1,fac-a,1.001,CNY,debit,2026-11-30\n"
                            "dd-2,../x,NaN,cny,sideways,30/11/2026\n"
                            "dd-3,fac-a,-5,CNY,debit,2026-11-30\n"
                            "dd-4,fac-a,1e20,CNY,debit,2026-11-30\n"
                            "only,three,cells\n")
    text = str(caught.value)
    for expected in ("line 2, amount", "2 decimal places", "line 3, facility_id",
                     "line 3, amount", "line 3, currency", "line 3, direction",
                     "line 3, value_date", "line 4, amount", "line 5, amount", "line 6, row"):
        assert expected in text, (expected, text)
    for bad in ("", "a,b\n", CSV_HEADER, CSV_HEADER + 'x,"unclosed\n'):
        with pytest.raises(StatementFileError):
            parse_statement_csv(bad)


def camt(entries: str, account: str = "fac-a") -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="{NS}"><BkToCstmrStmt>'
            f"<Stmt><Id>S1</Id><Acct><Id><Othr><Id>{account}</Id></Othr></Id></Acct>{entries}"
            "</Stmt></BkToCstmrStmt></Document>")


def entry(ref: str, amount: str, ind: str = "DBIT", day: str = "2026-11-30") -> str:
    return (f'<Ntry><Amt Ccy="CNY">{amount}</Amt><CdtDbtInd>{ind}</CdtDbtInd>'
            f"<ValDt><Dt>{day}</Dt></ValDt><NtryDtls><TxDtls><Refs><EndToEndId>{ref}</EndToEndId>"
            "</Refs></TxDtls></NtryDtls></Ntry>")


def test_a_camt053_statement_is_read() -> None:
    lines = parse_camt053(camt(entry("dd-1", "100.00") + entry("NOTPROVIDED", "5.00", "CRDT")
                               .replace("<NtryDtls>", "<NtryRef>BANK-1</NtryRef><NtryDtls>")))
    assert [(x.reference, x.facility_id, x.amount, x.direction, x.value_date) for x in lines] == [
        ("dd-1", "fac-a", Decimal("100.00"), "debit", D),
        ("BANK-1", "fac-a", Decimal("5.00"), "credit", D)]
    kind, guessed = parse_statement(camt(entry("dd-1", "1.00")).encode())
    assert kind == "camt053" and len(guessed) == 1


@pytest.mark.parametrize(("document", "says"), [
    (('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
      f'<Document xmlns="{NS}">&lol2;</Document>'), "refused XML"),
    (('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
      f'<Document xmlns="{NS}">&xxe;</Document>'), "refused XML"),
    ("<Document><unclosed></Document>", "not well-formed"),
    ('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>', "not a camt.053"),
    (camt(""), "no entries"),
    (camt(entry("dd-1", "abc")), "amount"),
    (camt(entry("dd-1", "1.00", "SIDEWAYS")), "direction"),
    (camt(entry("dd-1", "1.00", day="yesterday")), "value_date"),
    (camt(entry("dd-1", "1.00"), account="bad account"), "facility_id"),
])
def test_hostile_or_malformed_camt053_is_refused_with_the_reason(document: str, says: str) -> None:
    with pytest.raises(StatementFileError, match=says):
        parse_camt053(document)


def test_a_stock_ledger_is_read_and_bad_lines_named() -> None:
    rows = parse_stock_csv("lot_id,quantity,as_of\nlot-1,95.5,2026-11-30T08:00:00Z\n")
    assert rows[0][0] == "lot-1" and rows[0][1] == 95.5 and rows[0][2].tzinfo is not None
    with pytest.raises(StatementFileError) as caught:
        parse_stock_csv("lot_id,quantity,as_of\nlot-1,nan,2026-11-30T08:00:00Z\n"
                        "lot-2,-1,2026-11-30T08:00:00Z\nlot-3,1,2026-11-30T08:00:00\n"
                        "lot-4,1,soon\n")
    text = str(caught.value)
    assert all(f"line {n}" in text for n in (2, 3, 4, 5)), text
    assert "needs a zone" in text
