"""Price files: the one set of rules for a commodity price, and the CSV form of a list of prices.

The CSV has the header ``time,commodity,price,currency`` and one price per line::

    time,commodity,price,currency
    2026-01-03T00:00:00Z,wheat,2790.5,CNY
    2026-01-03T08:00:00+08:00,copper-cathode,69500,CNY

The rules (shared with the HTTP API's ``PriceCreate``, which builds its field types from the
constants here):

- ``time``: RFC 3339 with seconds and a UTC offset (``Z`` or ``±HH:MM``), between
  :data:`ERA_START` (inclusive) and :data:`ERA_END` (exclusive);
- ``commodity``: :data:`COMMODITY_PATTERN` (a slug: 1-64 ASCII letters, digits and ``_.:-``,
  starting with a letter or digit);
- ``price``: a decimal number, finite, greater than :data:`PRICE_ABOVE` and at most
  :data:`PRICE_MAX`;
- ``currency``: :data:`CURRENCY_PATTERN` (three capital letters, ISO 4217 style).

CSV tolerances (syntax, not rules): a UTF-8 byte order mark, ``\\n``, ``\\r\\n`` or ``\\r`` line
ends, spaces around a cell, quoted cells, and blank lines (skipped). A field cannot span lines.

:func:`parse_prices_csv` checks every line and raises one :class:`PriceFileError` listing every
bad field of every bad line (up to ``max_errors``), so a file is fixed in one pass and stored whole
or not at all. Pure: the standard library and :mod:`lending.domain` only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO, TypeVar

from lending.domain.model import DomainError, PricePoint

CSV_HEADER: Final[tuple[str, ...]] = ("time", "commodity", "price", "currency")
HEADER_TEXT: Final = ",".join(CSV_HEADER)

COMMODITY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
PRICE_ABOVE: Final = 0.0  # a price must be greater than this (exclusive)
PRICE_MAX: Final = 1e12  # ... and at most this (inclusive)
ERA_START: Final = datetime(1970, 1, 1, tzinfo=UTC)  # inclusive
ERA_END: Final = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive: far-off dates overflow arithmetic
ERA_MESSAGE: Final = f"must be between {ERA_START.year} and {ERA_END.year}"
RFC3339_PATTERN: Final = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                          r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
DECIMAL_PATTERN: Final = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"

MAX_ROWS: Final = 10_000  # price rows in one file
MAX_ERRORS: Final = 100  # bad fields reported before checking stops
MAX_LINE_CHARS: Final = 1_000  # a good line is under 200 characters
MAX_FILE_BYTES: Final = 16 * 1024 * 1024  # read by read_prices_csv
SHOWN_CHARS: Final = 40  # of a bad value, in a message

_COMMODITY = re.compile(COMMODITY_PATTERN)
_CURRENCY = re.compile(CURRENCY_PATTERN)
_RFC3339 = re.compile(RFC3339_PATTERN)
_LOCAL_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?$")
_DECIMAL = re.compile(DECIMAL_PATTERN)

PathLike = str | os.PathLike[str]
T = TypeVar("T")


# --- the rules, one value at a time (ValueError says what is wrong, without the field name) -----


def shown(text: str) -> str:
    """``text`` quoted for a message: escapes visible, cut to :data:`SHOWN_CHARS` characters."""
    if len(text) > SHOWN_CHARS:
        return repr(text[:SHOWN_CHARS]) + f"... ({len(text)} characters)"
    return repr(text)


def check_commodity(text: str) -> str:
    """``text`` if it is a commodity name (:data:`COMMODITY_PATTERN`); ``ValueError`` otherwise."""
    if not text:
        raise ValueError("is empty")
    if not _COMMODITY.fullmatch(text):
        raise ValueError("must be 1-64 ASCII letters, digits or _.:- starting with a letter or "
                         f"digit, got {shown(text)}")
    return text


def check_currency(text: str) -> str:
    """``text`` if it is a currency code (:data:`CURRENCY_PATTERN`); ``ValueError`` otherwise."""
    if not text:
        raise ValueError("is empty")
    if not _CURRENCY.fullmatch(text):
        raise ValueError(f"must be 3 capital letters (e.g. CNY), got {shown(text)}")
    return text


def parse_price(text: str) -> float:
    """A price written as a decimal number (``2790.5``, ``1e3``) within the price rules."""
    if not text:
        raise ValueError("is empty")
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"must be a decimal number, got {shown(text)}")
    value = float(text)
    if not (math.isfinite(value) and PRICE_ABOVE < value <= PRICE_MAX):
        raise ValueError(f"must be finite, greater than {PRICE_ABOVE:g} and at most "
                         f"{PRICE_MAX:g}, got {shown(text)}")
    return value


def check_era(value: datetime) -> datetime:
    """An aware ``value`` in UTC if it lies in [:data:`ERA_START`, :data:`ERA_END`)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must have a UTC offset")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise ValueError(ERA_MESSAGE) from None
    if not ERA_START <= utc < ERA_END:
        raise ValueError(ERA_MESSAGE)
    return utc


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with an offset, within the era, as an aware UTC datetime."""
    if not text:
        raise ValueError("is empty")
    if not _RFC3339.fullmatch(text):
        if _LOCAL_TIME.fullmatch(text):
            raise ValueError(f"has no UTC offset (add Z or e.g. +08:00), got {shown(text)}")
        raise ValueError(f"must be RFC 3339 with an offset, e.g. 2026-01-01T00:00:00Z, "
                         f"got {shown(text)}")
    try:
        parsed = datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError as exc:
        raise ValueError(f"is not a real date and time ({exc}), got {shown(text)}") from None
    try:
        return check_era(parsed)
    except ValueError as exc:
        raise ValueError(f"{exc}, got {shown(text)}") from None


def format_time(time: datetime) -> str:
    """``time`` as RFC 3339 in UTC with a ``Z`` suffix."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- errors --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """What is wrong where: ``field`` is a column name, or ``header``, ``row`` (the line as a
    whole: columns, CSV syntax, length, row limit) or ``file`` (size, encoding)."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.message}"


