"""What the API answers, as typed models: one class per response schema of the OpenAPI document
(its name in ``SCHEMA``), with the same fields. Unknown fields a newer server adds are ignored, so
an older SDK keeps working; tests/unit/test_sdk_schema.py fails when these fall behind the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

LtvStatus = Literal["ok", "warning", "liquidation", "unknown"]
DrawdownState = Literal["pending", "approved", "rejected", "repaid"]
VoucherState = Literal["active", "spent", "financed", "settled"]
TradeState = Literal["none", "pending", "verified", "contradicted"]
ReleaseState = Literal["requested", "approved", "executed", "rejected"]
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["open", "acknowledged", "resolved"]
AlertFilter = Literal["open", "acknowledged", "resolved", "active"]  # active: open or acknowledged
Grade = Literal["A", "B", "C", "D", "E", "F", "G"]


class Model(BaseModel):
    """An answer of the API: immutable, tolerant of fields added after this SDK was written."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    SCHEMA: ClassVar[str]  # the name of the response schema in the API's OpenAPI document


T = TypeVar("T", bound=Model)


class Page(BaseModel, Generic[T]):
    """One page of a list; ask again with ``offset=next_offset`` while it is not None (or use
    :func:`pledgewatch_sdk.paginate`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[T]
    limit: int
    offset: int
    next_offset: int | None


# --- who am I, facilities and limits ---

class Me(Model):
    SCHEMA = "Me"
    role: Literal["admin", "officer", "enterprise", "operator"]
    subject: str
    borrower_id: str | None
    operator_id: str | None = None  # a warehouse operator's key


class FacilityLimit(Model):
    """The current limit, available to draw, outstanding and LTV against the lines."""

    SCHEMA = "FacilityLimit"
    facility_id: str
    borrower_id: str
    currency: str
    line: float
    limit: float | None  # None before the first limit snapshot
    available: float | None
    outstanding: float
    collateral_value: float | None
    trusted_collateral_value: float | None
    ltv: float | None
    warning_ltv: float
    liquidation_ltv: float
    ltv_status: LtvStatus
    snapshot_id: int | None
    time: datetime | None


class Facility(FacilityLimit):
    """A facility in the list: its limit, and its borrower and open alerts."""

    SCHEMA = "FacilitySummary"
    borrower_name: str
    open_alerts: int
    critical_alerts: int


class LimitPoint(Model):
    SCHEMA = "LimitPoint"
    id: int
    time: datetime
    limit: float
    available: float
    outstanding: float
    collateral_value: float
    trusted_collateral_value: float | None
    ltv: float | None
    reasons: list[str]
    verified_quantity: float
    declared_quantity: float
    prices: dict[str, float] | None


class LimitExplained(Model):
    SCHEMA = "SnapshotExplained"
    id: int
    facility_id: str
    time: datetime
    reasons: list[str]
    explanation: str
    changes: list[str]
    inputs: dict[str, Any]


# --- alerts, borrowers ---

class Alert(Model):
    SCHEMA = "AlertPublic"
    id: int
    key: str
    type: str
    severity: Severity
    facility_id: str
    borrower_id: str
    lot_id: str | None
    status: AlertState
    message: str
    evidence: dict[str, Any]
    raised_at: datetime
    cure_deadline: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    comment: str | None


class Borrower(Model):
    SCHEMA = "BorrowerPublic"
    borrower_id: str
    name: str
    role: Literal["core", "supplier", "distributor", "independent"]
    core_id: str | None
    facilities: list[str]
    created_at: datetime


# --- credit rating ---

class RatingReason(Model):
    """An indicator that cost points against its best bin (largest first)."""

    SCHEMA = "RatingReason"
    feature: str
    points_lost: float
    bin: str


class Rating(Model):
    SCHEMA = "RatingPublic"
    borrower_id: str
    as_of: str  # the rating's day, ISO 8601 (YYYY-MM-DD)
    model: str
    version: int
    score: float
    pd: float
    grade: Grade
    reasons: list[RatingReason]
    rated_at: datetime


class GradeChange(Model):
    SCHEMA = "GradeChange"
    as_of: str  # the rating's day, ISO 8601 (YYYY-MM-DD)
    previous_grade: Grade | None
    grade: Grade
    model: str
    version: int
    reasons: list[RatingReason]
    facilities: list[dict[str, Any]]
    changed_by: str
    changed_at: datetime


class BorrowerRating(Model):
    """Your current rating (None until first rated), recent ratings and grade changes."""

    SCHEMA = "BorrowerRating"
    borrower_id: str
    current: Rating | None
    history: list[Rating]
    grade_changes: list[GradeChange]


# --- lots, inspections, releases ---

class PledgeStatus(Model):
    SCHEMA = "PledgeStatus"
    snapshot_id: int
    time: datetime
    declared: float
    verified: float
    pledged: float
    trust: float
    trust_factors: dict[str, float]
    price: float | None
    price_time: str | None
    haircut: float
    value: float
    contribution: float


class SensorHealth(Model):
    SCHEMA = "SensorHealth"
    device_id: str
    kind: str
    enabled: bool
    online: bool | None
    last_seen: datetime | None


class Location(Model):
    SCHEMA = "Location"
    lat: float
    lon: float
    time: datetime
    device_id: str


class Lot(Model):
    SCHEMA = "LotPublic"
    lot_id: str
    facility_id: str
    borrower_id: str
    commodity: str
    declared_quantity: float
    unit_weight_kg: float
    registration_no: str
    site: str | None
    vehicle: str | None
    geofence: list[list[float]] | None
    operator_id: str | None = None  # the warehouse operator storing the lot
    pledge: PledgeStatus | None
    sensors: list[SensorHealth]
    location: Location | None
    inside_geofence: bool | None


class Inspection(Model):
    SCHEMA = "InspectionPublic"
    id: int
    lot_id: str
    facility_id: str
    counted_quantity: float
    counted_at: datetime
    counted_by: str
    note: str
    sensor_quantity: float | None
    recorded_by: str
    created_at: datetime


class Release(Model):
    SCHEMA = "ReleasePublic"
    release_id: str
    lot_id: str
    facility_id: str
    borrower_id: str
    quantity: float
    status: ReleaseState
    requested_at: datetime
    approved_at: datetime | None
    executed_at: datetime | None


# --- devices and telemetry ---

class Device(Model):
    SCHEMA = "DevicePublic"
    device_id: str
    tenant: str
    kind: str
    enabled: bool
    bound_to: str | None
    has_credentials: bool
    lot_id: str | None
    facility_id: str | None
    online: bool | None
    last_seen: datetime | None
    created_at: datetime


class ReadingValue(Model):
    SCHEMA = "ReadingValue"
    value: float
    time: datetime


class DeviceLatest(Model):
    SCHEMA = "DeviceLatest"
    device_id: str
    kind: str
    lot_id: str | None
    online: bool | None
    last_seen: datetime | None
    readings: dict[str, ReadingValue]


class Bucket(Model):
    SCHEMA = "BucketPublic"
    bucket: datetime
    min: float
    max: float
    avg: float
    count: int


class DeviceSeries(Model):
    SCHEMA = "DeviceSeries"
    device_id: str
    metric: str
    start: datetime
    end: datetime
    bucket_s: int
    buckets: list[Bucket]


class LotSeries(Model):
    SCHEMA = "LotSeries"
    lot_id: str
    metric: str
    start: datetime
    end: datetime
    bucket_s: int
    devices: list[DeviceSeries]


# --- prices, sales, receivables ---

class Price(Model):
    SCHEMA = "PricePublic"
    commodity: str
    time: datetime
    price: float
    currency: str


class Sale(Model):
    SCHEMA = "SalePublic"
    id: int
    facility_id: str
    time: datetime
    amount: float


class Receivable(Model):
    SCHEMA = "ReceivablePublic"
    receivable_id: str
    facility_id: str
    debtor: str
    amount: float
    due: datetime
    related_party: bool
    disputed: bool
    paid: bool
    verified: bool  # checked by an officer: only then eligible for the borrowing base
    verified_at: datetime | None
    verified_by: str | None
    posted_by: str | None
    # the API may leave these out (the debtor as a borrower, its confirmation, the shipment and
    # what telemetry says of it)
    debtor_id: str | None = None
    programme_id: str | None = None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    shipment: dict[str, Any] | None = None
    trade_status: TradeState = "none"  # pending: delivery not yet proven; verified/contradicted
    trade_evidence: dict[str, Any] | None = None


# --- financing: drawdowns and repayments ---

class Drawdown(Model):
    SCHEMA = "DrawdownPublic"
    drawdown_id: str
    facility_id: str
    borrower_id: str
    amount: float
    currency: str
    tenor_days: int
    purpose: str
    source: Literal["request", "opening"]
    status: DrawdownState
    reasons: list[str]  # why it waits for an officer (empty when approved at once)
    repaid: float
    owed: float
    overdue: bool
    requested_by: str | None
    requested_at: datetime
    decided_by: str | None  # 'auto' when approved at once
    decided_at: datetime | None
    comment: str | None
    maturity: datetime | None


class RepaymentPart(Model):
    SCHEMA = "RepaymentPart"
    drawdown_id: str
    amount: float


class Repayment(Model):
    SCHEMA = "RepaymentPublic"
    id: int
    facility_id: str
    time: datetime
    amount: float
    allocation: list[RepaymentPart]  # the drawdowns it paid, first maturing first
    unapplied: float  # paid beyond what was owed
    outstanding: float  # the facility's outstanding after it
    posted_by: str | None


# --- supply chain: programmes, vouchers, payments ---

class Programme(Model):
    SCHEMA = "ProgrammePublic"
    programme_id: str
    core_id: str
    facility_id: str
    currency: str
    line: float
    advance_rate: float
    used: float  # confirmed payables not yet paid
    financed: float  # advanced by the bank on vouchers not yet settled
    created_by: str
    created_at: datetime


class ChainMember(Model):
    SCHEMA = "ChainMember"
    borrower_id: str
    name: str
    role: str


class Voucher(Model):
    """A transferable claim on the core enterprise, maturing on its payment date."""

    SCHEMA = "VoucherPublic"
    voucher_id: str
    programme_id: str
    core_id: str
    receivable_id: str
    parent_id: str | None
    root_id: str
    holder_id: str
    amount: float
    maturity: datetime
    status: VoucherState
    financed_amount: float | None
    financed_at: datetime | None
    financed_by: str | None
    settled_at: datetime | None
    created_by: str
    created_at: datetime
    trade_status: TradeState
    paid_at: datetime | None = None


class VoucherStep(Model):
    SCHEMA = "VoucherStep"
    voucher_id: str
    holder_id: str
    amount: float
    status: VoucherState
    created_at: datetime
    created_by: str


class Confirmation(Model):
    SCHEMA = "Confirmation"
    receivable_id: str
    debtor_id: str | None
    confirmed_at: datetime | None
    confirmed_by: str | None


class VoucherDetail(Voucher):
    """A voucher with its tier and its path back to the core enterprise's confirmation."""

    SCHEMA = "VoucherDetail"
    tier: int  # 1: the supplier the core enterprise confirmed to; 2: its supplier; ...
    path: list[VoucherStep]
    confirmation: Confirmation


