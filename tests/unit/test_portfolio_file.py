"""Portfolio files (YAML, lots CSV): what parses, and what is refused with a message that says
where. Pure: text in, :class:`PortfolioIn` or :class:`PortfolioError` out (the few file tests use
``tmp_path`` only to exercise :func:`read_portfolio`)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from firmware_sim.device_models import make_fleet
from lending.domain.model import BorrowerRole
from lending.domain.pledges import pledge_conflicts
from lending.portfolio_file import PortfolioError, PortfolioIn, parse_portfolio, read_portfolio
from pledgewatch.demo_portfolio import demo_portfolio

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

LOT = ("{id: l1, facility: f1, commodity: wheat, declared_quantity: 10, unit_weight_kg: 1000,"
       " registration_no: REG-1%s}")
CSV_HEADER = ("id,facility,commodity,declared_quantity,unit_weight_kg,registration_no,sensors,"
              "business_hours\n")


def facility(extra: str = "", line: str = "100") -> str:
    return f"facilities:\n  - {{id: f1, borrower: b1, line: {line}{extra}}}\n"


def lot(extra: str = "") -> str:
    return "lots:\n  - " + LOT % extra + "\n"


def refused(text: str, fmt: str = "yaml") -> str:
    """The message of the PortfolioError that ``text`` gives (fails if it parses)."""
    with pytest.raises(PortfolioError) as info:
        parse_portfolio(text, fmt)
    return str(info.value)


# --- what parses -------------------------------------------------------------------------------

def test_the_example_yaml_portfolio_parses_with_every_section() -> None:
    p = read_portfolio(DATA / "portfolio.yaml")
    assert [c.name for c in p.commodities] == ["wheat", "copper-cathode"]
    assert p.commodities[0].temp_c == (0, 32)
    assert {b.id: b.role for b in p.borrowers} == {
        "core-mill": BorrowerRole.CORE, "sup-grain": BorrowerRole.SUPPLIER,
        "sup-metal": BorrowerRole.SUPPLIER}
    assert p.borrowers[1].core == "core-mill"
    grain = p.facilities[0].domain()
    assert (grain.id, grain.line, grain.outstanding) == ("fac-grain", 500_000, 100_000)
    assert grain.terms.advance_rate == 0.6 and grain.terms.base_haircut == 0.1
    assert grain.terms.cure_period.total_seconds() == 259_200
    lots = {lot.id: lot.domain() for lot in p.lots}
    assert lots["lot-wheat-1"].sensors == ("wh-t-0001", "rfid-t-0001")
    assert lots["lot-wheat-2"].business_hours == (7, 19)  # the default
    assert lots["lot-copper-1"].geofence is not None and len(lots["lot-copper-1"].geofence) == 4
    receivable = p.receivables[0].domain()
    assert receivable.due == datetime(2030, 12, 31, tzinfo=UTC)
    assert receivable.eligible(NOW, grain.terms.receivable_max_days_past_due)
    assert [(q.commodity, q.price) for q in p.prices] == [
        ("wheat", 2800), ("wheat", 2810), ("copper-cathode", 70_000)]
    assert all(q.time.tzinfo is not None for q in p.prices)


def test_the_lots_csv_parses_sensors_and_business_hours() -> None:
    p = read_portfolio(DATA / "lots.csv")
    assert not (p.facilities or p.borrowers or p.commodities or p.prices)
    first, second = (lot.domain() for lot in p.lots)
    assert first.id == "lot-csv-1" and first.facility_id == "fac-grain"
    assert first.sensors == ("wh-c-0001", "rfid-c-0001")
    assert first.business_hours == (7, 19)
    assert (first.declared_quantity, first.unit_weight_kg) == (120, 25)
    assert first.site == "bay 7"
    assert second.sensors == ("wh-c-0002",)
    assert second.business_hours == (0, 24)
    assert second.declared_quantity == 80.5
    assert second.site is None  # an empty cell is "not given"


def test_the_lots_csv_as_text() -> None:
    text = CSV_HEADER + "l1,f1,wheat,100,25,REG-1, a ; b ,7-19\n"
    (only,) = parse_portfolio(text, "csv").lots
    assert only.sensors == ("a", "b")
    assert only.business_hours == (7, 19)


@pytest.mark.parametrize("text", ["", "   \n", "# nothing here\n", "---\n...\n"],
                         ids=["empty", "blank", "comment", "empty-document"])
def test_an_empty_yaml_file_is_an_empty_portfolio(text: str) -> None:
    assert parse_portfolio(text, "yaml") == PortfolioIn()


def test_an_empty_file_on_disk_is_an_empty_portfolio(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    assert read_portfolio(path) == PortfolioIn()


# --- what is refused, and the message says where ------------------------------------------------

BAD_YAML: dict[str, tuple[str, tuple[str, ...]]] = {
    # id: (document, substrings the message must contain)
    "not-yaml": ("a: [1, 2\nb: }\n", ("not valid YAML", "line")),
    "tab-indent": ("facilities:\n\t- id: f1\n", ("not valid YAML",)),
    "list-not-mapping": ("- facilities\n- lots\n", ("mapping",)),
    "scalar-not-mapping": ("42\n", ("mapping",)),
    "unknown-top-level-key": ("facilities: []\nwidgets: []\n", ("widgets", "Extra inputs")),
    "section-not-a-list": ("facilities: {id: f1}\n", ("facilities",)),
    "unknown-field": (facility(", colour: red"), ("facilities.0.colour",)),
    "missing-field": ("facilities:\n  - {id: f1, borrower: b1}\n", ("facilities.0.line",)),
    "id-with-spaces": ("facilities:\n  - {id: 'f 1', borrower: b1, line: 5}\n",
                       ("facilities.0.id",)),
    "id-200-chars": ("facilities:\n  - {id: '" + "x" * 200 + "', borrower: b1, line: 5}\n",
                     ("facilities.0.id",)),
    "id-sql": ("lots:\n  - " + LOT.replace("id: l1", "id: \"x'; DROP TABLE lots;--\"") % ""
               + "\n", ("lots.0.id",)),
    "id-slash": ("borrowers:\n  - {id: ../../etc, name: x}\n", ("borrowers.0.id",)),
    "borrower-ref-sql": (facility().replace("borrower: b1", "borrower: \"b1' OR '1'='1\""),
                         ("facilities.0.borrower",)),
    "sensor-id-hostile": (lot(", sensors: ['wh-1', 'a/b#']"), ("lots.0.sensors", "'a/b#'")),
    "negative-line": (facility(line="-5"), ("facilities.0.line",)),
    "nan-line": (facility(line=".nan"), ("facilities.0.line", "finite")),
    "inf-line": (facility(line=".inf"), ("facilities.0.line", "finite")),
    "nan-string-line": (facility(line="'NaN'"), ("facilities.0.line", "finite")),
    "huge-line": (facility(line="1e300"), ("facilities.0.line",)),
    "negative-outstanding": (facility(", outstanding: -1"), ("facilities.0.outstanding",)),
    "negative-quantity": (lot().replace("declared_quantity: 10", "declared_quantity: -10"),
                          ("lots.0.declared_quantity",)),
    "nan-quantity": (lot().replace("declared_quantity: 10", "declared_quantity: .nan"),
                     ("lots.0.declared_quantity", "finite")),
    "zero-unit-weight": (lot().replace("unit_weight_kg: 1000", "unit_weight_kg: 0"),
                         ("lots.0.unit_weight_kg",)),
    "negative-receivable": (("receivables:\n  - {id: r1, facility: f1, debtor: d, amount: -5,"
                            " due: 2026-12-31T00:00:00Z}\n"), ("receivables.0.amount",)),
    "inf-price": ("prices:\n  - {commodity: wheat, time: 2026-01-01T00:00:00Z, price: .inf}\n",
                  ("prices.0.price", "finite")),
    "zero-price": ("prices:\n  - {commodity: wheat, time: 2026-01-01T00:00:00Z, price: 0}\n",
                   ("prices.0.price",)),
    "price-without-time-zone": (("prices:\n  - {commodity: wheat, time: 2026-01-01T00:00:00,"
                                " price: 5}\n"), ("prices.0.time", "timezone")),
    "bad-currency": (facility(", currency: yuan"), ("facilities.0.currency",)),
    "advance-rate-above-1": (facility(", terms: {advance_rate: 1.5}"), ("advance_rate",)),
    "geofence-2-points": (lot(", geofence: [[31, 121], [32, 122]]"),
                          ("lots.0.geofence", "at least 3")),
    "geofence-lat-95": (lot(", geofence: [[95, 121], [31, 122], [32, 122]]"),
                        ("lots.0.geofence", "95")),
    "geofence-not-pairs": (lot(", geofence: [[31, 121, 5], [31, 122], [32, 122]]"),
                           ("lots.0.geofence",)),
    "business-hours-25": (lot(", business_hours: [7, 25]"), ("l1", "business hours")),
    "duplicate-facility-ids": (facility() + "  - {id: f1, borrower: b2, line: 6}\n",
                               ("facilities", "listed twice", "f1")),
    "duplicate-lot-ids": ("lots:\n  - " + LOT % "" + "\n  - "
                          + LOT.replace("REG-1", "REG-2") % "" + "\n",
                          ("lots", "listed twice", "l1")),
    "duplicate-commodity-names": ("commodities:\n  - {name: wheat}\n  - {name: wheat}\n",
                                  ("commodities", "listed twice", "wheat")),
    "sensor-listed-twice": (lot(", sensors: [wh-1, wh-1]"), ("lots.0.sensors", "twice")),
    "due-without-time-zone": (("receivables:\n  - {id: r1, facility: f1, debtor: d, amount: 5,"
                              " due: 2026-12-31T00:00:00}\n"), ("receivables.0.due", "timezone")),
    "due-is-a-date": (("receivables:\n  - {id: r1, facility: f1, debtor: d, amount: 5,"
                      " due: 2026-12-31}\n"), ("receivables.0.due",)),
    "temp-range-reversed": ("commodities:\n  - {name: wheat, temp_c: [30, 0]}\n",
                            ("wheat", "temp_c")),
    "bad-role": ("borrowers:\n  - {id: b1, name: B, role: landlord}\n", ("borrowers.0.role",)),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD_YAML.values()), ids=list(BAD_YAML))
def test_bad_yaml_is_refused_naming_the_entry_and_field(text: str, expected: tuple[str, ...]
                                                        ) -> None:
    message = refused(text)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "Traceback" not in message


# Product terms are checked by the domain after pydantic (and turned into a timedelta).
BAD_TERMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "warning-above-liquidation": ("{warning_ltv: 0.9, liquidation_ltv: 0.8}",
                                  ("warning_ltv", "liquidation_ltv")),
    "warning-equals-liquidation": ("{warning_ltv: 0.8, liquidation_ltv: 0.8}", ("warning_ltv",)),
    "unknown-product-term": ("{advance: 0.5}", ("unknown product terms", "advance")),
    "nan-advance-rate": ("{advance_rate: .nan}", ("advance_rate",)),
    "negative-haircut": ("{base_haircut: -0.1}", ("base_haircut",)),
    "negative-cure-period": ("{cure_period: -1}", ("cure_period",)),
    "infinite-cure-period": ("{cure_period: .inf}", ("cure_period",)),
    "cure-period-1e20-seconds": ("{cure_period: 1e20}", ("cure_period",)),
    # timedelta(days=1e300) overflows when the engine checks a receivable's eligibility.
    "max-days-past-due-1e300": ("{receivable_max_days_past_due: 1e300}",
                                ("receivable_max_days_past_due",)),
    "max-days-past-due-negative": ("{receivable_max_days_past_due: -5}",
                                   ("receivable_max_days_past_due",)),
}


@pytest.mark.parametrize(("terms", "expected"), list(BAD_TERMS.values()), ids=list(BAD_TERMS))
def test_bad_product_terms_are_refused_naming_the_term(terms: str, expected: tuple[str, ...]
                                                       ) -> None:
    message = refused(facility(f", terms: {terms}"))
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_product_terms_error_names_its_facility() -> None:
    # The module promises that every error names its entry: with many facilities, a bare
    # "warning_ltv must be below liquidation_ltv" does not say which one to fix.
    message = refused("facilities:\n  - {id: fac-good, borrower: b1, line: 100}\n"
                      "  - {id: fac-bad, borrower: b1, line: 100,"
                      " terms: {warning_ltv: 0.9, liquidation_ltv: 0.8}}\n")
    assert "warning_ltv" in message
    assert "fac-bad" in message or "facilities.1" in message, message


def test_a_commodity_range_must_be_finite() -> None:
    # An infinite bound is stored, then copied into alert evidence, which PostgreSQL's jsonb
    # cannot hold (JSON has no Infinity): refuse it at the edge like every other number.
    message = refused("commodities:\n  - {name: wheat, temp_c: [-.inf, 5]}\n")
    assert "commodities.0.temp_c" in message


def test_unknown_format_is_yaml_and_ids_are_case_sensitive() -> None:
    p = parse_portfolio("facilities:\n  - {id: F1, borrower: b1, line: 1}\n"
                        "  - {id: f1, borrower: b1, line: 1}\n", "yml")
    assert [f.id for f in p.facilities] == ["F1", "f1"]


# --- CSV ---------------------------------------------------------------------------------------

BAD_CSV: dict[str, tuple[str, tuple[str, ...]]] = {
    "missing-columns": ("id,facility\nl1,f1\n",
                        ("line 1", "missing columns", "commodity", "registration_no")),
    "empty-csv": ("", ("line 1", "missing columns")),
    "row-with-extra-fields": (CSV_HEADER + "l1,f1,wheat,100,25,REG-1,a,7-19\n"
                              "l2,f1,wheat,100,25,REG-2,b,7-19,surplus\n",
                              ("line 3", "more fields")),
    "short-row": (CSV_HEADER + "l1,f1,wheat\n", ("lots.0.declared_quantity",)),
    "bad-number": (CSV_HEADER + "l1,f1,wheat,lots,25,REG-1,a,7-19\n",
                   ("lots.0.declared_quantity",)),
    "nan-number": (CSV_HEADER + "l1,f1,wheat,nan,25,REG-1,a,7-19\n",
                   ("lots.0.declared_quantity", "finite")),
    "bad-business-hours": (CSV_HEADER + "l1,f1,wheat,100,25,REG-1,a,7to19\n",
                           ("lots.0.business_hours",)),
    "sensor-listed-twice": (CSV_HEADER + "l1,f1,wheat,100,25,REG-1,a;a,7-19\n",
                            ("lots.0.sensors", "twice")),
    "duplicate-lot-ids": (CSV_HEADER + "l1,f1,wheat,1,25,REG-1,a,7-19\nl1,f1,wheat,1,25,REG-2,b,"
                          "7-19\n", ("listed twice", "l1")),
    "sql-id": (CSV_HEADER + "\"x'; DROP TABLE lots;--\",f1,wheat,1,25,REG-1,a,7-19\n",
               ("lots.0.id",)),
    "unknown-column": (("id,facility,commodity,declared_quantity,unit_weight_kg,registration_no,"
                       "colour\nl1,f1,wheat,1,25,REG-1,red\n"), ("lots.0.colour",)),
    "200k-field": (CSV_HEADER + "l1,f1,wheat,100,25," + "R" * 200_000 + ",a,7-19\n",
                   ("line 2", "field larger than field limit")),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD_CSV.values()), ids=list(BAD_CSV))
def test_bad_lots_csv_is_refused_naming_the_line_or_entry(text: str,
                                                          expected: tuple[str, ...]) -> None:
    message = refused(text, "csv")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


# --- files --------------------------------------------------------------------------------------

def test_a_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("borrowers:\n  - {id: b1, name: Müller}\n".encode("latin-1"))
    with pytest.raises(PortfolioError, match="not UTF-8") as info:
        read_portfolio(path)
    assert str(path) in str(info.value)


def test_a_non_utf8_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lots.csv"
    path.write_bytes(CSV_HEADER.encode() + b"l1,f1,wheat,1,25,REG-\xff,a,7-19\n")
    with pytest.raises(PortfolioError, match="not UTF-8"):
        read_portfolio(path)


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PortfolioError, match="no such file"):
        read_portfolio(tmp_path / "absent.yaml")
    with pytest.raises(PortfolioError, match="no such file"):
        read_portfolio(tmp_path)


def test_a_file_error_names_the_file_and_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(facility(line="-1"), encoding="utf-8")
    with pytest.raises(PortfolioError) as info:
        read_portfolio(path)
    assert str(path) in str(info.value) and "facilities.0.line" in str(info.value)


def test_an_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(21 * 1024 * 1024)  # sparse: 21 MiB of NULs
    with pytest.raises(PortfolioError, match="larger than"):
        read_portfolio(path)


# --- hostile YAML: no code, no explosion, no hang ------------------------------------------------

def billion_laughs(levels: int = 9) -> tuple[str, str]:
    doc = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[:levels - 1]:
        doc += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return doc, prev


@pytest.mark.parametrize("where", ["top-level", "lots", "terms", "sensors"])
def test_an_alias_bomb_is_refused_quickly(where: str) -> None:
    doc, last = billion_laughs()  # 9**9 "lol"s if anything expanded it
    tail = {"top-level": "",
            "lots": f"lots: *{last}\n",
            "terms": f"facilities:\n  - {{id: f1, borrower: b1, line: 5, terms: *{last}}}\n",
            "sensors": "lots:\n  - " + LOT % f", sensors: *{last}" + "\n"}[where]
    started = time.perf_counter()
    with pytest.raises(PortfolioError):
        parse_portfolio(doc + tail, "yaml")
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("depth", [200, 5_000], ids=["200-deep", "5000-deep"])
@pytest.mark.parametrize("shape", ["list", "mapping"])
def test_deeply_nested_yaml_is_a_portfolio_error(depth: int, shape: str) -> None:
    if shape == "list":
        text = "lots: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "lots: " + "{a: " * depth + "1" + "}" * depth + "\n"
    started = time.perf_counter()
    with pytest.raises(PortfolioError):
        parse_portfolio(text, "yaml")
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!custom {{a: 1}}",
], ids=["apply", "name", "custom"])
def test_yaml_tags_never_run_code(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(PortfolioError):
        parse_portfolio(f"borrowers:\n  - {{id: b1, name: {tag.format(marker=marker)}}}\n", "yaml")
    assert not marker.exists()


# --- the demo portfolio -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [12, 200])
def test_the_demo_portfolio_validates_and_pledges_each_sensor_once(n: int) -> None:
    fleet = make_fleet(n)
    portfolio = demo_portfolio(fleet, NOW)
    assert portfolio.lots and portfolio.facilities and portfolio.prices
    sensors = Counter(s for lot in portfolio.lots for s in lot.sensors)
    assert all(count == 1 for count in sensors.values()), sensors.most_common(3)
    for lot in portfolio.lots:
        assert len(set(lot.sensors)) == len(lot.sensors)
    registrations = Counter(lot.registration_no for lot in portfolio.lots)
    assert max(registrations.values()) == 1
    assert set(sensors) <= {d.device_id for d in fleet}, "a lot names a device not in the fleet"
    # Every reference resolves inside the portfolio.
    facilities = {f.id for f in portfolio.facilities}
    borrowers = {b.id for b in portfolio.borrowers}
    commodities = {c.name for c in portfolio.commodities}
    assert {lot.facility for lot in portfolio.lots} <= facilities
    assert {f.borrower for f in portfolio.facilities} <= borrowers
    assert {b.core for b in portfolio.borrowers if b.core} <= borrowers
    assert {lot.commodity for lot in portfolio.lots} <= commodities
    assert {q.commodity for q in portfolio.prices} <= commodities
    assert {r.facility for r in portfolio.receivables} <= facilities
    assert pledge_conflicts([lot.domain() for lot in portfolio.lots], []) == []
    for f in portfolio.facilities:
        terms = f.domain().terms
        assert terms.warning_ltv < terms.liquidation_ltv


def test_the_demo_portfolio_survives_a_yaml_round_trip() -> None:
    portfolio = demo_portfolio(make_fleet(12), NOW)
    text = yaml.safe_dump(portfolio.model_dump(mode="json"), sort_keys=False)
    again = parse_portfolio(text, "yaml")
    assert again == portfolio