class PriceFileError(ValueError):
    """A price file refused; :attr:`errors` names every bad field found (one line each in str)."""

    def __init__(self, errors: Sequence[RowError], *, stopped_at: int | None = None) -> None:
        self.errors: tuple[RowError, ...] = tuple(errors)
        self.stopped_at = stopped_at  # the line checking stopped after, if lines were left unread
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per error, and a last one if checking stopped early."""
        lines = [str(e) for e in self.errors]
        if self.stopped_at is not None:
            lines.append(f"stopped checking after line {self.stopped_at} "
                         f"({len(self.errors)} errors)")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --- reading --------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """One line's cells (a field cannot span lines); ``csv.Error`` if it is not valid CSV."""
    return next(csv.reader([line], strict=True), [])


def _csv_message(exc: csv.Error) -> str:
    text = str(exc)
    if text == "unexpected end of data":
        return "not valid CSV: a quoted field is not closed on its line"
    return f"not valid CSV: {text}"


def _checked(line: int, field: str, check: Callable[[str], T], text: str,
             errors: list[RowError]) -> T | None:
    """``check(text)``, or None with the error added to ``errors``."""
    try:
        return check(text)
    except ValueError as exc:
        errors.append(RowError(line, field, str(exc)))
        return None


def _parse_row(line: int, cells: list[str]) -> tuple[PricePoint | None, list[RowError]]:
    """One data row as a price, or every bad field of it."""
    if len(cells) != len(CSV_HEADER):
        return None, [RowError(line, "row", f"expected {len(CSV_HEADER)} columns ({HEADER_TEXT}),"
                                            f" got {len(cells)}")]
    time_text, commodity, price_text, currency = (cell.strip() for cell in cells)
    errors: list[RowError] = []
    time = _checked(line, "time", parse_time, time_text, errors)
    name = _checked(line, "commodity", check_commodity, commodity, errors)
    price = _checked(line, "price", parse_price, price_text, errors)
    code = _checked(line, "currency", check_currency, currency, errors)
    if time is None or name is None or price is None or code is None:
        return None, errors
    try:
        return PricePoint(name, time, price, code), []
    except DomainError as exc:  # not reached while the rules above imply the domain's
        return None, [RowError(line, "row", str(exc))]


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines of ``text`` (``\\n``, ``\\r\\n`` or ``\\r`` ends), without their ends."""
    for number, line in enumerate(io.StringIO(text.removeprefix("\ufeff"), newline=None), 1):
        yield number, line.removesuffix("\n")


def _check_header(lines: Iterator[tuple[int, str]]) -> None:
    first = next(lines, None)
    if first is None:
        raise PriceFileError([RowError(1, "header", f"the file is empty (expected {HEADER_TEXT})")])
    _, line = first
    try:
        header = tuple(cell.strip() for cell in _cells(line[: MAX_LINE_CHARS + 1]))
    except csv.Error:
        header = ()
    if header != CSV_HEADER:
        raise PriceFileError([RowError(1, "header", f"expected {HEADER_TEXT}, got {shown(line)}")])


def _rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str] | RowError]]:
    """The data lines that are not blank: their cells, or why the line cannot be read."""
    for number, line in lines:
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            yield number, RowError(number, "row", f"longer than {MAX_LINE_CHARS} characters "
                                                  f"({len(line)})")
            continue
        try:
            cells = _cells(line)
        except csv.Error as exc:
            yield number, RowError(number, "row", _csv_message(exc))
            continue
        if any(cell.strip() for cell in cells):
            yield number, cells


def parse_prices_csv(text: str, *, max_rows: int = MAX_ROWS,
                     max_errors: int = MAX_ERRORS) -> list[PricePoint]:
    """The prices in CSV ``text``; :class:`PriceFileError` naming every bad field of every bad
    line (checking stops after ``max_errors`` errors, or at price row ``max_rows + 1``)."""
    if max_rows < 1 or max_errors < 1:
        raise ValueError(f"max_rows and max_errors must be >= 1, got {max_rows}, {max_errors}")
    lines = _lines(text)
    _check_header(lines)
    points: list[PricePoint] = []
    errors: list[RowError] = []
    for count, (number, row) in enumerate(_rows(lines), 1):
        if count > max_rows:
            errors.append(RowError(number, "row", f"more than {max_rows} price rows"))
            break
        if isinstance(row, RowError):
            errors.append(row)
        else:
            point, row_errors = _parse_row(number, row)
            errors += row_errors
            if point is not None:
                points.append(point)
        if len(errors) >= max_errors:
            more = len(errors) > max_errors or next(lines, None) is not None
            raise PriceFileError(errors[:max_errors], stopped_at=number if more else None)
    if errors:
        raise PriceFileError(errors)
    if not points:
        raise PriceFileError([RowError(2, "row", "no price rows after the header")])
    return points


def decode_prices_csv(data: bytes) -> str:
    """``data`` as UTF-8 text (a byte order mark is dropped); :class:`PriceFileError` naming the
    line of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PriceFileError([RowError(line, "file", f"not UTF-8 text (byte {exc.start})")]) from None


