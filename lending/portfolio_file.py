"""Portfolio files: borrowers, facilities, lots and their sensors (and optionally commodities,
receivables and prices) in YAML, or lots alone in CSV. Validated with pydantic; every error names
the entry and field it is about."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TextIO

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lending.domain.model import (
    Borrower,
    BorrowerRole,
    Commodity,
    DomainError,
    Facility,
    Lot,
    PricePoint,
    Receivable,
)
from lending.domain.pledges import registration_key
from lending.price_file import (
    COMMODITY_PATTERN,
    CURRENCY_PATTERN,
    PRICE_ABOVE,
    PRICE_MAX,
    check_era,
)
from lending.store import terms_from_json

SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MAX_FILE_BYTES = 20 * 1024 * 1024  # read_portfolio's default (uploads and tests)
MAX_CLI_CSV_BYTES = 512 * 1024 * 1024  # a lots CSV given to the CLI: streamed, row by row
MAX_CLI_YAML_BYTES = 64 * 1024 * 1024  # a YAML file given to the CLI: parsed whole (libyaml)
PROGRESS_EVERY = 1_000  # lots validated between two progress reports

# progress(done, total): lots validated so far, of how many.
Progress = Callable[[int, int], None]
# The C parser when PyYAML has libyaml (5x faster on a large book), with the same safe constructor.
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


Finite = Annotated[float, Field(allow_inf_nan=False)]


class PortfolioError(ValueError):
    """A portfolio file that cannot be loaded; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommodityIn(_Strict):
    name: str = Field(pattern=SLUG)
    unit: str = Field("t", min_length=1, max_length=20)
    unit_kg: float = Field(1000.0, gt=0, le=1e9, allow_inf_nan=False)
    liquidation_days: float = Field(10.0, ge=0, le=3650, allow_inf_nan=False)
    temp_c: tuple[Finite, Finite] | None = None
    humidity_pct: tuple[Finite, Finite] | None = None

    def domain(self) -> Commodity:
        return Commodity(self.name, self.unit, self.liquidation_days, self.temp_c,
                         self.humidity_pct, self.unit_kg)


