"""The price CSV (lending/price_file.py): one set of rules for the CLI and the HTTP API, every bad
field of every bad line reported with its line, and the API's ``PriceCreate`` agreeing with it."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from api.schemas import PriceCreate
from firmware_sim.market import price_series
from lending import price_file
from lending.domain.model import PricePoint
from lending.portfolio_file import PriceIn
from lending.price_file import (
    CSV_HEADER,
    MAX_LINE_CHARS,
    PriceFileError,
    RowError,
    format_time,
    parse_prices_csv,
    prices_csv_text,
    read_prices_csv,
    write_prices_csv,
)
from pledgewatch.cli import lending as lending_cli
from pledgewatch.cli.main import app
from pledgewatch.demo_portfolio import price_points

HEADER = ",".join(CSV_HEADER)
START = datetime(2024, 3, 1, tzinfo=UTC)
GOOD = "2024-03-01T00:00:00Z,corn,2500,CNY"


def csv_of(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def refused(text: str, **limits: int) -> PriceFileError:
    with pytest.raises(PriceFileError) as caught:
        parse_prices_csv(text, **limits)
    return caught.value


def where(error: PriceFileError) -> list[tuple[int, str]]:
    return [(e.line, e.field) for e in error.errors]


# --- good files ------------------------------------------------------------------------------------


def test_a_good_file_round_trips_through_a_path_and_text(tmp_path: Path) -> None:
    points = price_points(price_series("copper", 70_123.45, start=START, points=30,
                                       volatility=0.03, seed=5, crash_at=10))
    path = tmp_path / "prices.csv"
    assert write_prices_csv(points, path) == 30
    assert path.read_text(encoding="utf-8").splitlines()[:2] == [
        HEADER, f"2024-03-01T00:00:00Z,copper,{points[0].price!r},CNY"]
    assert read_prices_csv(path) == points
    assert parse_prices_csv(prices_csv_text(points)) == points
    buffer = io.StringIO()
    assert write_prices_csv(points[:2], buffer) == 2
    assert parse_prices_csv(buffer.getvalue()) == points[:2]


def test_csv_syntax_tolerances_bom_line_ends_spaces_quotes_blank_lines() -> None:
    text = ("\ufeff time , commodity,price ,currency\r\n"
            "2024-03-01T08:00:00+08:00, corn ,\"2500.5\",CNY\r\n"
            "\r\n   \r\n,,,\r\n"
            "2024-03-01t00:00:00z,corn,.5,USD\r"
            "2024-03-01 00:00:00.250Z,corn,1e3,CNY")
    assert parse_prices_csv(text) == [
        PricePoint("corn", START, 2500.5, "CNY"),
        PricePoint("corn", START, 0.5, "USD"),
        PricePoint("corn", START + timedelta(milliseconds=250), 1000.0, "CNY"),
    ]


def test_format_time_is_rfc3339_utc() -> None:
    shanghai = START.astimezone(timezone(timedelta(hours=8)))
    assert format_time(shanghai) == "2024-03-01T00:00:00Z"


# --- every bad row, with its line and field -------------------------------------------------------


def test_every_bad_row_is_reported_with_its_line_and_field() -> None:
    text = csv_of(
        GOOD,                                           # 2
        "yesterday,corn,2500,CNY",                      # 3 time
        GOOD,                                           # 4
        "2024-03-01T00:00:00Z,corn,cheap,CNY",          # 5 price
        "",                                             # 6 blank: skipped
        "2024-03-01T00:00:00Z,,2500,",                  # 7 commodity and currency
        "2024-03-01T00:00:00Z,corn,2500",               # 8 columns
        "2024-02-30T00:00:00Z,corn,0,yuan",             # 9 time, price, currency
    )
    error = refused(text)
    assert where(error) == [(3, "time"), (5, "price"), (7, "commodity"), (7, "currency"),
                            (8, "row"), (9, "time"), (9, "price"), (9, "currency")]
    assert str(error).splitlines() == [str(e) for e in error.errors]
    assert "line 5, price: must be a decimal number, got 'cheap'" in str(error)
    assert "line 8, row: expected 4 columns (time,commodity,price,currency), got 3" in str(error)
    assert "line 9, time: is not a real date and time" in str(error)
    assert error.stopped_at is None


def test_the_row_the_cli_used_to_accept_is_refused_on_all_three_fields() -> None:
    error = refused(csv_of("2026-01-01T00:00:00Z,Steel Coil!,1e300,NOT-A-CURRENCY-CODE"))
    assert where(error) == [(2, "commodity"), (2, "price"), (2, "currency")]
    lines = str(error).splitlines()
    assert lines[0].startswith("line 2, commodity: ") and "'Steel Coil!'" in lines[0]
    assert lines[1] == "line 2, price: must be finite, greater than 0 and at most 1e+12, got '1e300'"
    assert lines[2] == "line 2, currency: must be 3 capital letters (e.g. CNY), got 'NOT-A-CURRENCY-CODE'"


# --- hostile input ---------------------------------------------------------------------------------

HOSTILE = {
    "nul-in-commodity": ("2024-03-01T00:00:00Z,co\x00rn,2500,CNY", "commodity", r"'co\x00rn'"),
    "nul-in-price": ("2024-03-01T00:00:00Z,corn,25\x0000,CNY", "price", "decimal number"),
    "nul-in-time": ("2024-03-01T00:00:00Z\x00,corn,2500,CNY", "time", "RFC 3339"),
    "overflow-1e400": ("2024-03-01T00:00:00Z,corn,1e400,CNY", "price", "finite"),
    "above-max": ("2024-03-01T00:00:00Z,corn,1.0000000000001e12,CNY", "price", "at most 1e+12"),
    "nan": ("2024-03-01T00:00:00Z,corn,nan,CNY", "price", "decimal number"),
    "NaN": ("2024-03-01T00:00:00Z,corn,NaN,CNY", "price", "decimal number"),
    "inf": ("2024-03-01T00:00:00Z,corn,inf,CNY", "price", "decimal number"),
    "-Infinity": ("2024-03-01T00:00:00Z,corn,-Infinity,CNY", "price", "decimal number"),
    "minus-zero": ("2024-03-01T00:00:00Z,corn,-0,CNY", "price", "greater than 0"),
    "zero": ("2024-03-01T00:00:00Z,corn,0.000,CNY", "price", "greater than 0"),
    "negative": ("2024-03-01T00:00:00Z,corn,-3.5,CNY", "price", "greater than 0"),
    "underscores": ("2024-03-01T00:00:00Z,corn,1_000,CNY", "price", "decimal number"),
    "hex": ("2024-03-01T00:00:00Z,corn,0x10,CNY", "price", "decimal number"),
    "arabic-digits": ("2024-03-01T00:00:00Z,corn,\u0661\u0662,CNY", "price", "decimal number"),
    "empty-price": ("2024-03-01T00:00:00Z,corn,,CNY", "price", "is empty"),
    "huge-line": ("2024-03-01T00:00:00Z,corn,2500,CNY" + " " * MAX_LINE_CHARS, "row",
                  f"longer than {MAX_LINE_CHARS} characters"),
    "huge-field": ("2024-03-01T00:00:00Z," + "w" * 500 + ",2500,CNY", "commodity",
                   "(500 characters)"),
    "missing-column": ("2024-03-01T00:00:00Z,corn,2500", "row", "expected 4 columns"),
    "extra-column": ("2024-03-01T00:00:00Z,corn,2500,CNY,x", "row", "got 5"),
    "one-column": ("corn", "row", "got 1"),
    "unterminated-quote": ('2024-03-01T00:00:00Z,"corn,2500,CNY', "row", "quoted field is not closed"),
    "stray-quote": ('2024-03-01T00:00:00Z,"corn"x,2500,CNY', "row", "not valid CSV"),
    "naive-time": ("2024-03-01T00:00:00,corn,2500,CNY", "time", "has no UTC offset"),
    "date-only": ("2024-03-01,corn,2500,CNY", "time", "RFC 3339"),
    "year-10000": ("10000-01-01T00:00:00Z,corn,2500,CNY", "time", "RFC 3339"),
    "year-1": ("0001-01-01T00:00:00+05:00,corn,2500,CNY", "time", "between 1970 and 2200"),
    "year-9999-west": ("9999-12-31T23:59:59-05:00,corn,2500,CNY", "time", "between 1970 and 2200"),
    "before-1970": ("1969-12-31T23:59:59Z,corn,2500,CNY", "time", "between 1970 and 2200"),
    "year-2200": ("2200-01-01T00:00:00Z,corn,2500,CNY", "time", "between 1970 and 2200"),
    "hour-24": ("2024-03-01T24:00:00Z,corn,2500,CNY", "time", "not a real date and time"),
    "leap-second": ("2024-03-01T23:59:60Z,corn,2500,CNY", "time", "not a real date and time"),
    "offset-24h": ("2024-03-01T00:00:00+24:00,corn,2500,CNY", "time", "not a real date and time"),
    "unix-time": ("1709251200,corn,2500,CNY", "time", "RFC 3339"),
    "no-seconds": ("2024-03-01T00:00Z,corn,2500,CNY", "time", "RFC 3339"),
    "sql": ("2024-03-01T00:00:00Z,' OR 1=1 --,2500,CNY", "commodity", "' OR 1=1 --"),
    "lowercase-currency": ("2024-03-01T00:00:00Z,corn,2500,cny", "currency", "3 capital letters"),
    "fullwidth-currency": ("2024-03-01T00:00:00Z,corn,2500,\uff23\uff2e\uff39", "currency",
                           "3 capital letters"),
    "empty-currency": ("2024-03-01T00:00:00Z,corn,2500,", "currency", "is empty"),
}


@pytest.mark.parametrize(("row", "field", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_rows_are_refused_with_their_line_and_field(row: str, field: str,
                                                            message: str) -> None:
    error = refused(csv_of(GOOD, row, GOOD))
    assert where(error) == [(3, field)], str(error)
    assert message in error.errors[0].message
    assert len(str(error)) < 300, "a hostile value is cut short in the message"


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty"),
    ("\ufeff", "the file is empty"),
    ("when,what,price,currency\n" + GOOD + "\n", "expected time,commodity,price,currency"),
    ("time,commodity,price\n", "expected time,commodity,price,currency"),
    ("time,commodity,price,currency,extra\n", "expected"),
    ('time,"commodity,price,currency\n', "expected"),
    ("\n" + HEADER + "\n" + GOOD + "\n", "expected"),
    ("TIME,COMMODITY,PRICE,CURRENCY\n", "expected"),
    ("x" * 100_000 + "\n", "... (100000 characters)"),
])
def test_a_bad_header_or_empty_file_is_refused_on_line_1(text: str, message: str) -> None:
    error = refused(text)
    assert where(error) == [(1, "header")]
    assert message in str(error)


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n", HEADER + "\n\n \n,,,\n"])
def test_a_header_without_rows_is_refused(text: str) -> None:
    assert str(refused(text)) == "line 2, row: no price rows after the header"


def test_too_many_rows_are_refused_at_the_first_row_over() -> None:
    assert len(parse_prices_csv(csv_of(*[GOOD] * 5), max_rows=5)) == 5
    error = refused(csv_of(*[GOOD] * 3, "", *[GOOD] * 3), max_rows=5)
    assert [str(e) for e in error.errors] == ["line 8, row: more than 5 price rows"]


def test_checking_stops_after_max_errors_and_says_so() -> None:
    error = refused(csv_of(*["x,-,z,w"] * 30), max_errors=10)
    assert len(error.errors) == 10 and error.stopped_at == 4
    assert str(error).splitlines()[-1] == "stopped checking after line 4 (10 errors)"
    exactly = refused(csv_of(*["yesterday,corn,1,CNY"] * 3), max_errors=3)
    assert len(exactly.errors) == 3 and exactly.stopped_at is None
    with pytest.raises(ValueError, match="max_rows and max_errors"):
        parse_prices_csv(csv_of(GOOD), max_errors=0)


def test_a_file_that_is_not_utf8_or_too_large_names_the_line(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n{GOOD}\n2024-03-01T00:00:00Z,ma\xefs,1,CNY\n".encode("latin-1"))
    with pytest.raises(PriceFileError) as caught:
        read_prices_csv(path)
    error = caught.value
    assert where(error) == [(3, "file")] and "not UTF-8" in str(error)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(f"\ufeff{HEADER}\r\n{GOOD}\r\n".encode())
    assert read_prices_csv(bom) == [PricePoint("corn", START, 2500.0, "CNY")]
    monkeypatch.setattr(price_file, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.csv"
    big.write_text(csv_of(*[GOOD] * 10), encoding="utf-8")
    with pytest.raises(PriceFileError) as caught:
        read_prices_csv(big)
    error = caught.value
    assert [str(e) for e in error.errors] == ["line 4, file: the file is larger than 100 bytes"]
    with pytest.raises(OSError):
        read_prices_csv(tmp_path / "absent.csv")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_text_gives_prices_or_a_price_file_error(body: str) -> None:
    try:
        points = parse_prices_csv(HEADER + "\n" + body)
    except PriceFileError as exc:
        assert exc.errors and all(isinstance(e, RowError) and e.line >= 1 for e in exc.errors)
    else:
        assert points and all(isinstance(p, PricePoint) for p in points)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(
    PricePoint,
    commodity=st.from_regex(price_file.COMMODITY_PATTERN, fullmatch=True),
    time=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30),  # noqa: DTZ001
                      timezones=st.just(UTC)),
    price=st.floats(min_value=1e-300, max_value=1e12),
    currency=st.from_regex(price_file.CURRENCY_PATTERN, fullmatch=True)), min_size=1, max_size=20))
def test_written_prices_read_back_equal(points: list[PricePoint]) -> None:
    assert parse_prices_csv(prices_csv_text(points)) == points


# --- the API's model and the file agree ------------------------------------------------------------

T, C, P, K = "2026-01-01T00:00:00Z", "wheat", "2790.5", "CNY"
# (time, commodity, price, currency) texts without surrounding spaces (a CSV cell is trimmed)
AGREEMENT: list[tuple[str, str, str, str]] = [
    # accepted
    (T, C, P, K), ("2026-01-01T08:00:00+08:00", "copper-cathode", "69500", "USD"),
    ("2026-01-01t00:00:00z", C, P, K), ("2026-01-01 00:00:00Z", C, P, K),
    ("2026-01-01T00:00:00.123456Z", C, P, K), ("2026-01-01T00:00:00-23:59", C, P, K),
    ("1970-01-01T00:00:00Z", C, P, K), ("2199-12-31T23:59:59Z", C, P, K),
    ("1970-01-01T08:00:00+08:00", C, P, K),
    (T, "a" * 64, P, K), (T, "A.b:c_d-1", P, K), (T, "0", P, K),
    (T, C, "1e12", K), (T, C, "1000000000000.0", K), (T, C, "0.01", K), (T, C, "5e-324", K),
    (T, C, "+5", K), (T, C, ".5", K), (T, C, "5.", K), (T, C, "1E3", K),
    # refused: time
    ("2026-01-01T00:00:00", C, P, K), ("2026-01-01", C, P, K), ("yesterday", C, P, K),
    ("", C, P, K), ("10000-01-01T00:00:00Z", C, P, K), ("1969-12-31T23:59:59Z", C, P, K),
    ("1970-01-01T07:59:59+08:00", C, P, K), ("2200-01-01T00:00:00Z", C, P, K),
    ("0001-01-01T00:00:00+05:00", C, P, K), ("9999-12-31T23:59:59-05:00", C, P, K),
    ("2026-02-30T00:00:00Z", C, P, K), ("2026-01-01T24:00:00Z", C, P, K),
    ("2026-01-01T23:59:60Z", C, P, K), ("2026-01-01T00:00:00+24:00", C, P, K),
    ("2026-01-01T00:00:00+08", C, P, K),
    # refused: commodity
    (T, "Steel Coil!", P, K), (T, "", P, K), (T, "-wheat", P, K), (T, "a" * 65, P, K),
    (T, "\u00e9", P, K), (T, "wh\x00eat", P, K), (T, "' OR 1=1 --", P, K), (T, "wh/eat", P, K),
    # refused: price
    (T, C, "1e300", K), (T, C, "1e400", K), (T, C, "1.0000000000001e12", K), (T, C, "nan", K),
    (T, C, "inf", K), (T, C, "-inf", K), (T, C, "-0", K), (T, C, "0", K), (T, C, "-5", K),
    (T, C, "abc", K), (T, C, "", K), (T, C, "1,5", K), (T, C, "0x10", K),
    (T, C, "\u0661\u0662", K), (T, C, "1e-400", K),
    # refused: currency
    (T, C, P, "NOT-A-CURRENCY-CODE"), (T, C, P, "cny"), (T, C, P, ""), (T, C, P, "CN"),
    (T, C, P, "CNYY"), (T, C, P, "\uff23\uff2e\uff39"), (T, C, P, "C1Y"),
    # refused on every field
    ("2026-01-01T00:00:00", "Steel Coil!", "1e300", "NOT-A-CURRENCY-CODE"),
]


def _by_api(time: str, commodity: str, price: str, currency: str) -> PricePoint | None:
    """A JSON body: the price goes as a JSON number (the API refuses numbers in strings), so
    text that is a decimal number becomes one; anything else cannot be sent as a price."""
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", price, re.ASCII):
        return None
    number = float(price)
    try:
        p = PriceCreate.model_validate({"time": time, "commodity": commodity, "price": number,
                                        "currency": currency})
    except ValidationError:
        return None
    return PricePoint(p.commodity, p.time, p.price, p.currency)


def _by_portfolio(time: str, commodity: str, price: str, currency: str) -> PricePoint | None:
    """A price entry of a portfolio YAML file (numbers as YAML gives them: floats)."""
    try:
        number = float(price)
    except ValueError:
        return None
    try:
        return PriceIn.model_validate({"time": time, "commodity": commodity, "price": number,
                                       "currency": currency}).domain()
    except ValidationError:
        return None


def _by_file(time: str, commodity: str, price: str, currency: str) -> PricePoint | None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([CSV_HEADER, (time, commodity, price,
                                                                    currency)])
    try:
        [point] = parse_prices_csv(buffer.getvalue())
    except PriceFileError:
        return None
    return point


@pytest.mark.parametrize("case", AGREEMENT, ids=[repr(c)[:60] for c in AGREEMENT])
def test_the_api_model_and_the_file_agree(case: tuple[str, str, str, str]) -> None:
    by_api, by_file = _by_api(*case), _by_file(*case)
    assert by_api == by_file, f"API {by_api!r} != file {by_file!r}"
    if by_file is not None:  # the CSV's number syntax is stricter than YAML's floats, not its range
        assert _by_portfolio(*case) == by_file


def test_the_agreement_table_has_both_answers() -> None:
    answers = [_by_file(*case) is not None for case in AGREEMENT]
    assert answers.count(True) >= 15 and answers.count(False) >= 40


def test_the_api_and_the_file_share_one_era() -> None:
    start, end, tick = price_file.ERA_START, price_file.ERA_END, timedelta(microseconds=1)
    for time, ok in ((start, True), (end - tick, True), (start - tick, False), (end, False)):
        assert (_by_api(time.isoformat(), C, P, K) is not None) is ok, time
        assert (_by_file(time.isoformat(), C, P, K) is not None) is ok, time
    with pytest.raises(ValidationError, match=price_file.ERA_MESSAGE):
        PriceCreate(commodity=C, time=end, price=1.0)


# --- the CLI prints every bad row and stores nothing -----------------------------------------------


def test_cli_prices_post_prints_every_bad_row_and_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PLEDGEWATCH_STATE_DIR", str(tmp_path / "state"))

    def no_store(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a bad file must not reach the store")

    monkeypatch.setattr(lending_cli, "run", no_store)
    path = tmp_path / "prices.csv"
    path.write_text(csv_of(GOOD, "2026-01-01T00:00:00Z,Steel Coil!,1e300,NOT-A-CURRENCY-CODE",
                           GOOD, "yesterday,corn,2500,CNY"), encoding="utf-8")
    result = CliRunner().invoke(app, ["prices", "post", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line.removeprefix(f"error: {path}: ").split(":")[0] for line in lines] == [
        "line 3, commodity", "line 3, price", "line 3, currency", "line 5, time"]
    assert all(line.startswith(f"error: {path}: line ") for line in lines)
    assert "posted" not in result.stdout


@pytest.mark.parametrize(("time", "commodity", "price", "currency"), [
    ("2024-03-01T00:00:00Z", "corn", "1e13", "CNY"),
    ("2300-01-01T00:00:00Z", "corn", "2500", "CNY"),
    ("2024-03-01T00:00:00Z", "Steel Coil!", "2500", "CNY"),
    ("2024-03-01T00:00:00Z", "corn", "2500", "cny"),
])
def test_a_portfolio_file_refuses_what_the_price_csv_refuses(time: str, commodity: str, price: str,
                                                             currency: str) -> None:
    assert _by_file(time, commodity, price, currency) is None
    assert _by_portfolio(time, commodity, price, currency) is None