def read_prices_csv(path: PathLike, *, max_rows: int = MAX_ROWS,
                    max_errors: int = MAX_ERRORS) -> list[PricePoint]:
    """The prices in the CSV file at ``path`` (see :func:`parse_prices_csv`); ``OSError`` if it
    cannot be read, :class:`PriceFileError` if it is larger than :data:`MAX_FILE_BYTES`."""
    with Path(path).open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise PriceFileError([RowError(line, "file",
                                       f"the file is larger than {MAX_FILE_BYTES:,} bytes")])
    return parse_prices_csv(decode_prices_csv(data), max_rows=max_rows, max_errors=max_errors)


# --- writing -------------------------------------------------------------------------------------


def write_prices_csv(points: Iterable[PricePoint], target: PathLike | TextIO) -> int:
    """Write ``points`` as CSV (header first) to a path or an open text file; the row count."""
    if isinstance(target, str | os.PathLike):
        with Path(target).open("w", encoding="utf-8", newline="") as handle:
            return write_prices_csv(points, handle)
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    count = 0
    for point in points:
        writer.writerow((format_time(point.time), point.commodity, repr(point.price), point.currency))
        count += 1
    return count


def prices_csv_text(points: Iterable[PricePoint]) -> str:
    """``points`` as CSV text (for tests and HTTP bodies)."""
    buffer = io.StringIO()
    write_prices_csv(points, buffer)
    return buffer.getvalue()
