"""The bank's core-ledger statement (CSV, or ISO 20022 camt.053 XML) and the warehouse operator's
stock ledger (CSV), read into the reconciliation's lines. One set of rules for CLI and API: every
bad field is named with its line (or entry), and a file is taken whole or not at all.

Statement CSV: ``reference,facility_id,amount,currency,direction,value_date`` — ``direction`` is
``debit`` (money out of the bank: a disbursement) or ``credit`` (a repayment), ``amount`` a positive
decimal with at most 2 places, ``value_date`` ``YYYY-MM-DD``.

camt.053 (any ``camt.053.001.xx`` version): each ``Stmt`` is one loan account, its ``Acct/Id``
(``Othr/Id``, else ``IBAN``) the facility id; each ``Ntry`` a line: ``Amt`` (with ``Ccy``),
``CdtDbtInd`` (``DBIT``/``CRDT``), ``ValDt/Dt``, and the reference ``NtryDtls/TxDtls/Refs/EndToEndId``
(else ``NtryRef``, else ``AcctSvcrRef``). Parsed with defusedxml: DTDs, entities and external
references are refused.

Stock ledger CSV: ``lot_id,quantity,as_of`` (units; an RFC 3339 time with a zone).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Final
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from lending.domain.reconciliation import BankLine, Direction
from lending.price_file import CURRENCY_PATTERN, PriceFileError, RowError

MAX_LINES: Final = 100_000
MAX_ERRORS: Final = 100
MAX_FILE_BYTES: Final = 16 * 1024 * 1024
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
REFERENCE = re.compile(r"^[\x21-\x7e]{1,64}$")
CURRENCY = re.compile(CURRENCY_PATTERN)
STATEMENT_COLUMNS: Final = ("reference", "facility_id", "amount", "currency", "direction",
                            "value_date")
STOCK_COLUMNS: Final = ("lot_id", "quantity", "as_of")
CAMT = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}$")


class StatementFileError(PriceFileError):
    """A statement or stock file refused; :attr:`errors` names every bad field."""


class _Errors:
    def __init__(self) -> None:
        self.found: list[RowError] = []

    def add(self, line: int, name: str, message: str) -> None:
        self.found.append(RowError(line, name, message))
        if len(self.found) >= MAX_ERRORS:
            raise StatementFileError(self.found, stopped_at=line)

    def check(self) -> None:
        if self.found:
            raise StatementFileError(self.found)


def decode(data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise StatementFileError([RowError(0, "file", f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StatementFileError([RowError(0, "file", f"not UTF-8 (byte {exc.start})")]) from None


def _amount(raw: str, errors: _Errors, line: int) -> Decimal | None:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        errors.add(line, "amount", f"{raw[:40]!r} is not a number")
        return None
    if not value.is_finite() or not (0 < value < Decimal("1e15")):
        errors.add(line, "amount", f"{raw[:40]!r} is not an amount > 0 and < 1e15")
        return None
    if value != value.quantize(Decimal("0.01")):
        errors.add(line, "amount", f"{raw[:40]!r} has more than 2 decimal places")
        return None
    return value.quantize(Decimal("0.01"))


def _date(raw: str, errors: _Errors, line: int, name: str = "value_date") -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        errors.add(line, name, f"{raw[:40]!r} is not a date (YYYY-MM-DD)")
        return None


def _text(raw: str, pattern: re.Pattern[str], errors: _Errors, line: int, name: str) -> str | None:
    value = raw.strip()
    if not pattern.match(value):
        errors.add(line, name, f"{value[:40]!r} is not a valid {name}")
        return None
    return value


def _rows(text: str, columns: tuple[str, ...], errors: _Errors) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = [c.strip().lower() for c in next(reader, [])]
    except csv.Error as exc:
        raise StatementFileError([RowError(1, "header", f"not valid CSV: {exc}")]) from None
    if tuple(header) != columns:
        raise StatementFileError([RowError(1, "header", f"expected {','.join(columns)}, got "
                                                        f"{','.join(header)[:200] or 'nothing'}")])
    count = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.add(reader.line_num, "row", f"not valid CSV: {exc}")
            break
        if not any(cell.strip() for cell in row):
            continue
        count += 1
        if count > MAX_LINES:
            errors.add(reader.line_num, "file", f"more than {MAX_LINES} lines")
            break
        if len(row) != len(columns):
            errors.add(reader.line_num, "row", f"{len(row)} columns, expected {len(columns)}")
            continue
        yield reader.line_num, row


def parse_statement_csv(text: str) -> list[BankLine]:
    errors = _Errors()
    lines: list[BankLine] = []
    for number, (ref, facility, amount, currency, direction, value_date) in _rows(
            text, STATEMENT_COLUMNS, errors):
        parsed = (_text(ref, REFERENCE, errors, number, "reference"),
                  _text(facility, SLUG, errors, number, "facility_id"),
                  _amount(amount, errors, number),
                  _text(currency, CURRENCY, errors, number, "currency"),
                  _direction(direction.strip().lower(), errors, number),
                  _date(value_date, errors, number))
        if (line := _line(number, parsed)) is not None:
            lines.append(line)
    errors.check()
    if not lines:
        raise StatementFileError([RowError(1, "file", "no statement lines")])
    return lines


Parsed = tuple[str | None, str | None, Decimal | None, str | None, Direction | None, date | None]


def _line(number: int, parsed: Parsed) -> BankLine | None:
    """A statement line from (reference, facility, amount, currency, direction, value date), or
    None when a field was bad (it is in the errors)."""
    ref, facility, amount, currency, direction, value_date = parsed
    if (ref is None or facility is None or amount is None or currency is None
            or direction is None or value_date is None):
        return None
    return BankLine(line=number, facility_id=facility, reference=ref, amount=amount,
                    currency=currency, direction=direction, value_date=value_date)


def _direction(raw: str, errors: _Errors, line: int) -> Direction | None:
    mapped = {"debit": "debit", "dbit": "debit", "credit": "credit", "crdt": "credit"}.get(raw)
    if mapped is None:
        errors.add(line, "direction", f"{raw[:20]!r} is not debit or credit")
        return None
    return "debit" if mapped == "debit" else "credit"


def _child(node: Element, ns: str, path: str) -> Element | None:
    return node.find("/".join(f"{{{ns}}}{p}" for p in path.split("/")))


def _child_text(node: Element, ns: str, path: str) -> str | None:
    found = _child(node, ns, path)
    return None if found is None or found.text is None else found.text.strip()


def parse_camt053(data: str | bytes) -> list[BankLine]:
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise StatementFileError([RowError(0, "file", f"refused XML: {type(exc).__name__}")]) \
            from None
    except ParseError as exc:
        raise StatementFileError([RowError(0, "file", f"not well-formed XML: {exc}")]) from None
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if not CAMT.match(ns) or root.tag != f"{{{ns}}}Document":
        raise StatementFileError([RowError(0, "file", "not a camt.053 document (expected "
                                                      "Document in a camt.053.001.xx namespace)")])
    errors = _Errors()
    lines: list[BankLine] = []
    number = 0
    for stmt in root.iter(f"{{{ns}}}Stmt"):
        account = _child_text(stmt, ns, "Acct/Id/Othr/Id") or _child_text(stmt, ns, "Acct/Id/IBAN")
        for entry in stmt.findall(f"{{{ns}}}Ntry"):
            number += 1
            if number > MAX_LINES:
                errors.add(number, "file", f"more than {MAX_LINES} entries")
                break
            amount_node = _child(entry, ns, "Amt")
            ref = next((r for r in (
                _child_text(entry, ns, "NtryDtls/TxDtls/Refs/EndToEndId"),
                _child_text(entry, ns, "NtryRef"), _child_text(entry, ns, "AcctSvcrRef"))
                if r and r != "NOTPROVIDED"), None)
            parsed = (
                _text(ref or "", REFERENCE, errors, number, "reference"),
                _text(account or "", SLUG, errors, number, "facility_id"),
                _amount(amount_node.text or "" if amount_node is not None else "", errors, number),
                _text(amount_node.get("Ccy", "") if amount_node is not None else "", CURRENCY,
                      errors, number, "currency"),
                _direction((_child_text(entry, ns, "CdtDbtInd") or "").lower(), errors, number),
                _date(_child_text(entry, ns, "ValDt/Dt") or (_child_text(entry, ns, "ValDt/DtTm")
                                                            or "")[:10], errors, number))
            if (line := _line(number, parsed)) is not None:
                lines.append(line)
    errors.check()
    if not lines:
        raise StatementFileError([RowError(0, "file", "no entries (Ntry) in the statement")])
    return lines


def parse_statement(data: bytes, fmt: str | None = None) -> tuple[str, list[BankLine]]:
    """(format, lines) of a statement file; the format is guessed from the content when not
    given: XML is camt.053, anything else CSV."""
    text = decode(data)
    kind = fmt or ("camt053" if text.lstrip().startswith("<") else "csv")
    if kind == "camt053":
        return kind, parse_camt053(text.encode())
    if kind == "csv":
        return kind, parse_statement_csv(text)
    raise StatementFileError([RowError(0, "file", f"unknown format {fmt!r} (csv or camt053)")])


def parse_stock_csv(text: str) -> list[tuple[str, float, datetime]]:
    """The warehouse operator's stock ledger: (lot id, units, as of)."""
    errors = _Errors()
    rows: list[tuple[str, float, datetime]] = []
    for number, (lot, quantity, as_of) in _rows(text, STOCK_COLUMNS, errors):
        lot_id = _text(lot, SLUG, errors, number, "lot_id")
        try:
            units = float(quantity)
            if not (0 <= units < 1e12):
                raise ValueError
        except ValueError:
            errors.add(number, "quantity", f"{quantity[:40]!r} is not a quantity >= 0")
            continue
        try:
            when = datetime.fromisoformat(as_of.strip())
        except ValueError:
            errors.add(number, "as_of", f"{as_of[:40]!r} is not an RFC 3339 time")
            continue
        if when.tzinfo is None:
            errors.add(number, "as_of", "the time needs a zone (e.g. Z or +08:00)")
            continue
        if lot_id is not None:
            rows.append((lot_id, units, when))
    errors.check()
    if not rows:
        raise StatementFileError([RowError(1, "file", "no stock lines")])
    return rows
