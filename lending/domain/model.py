"""The lending domain's values: who borrows, against what, on which terms.

Everything here is an immutable value; nothing reads a clock or a database. Every ratio is a
product parameter (:class:`ProductTerms`), never a constant in the code that uses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class DomainError(ValueError):
    """Input the domain refuses, with a message a user can act on."""


class BorrowerRole(StrEnum):
    CORE = "core"
    SUPPLIER = "supplier"
    DISTRIBUTOR = "distributor"
    INDEPENDENT = "independent"


@dataclass(frozen=True, slots=True)
class Borrower:
    """An enterprise; suppliers and distributors name the core enterprise of their chain."""

    id: str
    name: str
    role: BorrowerRole = BorrowerRole.INDEPENDENT
    core_id: str | None = None


def _fraction(name: str, value: float, *, upper: float = 1.0) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= upper):
        raise DomainError(f"{name} must be between 0 and {upper:g}, got {value!r}")


# The grades of the credit rating's master scale (best first); a product may map each to terms.
GRADES = ("A", "B", "C", "D", "E", "F", "G")
GRADE_TERMS = ("advance_rate", "line_cap", "auto_approve_max")
MAX_AMOUNT = 1e15


def grade_terms(by_grade: object) -> dict[str, dict[str, float]]:
    """Validate a product's ``by_grade`` map — ``{"A": {"advance_rate": 0.7, "line_cap": 2e6,
    "auto_approve_max": 5e5}, …}`` — and return it as plain JSON values. A grade outside A–G, an
    unknown term, an advance rate outside (0, 1], an amount below 0 or above 1e15, or a value that
    is not a finite number is refused, naming the grade and the term."""
    if not isinstance(by_grade, Mapping):
        raise DomainError(f"by_grade must map grades to terms, got {type(by_grade).__name__}")
    out: dict[str, dict[str, float]] = {}
    for grade, terms in by_grade.items():
        if grade not in GRADES:
            raise DomainError(f"by_grade: unknown grade {grade!r} (grades: {', '.join(GRADES)})")
        if not isinstance(terms, Mapping) or not terms:
            raise DomainError(f"by_grade.{grade}: give a non-empty map of {', '.join(GRADE_TERMS)}")
        values: dict[str, float] = {}
        for name, value in terms.items():
            if name not in GRADE_TERMS:
                raise DomainError(f"by_grade.{grade}: unknown term {name!r} "
                                  f"(known: {', '.join(GRADE_TERMS)})")
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise DomainError(f"by_grade.{grade}.{name} must be a finite number, got {value!r}")
            if name == "advance_rate" and not 0 < value <= 1:
                raise DomainError(f"by_grade.{grade}.advance_rate must be in (0, 1], got {value!r}")
            if name != "advance_rate" and not 0 <= value < MAX_AMOUNT:
                raise DomainError(f"by_grade.{grade}.{name} must be an amount in [0, 1e15), "
                                  f"got {value!r}")
            values[name] = float(value)
        out[str(grade)] = values
    return out


@dataclass(frozen=True, slots=True)
class ProductTerms:
    """The ratios of a credit product; every one is a parameter of the facility's product."""

    advance_rate: float = 0.6  # share of haircut collateral value lent against
    ar_advance_rate: float = 0.8  # share of eligible receivables lent against
    warning_ltv: float = 0.75  # outstanding / collateral at which a top-up is asked for
    liquidation_ltv: float = 0.9  # ... at which the collateral may be liquidated
    ltv_hysteresis: float = 0.02  # an LTV alert clears only this far below its line
    cure_period: timedelta = timedelta(days=5)  # time to cure a warning before it escalates
    base_haircut: float = 0.05  # haircut with no price volatility
    haircut_z: float = 2.33  # one-sided 99 % quantile of the liquidation-period price move
    max_haircut: float = 0.6
    receivable_max_days_past_due: int = 90
    # Terms by credit grade (see :func:`grade_terms`); None: the product does not follow ratings.
    by_grade: Mapping[str, Mapping[str, float]] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.by_grade is not None:
            object.__setattr__(self, "by_grade", grade_terms(self.by_grade))
        for name in ("advance_rate", "ar_advance_rate", "base_haircut", "max_haircut",
                     "ltv_hysteresis"):
            _fraction(name, getattr(self, name))
        _fraction("warning_ltv", self.warning_ltv, upper=10.0)
        _fraction("liquidation_ltv", self.liquidation_ltv, upper=10.0)
        if self.warning_ltv <= 0:
            raise DomainError("warning_ltv must be above 0")
        if not self.warning_ltv < self.liquidation_ltv:
            raise DomainError("warning_ltv must be below liquidation_ltv "
                              f"({self.warning_ltv} >= {self.liquidation_ltv})")
        if self.base_haircut > self.max_haircut:
            raise DomainError("base_haircut must not exceed max_haircut")
        if not (math.isfinite(self.haircut_z) and self.haircut_z >= 0):
            raise DomainError(f"haircut_z must be >= 0, got {self.haircut_z!r}")
        if not timedelta(0) <= self.cure_period <= timedelta(days=3650):
            raise DomainError("cure_period must be between 0 and 10 years")
        if not 0 <= self.receivable_max_days_past_due <= 3650:
            raise DomainError("receivable_max_days_past_due must be between 0 and 3650, got "
                              f"{self.receivable_max_days_past_due!r}")