class Chain(Model):
    SCHEMA = "ChainPublic"
    programme: Programme
    members: list[ChainMember]
    vouchers: list[Voucher]


class Payout(Model):
    SCHEMA = "Payout"
    voucher_id: str
    payee: str  # 'bank' or the holder's borrower id
    amount: float


class Payment(Model):
    SCHEMA = "PaymentPublic"
    root_id: str
    amount: float
    paid_at: datetime
    paid_by: str
    payouts: list[Payout]


# --- the verifiable ledger ---

class LedgerHead(Model):
    """A signed tree head: Ed25519 over the canonical JSON
    ``{"log":"pledgewatch","root_hash":<hex>,"timestamp":<ms>,"tree_size":<n>}``. Keep it."""

    SCHEMA = "SignedHeadPublic"
    tree_size: int
    root_hash: str  # hex
    timestamp: int  # ms since the epoch
    key_id: str
    algorithm: str
    public_key: str  # base64, raw 32 bytes
    signature: str  # base64


class LedgerEntry(Model):
    SCHEMA = "EntryPublic"
    leaf_index: int
    table: str
    op: str
    key: str
    parties: list[str]
    entry: str  # the canonical JSON the leaf hash covers: SHA-256(0x00 || UTF-8 bytes)
    appended_at: datetime


class LedgerEntryProof(LedgerEntry):
    """An entry with its RFC 9162 audit path to a signed head (None while not yet under one)."""

    SCHEMA = "EntryProof"
    leaf_hash: str
    tree_size: int | None
    audit_path: list[str] | None
    head: LedgerHead | None


class LedgerConsistency(Model):
    """RFC 9162 consistency proof: the log at ``second`` entries extends the one at ``first``."""

    SCHEMA = "ConsistencyProof"
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


# --- what the SDK sends beyond plain arguments ---

class Shipment(BaseModel):
    """The goods behind a receivable (``Client.post_receivable(shipment=...)``): telemetry proves
    or contradicts their delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    SCHEMA: ClassVar[str] = "Shipment"

    vehicle: str
    seller_lot_id: str  # the seller's pledged lot the goods leave
    quantity: float
    buyer_lot_id: str  # the buyer's lot (warehouse) they arrive in
    shipped_at: datetime