class BorrowerIn(_Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    tenant: str = Field("demo", pattern=SLUG)
    role: BorrowerRole = BorrowerRole.INDEPENDENT
    core: str | None = Field(None, pattern=SLUG)

    def domain(self) -> Borrower:
        return Borrower(self.id, self.name, self.role, self.core)


class FacilityIn(_Strict):
    id: str = Field(pattern=SLUG)
    borrower: str = Field(pattern=SLUG)
    line: float = Field(ge=0, le=1e15, allow_inf_nan=False)
    outstanding: float = Field(0.0, ge=0, le=1e15, allow_inf_nan=False)
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    reserves: float = Field(0.0, ge=0, le=1e15, allow_inf_nan=False)
    value_floor: float = Field(0.0, ge=0, le=1e15, allow_inf_nan=False)
    terms: dict[str, float] = Field(default_factory=dict)

    def domain(self) -> Facility:
        return Facility(self.id, self.borrower, self.line, self.outstanding, self.currency,
                        self.reserves, self.value_floor, terms_from_json(self.terms))


class LotIn(_Strict):
    id: str = Field(pattern=SLUG)
    facility: str = Field(pattern=SLUG)
    commodity: str = Field(pattern=SLUG)
    declared_quantity: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    unit_weight_kg: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    registration_no: str = Field(min_length=1, max_length=100)
    sensors: tuple[str, ...] = ()
    site: str | None = None
    vehicle: str | None = None
    geofence: tuple[tuple[Finite, Finite], ...] | None = None
    business_hours: tuple[int, int] = (7, 19)

    @field_validator("sensors")
    @classmethod
    def _sensor_ids(cls, sensors: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in sensors if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", s)]
        if bad:
            raise ValueError(f"not a device id: {', '.join(map(repr, bad))}")
        if len(set(sensors)) != len(sensors):
            raise ValueError("a sensor is listed twice")
        return sensors

    @field_validator("registration_no")
    @classmethod
    def _registration(cls, number: str) -> str:
        if not registration_key(number):
            raise ValueError("a registration number needs a letter or a digit")
        return number

    @field_validator("geofence")
    @classmethod
    def _fence(cls, fence: tuple[tuple[float, float], ...] | None) -> Any:
        if fence is None:
            return None
        if len(fence) < 3:
            raise ValueError("a geofence needs at least 3 (lat, lon) points")
        for lat, lon in fence:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"({lat}, {lon}) is not a (lat, lon) position")
        return fence

    def domain(self) -> Lot:
        return Lot(self.id, self.facility, self.commodity, self.declared_quantity,
                   self.unit_weight_kg, self.registration_no, self.sensors, self.site,
                   self.vehicle, self.geofence, self.business_hours)


class ReceivableIn(_Strict):
    id: str = Field(pattern=SLUG)
    facility: str = Field(pattern=SLUG)
    debtor: str = Field(min_length=1)
    amount: float = Field(ge=0, le=1e15, allow_inf_nan=False)
    due: AwareDatetime  # with a time zone, e.g. 2026-12-31T00:00:00Z
    related_party: bool = False
    disputed: bool = False
    paid: bool = False

    def domain(self) -> Receivable:
        return Receivable(self.id, self.facility, self.debtor, self.amount, self.due,
                          self.related_party, self.disputed, self.paid)


class PriceIn(_Strict):
    """A price in a portfolio file: the rules of :mod:`lending.price_file`, as in the price CSV."""

    commodity: str = Field(pattern=COMMODITY_PATTERN)
    time: Annotated[AwareDatetime, AfterValidator(check_era)]
    price: float = Field(gt=PRICE_ABOVE, le=PRICE_MAX, allow_inf_nan=False)
    currency: str = Field("CNY", pattern=CURRENCY_PATTERN)

    def domain(self) -> PricePoint:
        return PricePoint(self.commodity, self.time, self.price, self.currency)


class PortfolioIn(_Strict):
    commodities: list[CommodityIn] = []
    borrowers: list[BorrowerIn] = []
    facilities: list[FacilityIn] = []
    lots: list[LotIn] = []
    receivables: list[ReceivableIn] = []
    prices: list[PriceIn] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> PortfolioIn:
        for name in ("commodities", "borrowers", "facilities", "lots", "receivables"):
            items = getattr(self, name)
            counts = Counter(getattr(i, "name", None) or i.id for i in items)  # O(n)
            dupes = sorted(k for k, n in counts.items() if n > 1)
            if dupes:
                raise ValueError(f"{name}: listed twice: {', '.join(dupes)}")
        return self


def _error_lines(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    return [f"  {'.'.join(str(p) for p in (*prefix, *e['loc'])) or '(top level)'}: {e['msg']}"
            for e in error.errors()]


def _format_errors(lines: list[str], total: int) -> str:
    more = total - 20
    return "\n".join(lines[:20] + ([f"  ... and {more} more"] if more > 0 else []))


def _lots_from_csv(source: TextIO | Iterable[str]) -> dict[str, Any]:
    """Lots from CSV text read row by row (a file is streamed, never read whole)."""
    reader = csv.DictReader(source)
    required = {"id", "facility", "commodity", "declared_quantity", "unit_weight_kg",
                "registration_no"}
    missing = required - set(reader.fieldnames or ())
    if missing:
        raise PortfolioError(f"line 1: lots CSV is missing columns: {', '.join(sorted(missing))}")
    lots = []
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise PortfolioError(f"line {reader.line_num + 1}: {exc}") from None
        lot: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
        if None in row:
            raise PortfolioError(f"line {reader.line_num}: more fields than the header has")
        if "sensors" in lot:
            lot["sensors"] = [s.strip() for s in lot["sensors"].split(";") if s.strip()]
        if "business_hours" in lot:
            lot["business_hours"] = lot["business_hours"].split("-")
        lots.append(lot)
    return {"lots": lots}


def parse_portfolio(text: str, fmt: str, progress: Progress | None = None) -> PortfolioIn:
    """A validated portfolio from YAML or lots CSV text; :class:`PortfolioError` otherwise."""
    if fmt == "csv":
        return _from_csv(io.StringIO(text), progress)
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader (C or Python)
    except yaml.YAMLError as exc:
        raise PortfolioError("not valid YAML: " + " ".join(str(exc).split())) from None
    except RecursionError:
        raise PortfolioError("not a portfolio: the YAML is nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PortfolioError("a portfolio file is a mapping with keys borrowers, facilities, "
                             "lots (and optionally commodities, receivables, prices)")
    return validate_portfolio(data, progress)


def _from_csv(source: TextIO, progress: Progress | None) -> PortfolioIn:
    try:
        data = _lots_from_csv(source)
    except csv.Error as exc:
        raise PortfolioError(f"not a valid lots CSV: {exc}") from None
    return validate_portfolio(data, progress)


def _validated_lots(raw: list[Any], progress: Progress | None,
                    errors: list[str]) -> tuple[list[LotIn], int]:
    """Each lot validated on its own (one pass, progress as it goes); errors appended to
    ``errors`` (the first 20 kept) and their count returned."""
    lots: list[LotIn] = []
    failed = 0
    total = len(raw)
    for i, item in enumerate(raw):
        try:
            lots.append(LotIn.model_validate(item))
        except ValidationError as exc:
            failed += exc.error_count()
            if len(errors) < 20:
                errors += _error_lines(exc, ("lots", i))
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(i + 1, total)
    if progress is not None:
        progress(total, total)
    return lots, failed


def validate_portfolio(data: dict[str, Any], progress: Progress | None = None) -> PortfolioIn:
    """The portfolio in ``data`` (parsed YAML or CSV rows), validated in time linear in its size:
    lots one by one (``progress`` told every :data:`PROGRESS_EVERY`), ids counted once, then the
    domain's own checks; :class:`PortfolioError` naming each entry and field otherwise."""
    errors: list[str] = []
    failed = 0
    raw_lots = data.get("lots")
    lots: list[LotIn] | None = None
    if isinstance(raw_lots, list):
        lots, failed = _validated_lots(raw_lots, progress, errors)
    try:
        rest = PortfolioIn.model_validate({**data, "lots": []} if lots is not None else data)
    except ValidationError as exc:
        failed += exc.error_count()
        errors[:0] = _error_lines(exc)
    if failed:
        raise PortfolioError("invalid portfolio:\n" + _format_errors(errors, failed))
    try:  # the lots (already validated instances) with the rest: the duplicate-id check runs
        portfolio = rest if lots is None else PortfolioIn.model_validate(
            {**{name: getattr(rest, name) for name in PortfolioIn.model_fields}, "lots": lots})
    except ValidationError as exc:
        raise PortfolioError("invalid portfolio:\n" + _format_errors(
            _error_lines(exc), exc.error_count())) from None
    # The domain's own checks (ratios, ranges, geofences), each error named by its entry.
    for group in ("commodities", "facilities", "lots"):
        for i, item in enumerate(getattr(portfolio, group)):
            name = getattr(item, "name", None) or item.id
            try:
                item.domain()
            except (DomainError, TypeError, ValueError, OverflowError) as exc:
                raise PortfolioError(f"invalid portfolio:\n  {group}.{i} ({name}): {exc}") from None
    return portfolio


def read_portfolio(path: Path, max_bytes: int = MAX_FILE_BYTES,
                   progress: Progress | None = None) -> PortfolioIn:
    """A portfolio file: a lots CSV is streamed row by row, YAML parsed whole; a file larger than
    ``max_bytes`` is refused before it is read."""
    if not path.is_file():
        raise PortfolioError(f"{path}: no such file")
    if path.stat().st_size > max_bytes:
        raise PortfolioError(f"{path}: larger than {max_bytes // 2**20} MiB")
    csv_file = path.suffix.lower() == ".csv"
    try:
        if csv_file:
            with path.open(encoding="utf-8", newline="") as handle:
                return _from_csv(handle, progress)
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PortfolioError(f"{path}: not UTF-8 text") from None
    except PortfolioError as exc:
        raise PortfolioError(f"{path}: {exc}") from None
    try:
        return parse_portfolio(text, "yaml", progress)
    except PortfolioError as exc:
        raise PortfolioError(f"{path}: {exc}") from None