@dataclass(frozen=True, slots=True)
class Facility:
    """A credit line of one borrower, in one currency."""

    id: str
    borrower_id: str
    line: float
    outstanding: float = 0.0
    currency: str = "CNY"
    reserves: float = 0.0  # amounts held back from the borrowing base (fees, priority claims)
    value_floor: float = 0.0  # collateral value below which the bank wants to hear of it
    terms: ProductTerms = field(default_factory=ProductTerms)

    def __post_init__(self) -> None:
        for name in ("line", "outstanding", "reserves", "value_floor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise DomainError(f"facility {self.id}: {name} must be a finite amount >= 0, "
                                  f"got {value!r}")

    def repaid(self, amount: float) -> Facility:
        """The facility after a repayment of ``amount`` (never below zero outstanding)."""
        if not (math.isfinite(amount) and amount > 0):
            raise DomainError(f"a repayment must be a positive amount, got {amount!r}")
        return replace(self, outstanding=max(0.0, self.outstanding - amount))


@dataclass(frozen=True, slots=True)
class Commodity:
    """What a lot holds and the condition it must be kept in."""

    name: str
    unit: str = "t"  # prices are quoted per this unit
    liquidation_days: float = 10.0
    temp_c: tuple[float, float] | None = None  # allowed (min, max), None = no requirement
    humidity_pct: tuple[float, float] | None = None
    unit_kg: float = 1000.0  # kilograms in one quoted unit

    def __post_init__(self) -> None:
        if not (math.isfinite(self.unit_kg) and self.unit_kg > 0):
            raise DomainError(f"commodity {self.name}: unit_kg must be > 0")
        if not (math.isfinite(self.liquidation_days) and self.liquidation_days >= 0):
            raise DomainError(f"commodity {self.name}: liquidation_days must be >= 0")
        for name in ("temp_c", "humidity_pct"):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            if not all(math.isfinite(b) for b in bounds) or not bounds[0] <= bounds[1]:
                raise DomainError(f"commodity {self.name}: {name} must be a finite (min, max) range")

    def unit_price(self, quote: float, unit_weight_kg: float) -> float:
        """The price of one lot unit (weighing ``unit_weight_kg``) at ``quote`` per quoted unit."""
        return quote * unit_weight_kg / self.unit_kg


@dataclass(frozen=True, slots=True)
class Lot:
    """A pledged lot: goods of one commodity in one place (a warehouse bay or a vehicle)."""

    id: str
    facility_id: str
    commodity: str
    declared_quantity: float  # in units
    unit_weight_kg: float
    registration_no: str  # the pledge registration number; one lot, one facility
    sensors: tuple[str, ...] = ()
    site: str | None = None
    vehicle: str | None = None
    geofence: tuple[tuple[float, float], ...] | None = None  # (lat, lon) vertices
    business_hours: tuple[int, int] = (7, 19)  # local hours in which doors may open

    def __post_init__(self) -> None:
        if not (math.isfinite(self.declared_quantity) and self.declared_quantity >= 0):
            raise DomainError(f"lot {self.id}: declared quantity must be >= 0")
        if not (math.isfinite(self.unit_weight_kg) and self.unit_weight_kg > 0):
            raise DomainError(f"lot {self.id}: unit weight must be > 0 kg")
        if not self.registration_no:
            raise DomainError(f"lot {self.id}: a pledge registration number is required")
        if self.geofence is not None and len(self.geofence) < 3:
            raise DomainError(f"lot {self.id}: a geofence needs at least 3 points")
        start, end = self.business_hours
        if not (0 <= start <= 24 and 0 <= end <= 24):
            raise DomainError(f"lot {self.id}: business hours must be within 0..24")

    def open_at(self, local_hour: float) -> bool:
        """Whether ``local_hour`` (0 ≤ h < 24, site time) is within business hours; a window
        like (22, 6) runs overnight, (0, 24) is always open and (h, h) never."""
        start, end = self.business_hours
        if start <= end:
            return start <= local_hour < end
        return local_hour >= start or local_hour < end


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One price of one commodity at one instant (``time`` is normalised to aware UTC)."""

    commodity: str
    time: datetime
    price: float
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise DomainError(f"price time must be timezone-aware, got {self.time.isoformat()}")
        if not self.commodity.strip():
            raise DomainError("price commodity must not be empty")
        if not self.currency.strip():
            raise DomainError("price currency must not be empty")
        if not (math.isfinite(self.price) and self.price > 0):
            raise DomainError(f"price of {self.commodity} must be finite and positive, "
                              f"got {self.price!r}")
        object.__setattr__(self, "time", self.time.astimezone(UTC))


class ReleaseStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    EXECUTED = "executed"
    REJECTED = "rejected"


_RELEASE_NEXT: dict[ReleaseStatus, frozenset[ReleaseStatus]] = {
    ReleaseStatus.REQUESTED: frozenset({ReleaseStatus.APPROVED, ReleaseStatus.REJECTED}),
    ReleaseStatus.APPROVED: frozenset({ReleaseStatus.EXECUTED, ReleaseStatus.REJECTED}),
    ReleaseStatus.EXECUTED: frozenset(),
    ReleaseStatus.REJECTED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ReleaseOrder:
    """Goods may leave a lot only against a release: requested → approved → executed."""

    id: str
    lot_id: str
    quantity: float  # units
    status: ReleaseStatus = ReleaseStatus.REQUESTED
    requested_at: datetime | None = None
    approved_at: datetime | None = None
    executed_at: datetime | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.quantity) and self.quantity > 0):
            raise DomainError(f"release {self.id}: quantity must be > 0")

    def advance(self, to: ReleaseStatus, at: datetime) -> ReleaseOrder:
        """The order moved to ``to`` at ``at``; refuses a move the lifecycle does not allow."""
        if to not in _RELEASE_NEXT[self.status]:
            raise DomainError(f"release {self.id} is {self.status}; it cannot become {to}")
        if to is ReleaseStatus.APPROVED:
            return replace(self, status=to, approved_at=at)
        if to is ReleaseStatus.EXECUTED:
            return replace(self, status=to, executed_at=at)
        return replace(self, status=to)


@dataclass(frozen=True, slots=True)
class Receivable:
    id: str
    facility_id: str
    debtor: str
    amount: float
    due: datetime
    related_party: bool = False
    disputed: bool = False
    paid: bool = False
    verified: bool = True  # False: posted by the borrower, not yet checked by an officer

    def eligible(self, now: datetime, max_days_past_due: int) -> bool:
        """Ineligible: paid, disputed, related-party, unverified, or more than the limit past due."""
        if (self.paid or self.disputed or self.related_party or not self.verified
                or self.amount <= 0):
            return False
        return now - self.due <= timedelta(days=max_days_past_due)


@dataclass(frozen=True, slots=True)
class SaleEvent:
    facility_id: str
    time: datetime
    amount: float
