"""The API's public shapes (``*Public`` out, ``*Create`` in). Ids are slugs; numbers in request
bodies are strict (a JSON number: not `true`, not `"100"`), finite and bounded; booleans are
JSON booleans."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic import Strict as StrictType

from lending.price_file import (
    COMMODITY_PATTERN,
    CURRENCY_PATTERN,
    PRICE_ABOVE,
    PRICE_MAX,
    check_era,
)
from telemetry.contract.catalogue import CATALOGUE

Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
OperatorId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
Comment = Annotated[str, StringConstraints(max_length=2000)]
LtvStatus = Literal["ok", "warning", "liquidation", "unknown"]
DrawdownState = Literal["pending", "approved", "rejected", "repaid"]
VoucherState = Literal["active", "spent", "financed", "settled"]
TradeState = Literal["none", "pending", "verified", "contradicted"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Me(BaseModel):
    role: Literal["admin", "officer", "enterprise", "operator"]
    subject: str
    borrower_id: str | None = Field(description="an enterprise's borrower")
    operator_id: str | None = Field(default=None, description="a warehouse operator's id")


class UserCreate(Strict):
    username: Username
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)]
    role: Literal["admin", "officer"]


class UserPublic(BaseModel):
    username: str
    role: Literal["admin", "officer"]
    disabled: bool
    created_at: datetime


class UserUpdate(Strict):
    disabled: Flag | None = None
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)] | None = None


class ApiKeyCreate(Strict):
    """A key for one borrower (an enterprise) or one warehouse operator: exactly one of the two."""

    borrower_id: Slug | None = None
    operator_id: OperatorId | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    @model_validator(mode="after")
    def _one_party(self) -> ApiKeyCreate:
        if (self.borrower_id is None) == (self.operator_id is None):
            raise ValueError("give exactly one of borrower_id and operator_id")
        return self


class ApiKeyPublic(BaseModel):
    key_id: str
    borrower_id: str | None
    operator_id: str | None = None
    name: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyPublic):
    api_key: str = Field(description="the secret; shown only in this answer")


class FacilityLimit(BaseModel):
    facility_id: str
    borrower_id: str
    currency: str
    line: float
    limit: float | None = Field(description="current dynamic limit; null before the first snapshot")
    available: float | None
    outstanding: float
    collateral_value: float | None = Field(description="Σ lot value (after haircut, before trust)")
    trusted_collateral_value: float | None = Field(
        description="Σ lot value × trust: what LTV and the value floor measure; null before the "
                    "first snapshot")
    ltv: float | None = Field(description="outstanding ÷ trust-weighted collateral value; null when "
                                          "undefined")
    warning_ltv: float
    liquidation_ltv: float
    ltv_status: LtvStatus
    snapshot_id: int | None
    time: datetime | None


class FacilitySummary(FacilityLimit):
    borrower_name: str
    open_alerts: int
    critical_alerts: int


class LimitPoint(BaseModel):
    id: int
    time: datetime
    limit: float
    available: float
    outstanding: float
    collateral_value: float
    trusted_collateral_value: float | None = Field(
        description="Σ lot value × trust (null in snapshots stored before it was kept)")
    ltv: float | None = Field(description="outstanding ÷ trust-weighted collateral value")
    reasons: list[str]
    verified_quantity: float
    declared_quantity: float
    prices: dict[str, float] | None


class SnapshotExplained(BaseModel):
    id: int
    facility_id: str
    time: datetime
    reasons: list[str]
    explanation: str
    changes: list[str] = Field(description="what moved since the snapshot before it")
    inputs: dict[str, Any]


class AlertPublic(BaseModel):
    id: int
    key: str
    type: str
    severity: Literal["info", "warning", "critical"]
    facility_id: str
    borrower_id: str
    lot_id: str | None
    status: Literal["open", "acknowledged", "resolved"]
    message: str
    evidence: dict[str, Any]
    raised_at: datetime
    cure_deadline: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    comment: str | None


class AlertResolve(Strict):
    comment: Comment | None = Field(None, description=(
        "why it is resolved; required (not blank) for a critical alert and for the types only an "
        "officer closes (unauthorised_outbound, geofence_exit, sensor_tamper, sensor_spoofing, "
        "duplicate_pledge): 422 without one"))


# --- devices, telemetry, borrowers, lots, releases, prices, sales and receivables -------------

def _in_era(value: datetime) -> datetime:
    """An aware instant in the era of :func:`lending.price_file.check_era` (1970 to 2200), in UTC
    (far-off dates overflow date arithmetic)."""
    return check_era(value)


Instant = Annotated[AwareDatetime, AfterValidator(_in_era)]
# Numbers in bodies: a JSON number only (StrictType: no booleans, no numeric strings), finite, bounded.
MIN_QUANTITY = 1e-6  # of a unit: anything smaller is noise, not goods leaving
Quantity = Annotated[float, StrictType(), Field(ge=MIN_QUANTITY, le=1e12, allow_inf_nan=False)]
Count = Annotated[float, StrictType(), Field(ge=0, le=1e12, allow_inf_nan=False)]
Amount = Annotated[float, StrictType(), Field(ge=0, le=1e14, allow_inf_nan=False)]
Flag = Annotated[bool, StrictType()]
# A price follows the rules of lending.price_file, the same as a line of a price CSV.
PriceCommodity = Annotated[str, StringConstraints(pattern=COMMODITY_PATTERN)]
Price = Annotated[float, StrictType(), Field(gt=PRICE_ABOVE, le=PRICE_MAX, allow_inf_nan=False)]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
if TYPE_CHECKING:
    Metric = str
else:  # one of the catalogue's metric names (an enum in the OpenAPI schema)
    Metric = Literal[tuple(sorted(CATALOGUE))]
ReleaseState = Literal["requested", "approved", "executed", "rejected"]


class DeviceCreate(Strict):
    device_id: DeviceId
    tenant: DeviceId
    kind: DeviceId = "warehouse"
    bound_to: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="lot, site or vehicle it watches (a note; lots bind sensors)")


class DevicePublic(BaseModel):
    device_id: str
    tenant: str
    kind: str
    enabled: bool
    bound_to: str | None
    has_credentials: bool
    lot_id: str | None = Field(description="the pledged lot this sensor verifies, if any")
    facility_id: str | None
    online: bool | None
    last_seen: datetime | None
    created_at: datetime


class DeviceCredentials(BaseModel):
    device: DevicePublic
    mqtt_username: str
    mqtt_password: str = Field(description="shown only in this answer; only a hash is stored")


class ReadingValue(BaseModel):
    value: float
    time: datetime


class DeviceLatest(BaseModel):
    device_id: str
    kind: str
    lot_id: str | None
    online: bool | None
    last_seen: datetime | None
    readings: dict[str, ReadingValue]


class BucketPublic(BaseModel):
    bucket: datetime
    min: float
    max: float
    avg: float
    count: int


class DeviceSeries(BaseModel):
    device_id: str
    metric: str
    start: datetime
    end: datetime
    bucket_s: int
    buckets: list[BucketPublic]


class LotSeries(BaseModel):
    lot_id: str
    metric: str
    start: datetime
    end: datetime
    bucket_s: int
    devices: list[DeviceSeries]


class BorrowerPublic(BaseModel):
    borrower_id: str
    name: str
    role: Literal["core", "supplier", "distributor", "independent"]
    core_id: str | None
    facilities: list[str]
    created_at: datetime


class PledgeStatus(BaseModel):
    """The lot's line in its facility's latest limit snapshot."""

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


class SensorHealth(BaseModel):
    device_id: str
    kind: str
    enabled: bool
    online: bool | None
    last_seen: datetime | None


class Location(BaseModel):
    lat: float
    lon: float
    time: datetime
    device_id: str


class LotPublic(BaseModel):
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
    operator_id: str | None = Field(default=None,
                                    description="the warehouse operator storing the lot")
    pledge: PledgeStatus | None = Field(description="null before the first limit snapshot, and "
                                                    "for a warehouse operator (the bank's "
                                                    "valuation)")
    sensors: list[SensorHealth]
    location: Location | None
    inside_geofence: bool | None = Field(description="null without a geofence or a position")


class ReleaseCreate(Strict):
    lot_id: Slug
    quantity: Quantity


class ReleasePublic(BaseModel):
    release_id: str
    lot_id: str
    facility_id: str
    borrower_id: str
    quantity: float
    status: ReleaseState
    requested_at: datetime
    approved_at: datetime | None
    executed_at: datetime | None


class InspectionCreate(Strict):
    counted_quantity: Annotated[Count, Field(description="units counted on site")]
    counted_at: Instant | None = Field(None, description="when it was counted; now if omitted "
                                       "(at most 5 minutes ahead)")
    counted_by: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                 pattern=r"\S")] | None = Field(
        None, description="who counted (an officer, the collateral manager); the caller if omitted")
    note: Annotated[str, StringConstraints(max_length=2000)] = ""


class InspectionPublic(BaseModel):
    id: int
    lot_id: str
    facility_id: str
    counted_quantity: float
    counted_at: datetime
    counted_by: str
    note: str
    sensor_quantity: float | None = Field(description="what the sensors said when it was "
                                          "counted (verified units); null if they said nothing")
    recorded_by: str
    created_at: datetime


class PriceCreate(Strict):
    commodity: PriceCommodity
    time: Instant
    price: Price
    currency: Currency = "CNY"


class PricePublic(BaseModel):
    commodity: str
    time: datetime
    price: float
    currency: str


class PricesPosted(BaseModel):
    posted: int
    facilities: list[str] = Field(description="facilities holding these commodities (revalued)")


class SaleCreate(Strict):
    facility_id: Slug
    amount: Amount
    time: Instant | None = Field(None, description="when it was sold; now if omitted")


class SalePublic(BaseModel):
    id: int
    facility_id: str
    time: datetime
    amount: float


class Shipment(Strict):
    """The goods behind a receivable: telemetry proves (or contradicts) their delivery."""

    vehicle: Slug
    seller_lot_id: Slug = Field(description="the seller's pledged lot the goods leave")
    quantity: Quantity
    buyer_lot_id: Slug = Field(description="the buyer's lot (warehouse) they arrive in")
    shipped_at: Instant


class ReceivableCreate(Strict):
    facility_id: Slug
    debtor: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    amount: Amount
    due: Instant
    related_party: Flag = False
    disputed: Flag = False
    debtor_id: Slug | None = Field(None, description="the debtor as a borrower of the portfolio "
                                   "(a core enterprise confirms what it owes)")
    shipment: Shipment | None = Field(None, description="the shipment behind the invoice")


class ReceivablePublic(BaseModel):
    receivable_id: str
    facility_id: str
    debtor: str
    amount: float
    due: datetime
    related_party: bool
    disputed: bool
    paid: bool
    verified: bool = Field(description="checked by an officer; only verified receivables are "
                           "eligible for the borrowing base")
    verified_at: datetime | None
    verified_by: str | None
    posted_by: str | None
    debtor_id: str | None = None
    programme_id: str | None = None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    shipment: dict[str, Any] | None = None
    trade_status: TradeState = Field("none", description="pending: delivery not yet proven; "
                                     "verified / contradicted by telemetry")
    trade_evidence: dict[str, Any] | None = None


# --- webhooks (alert notifications out) ---

WebhookUrl = Annotated[str, StringConstraints(
    max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?$")]
WebhookSecret = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{32,256}$")]


class WebhookCreate(Strict):
    url: WebhookUrl = Field(description="an http:// or https:// URL without credentials")
    secret: WebhookSecret | None = Field(
        None, description="the HMAC signing secret (32-256 printable characters); omit to have "
        "one generated")
    borrower_id: Slug | None = Field(None, description="only this borrower's alerts; null = all")
    description: Annotated[str, StringConstraints(max_length=200)] = ""
    ledger_heads: Flag = Field(False, description="also receive the ledger's signed tree heads "
                               "(`ledger.head` events), whatever the borrower scope")


class WebhookPublic(BaseModel):
    id: int
    url: str
    borrower_id: str | None
    description: str
    active: bool
    created_by: str
    created_at: datetime
    deactivated_at: datetime | None
    ledger_heads: bool = False


class WebhookCreated(WebhookPublic):
    secret: str | None = Field(description="the generated signing secret, shown only in this "
                               "answer; null when you chose it")


class WebhookAttemptPublic(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None


class WebhookDeliveryPublic(BaseModel):
    id: int = Field(description="also sent as X-PledgeWatch-Delivery")
    webhook_id: int
    event_id: int = Field(description="the body's `id`; the same event may arrive twice")
    event: str = Field(description="`alert.raised`, `alert.escalated`, `alert.acknowledged`, "
                       "`alert.resolved`, `alert.reopened` or `ping`")
    alert_id: int | None
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="when pending: the next attempt")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[WebhookAttemptPublic]


# --- supply-chain finance: drawdowns, repayments, blacklist, programmes, vouchers ---

Money = Annotated[float, StrictType(), Field(gt=0, le=1e14, allow_inf_nan=False,
                                             description="an amount with at most 2 decimals")]
Purpose = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class DrawdownCreate(Strict):
    facility_id: Slug
    amount: Money
    currency: Currency
    tenor_days: Annotated[int, StrictType(), Field(ge=1, le=3660)]
    purpose: Purpose


class DrawdownDecision(Strict):
    comment: Comment | None = None


class DrawdownPublic(BaseModel):
    drawdown_id: str
    facility_id: str
    borrower_id: str
    amount: float
    currency: str
    tenor_days: int
    purpose: str
    source: Literal["request", "opening"]
    status: DrawdownState
    reasons: list[str] = Field(description="why it waits for an officer (empty when approved "
                                           "at once)")
    repaid: float
    owed: float
    overdue: bool = Field(description="approved and past its maturity")
    requested_by: str | None
    requested_at: datetime
    decided_by: str | None = Field(description="'auto' when approved at once")
    decided_at: datetime | None
    comment: str | None
    maturity: datetime | None


class RepaymentCreate(Strict):
    facility_id: Slug
    amount: Money


class RepaymentPart(BaseModel):
    drawdown_id: str
    amount: float


class RepaymentPublic(BaseModel):
    id: int
    facility_id: str
    time: datetime
    amount: float
    allocation: list[RepaymentPart] = Field(description="the drawdowns it paid, first maturing first")
    unapplied: float = Field(description="paid beyond what was owed")
    outstanding: float = Field(description="the facility's outstanding after it")
    posted_by: str | None


class BlacklistCreate(Strict):
    borrower_id: Slug
    reason: Reason


class BlacklistEntry(BaseModel):
    id: int
    borrower_id: str
    reason: str
    added_by: str
    added_at: datetime
    removed_by: str | None
    removed_at: datetime | None


class ProgrammeCreate(Strict):
    programme_id: Slug
    core_id: Slug
    currency: Currency
    line: Money
    advance_rate: Annotated[float, StrictType(), Field(gt=0, le=1, allow_inf_nan=False)]


class ProgrammePublic(BaseModel):
    programme_id: str
    core_id: str
    facility_id: str = Field(description="the core enterprise's facility that carries the "
                                         "programme's alerts")
    currency: str
    line: float
    advance_rate: float
    used: float = Field(description="confirmed payables not yet paid")
    financed: float = Field(description="advanced by the bank on vouchers not yet settled")
    created_by: str
    created_at: datetime


class ChainMember(BaseModel):
    borrower_id: str
    name: str
    role: str


class VoucherStep(BaseModel):
    voucher_id: str
    holder_id: str
    amount: float
    status: VoucherState
    created_at: datetime
    created_by: str


class Confirmation(BaseModel):
    receivable_id: str
    debtor_id: str | None
    confirmed_at: datetime | None
    confirmed_by: str | None


class VoucherPublic(BaseModel):
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
    paid_at: datetime | None = Field(None, description="when the core enterprise paid the payable "
                                                       "this voucher is part of")


class VoucherDetail(VoucherPublic):
    tier: int = Field(description="1: the supplier the core enterprise confirmed to; 2: its "
                                  "supplier; … (a part kept on a split stays its holder's tier)")
    path: list[VoucherStep] = Field(description="from the core enterprise's confirmation down "
                                                "to this voucher")
    confirmation: Confirmation


class ChainPublic(BaseModel):
    programme: ProgrammePublic
    members: list[ChainMember]
    vouchers: list[VoucherPublic]


class VoucherTransfer(Strict):
    to: Slug = Field(description="the chain member receiving the part")
    amount: Money


class PayablePayment(Strict):
    amount: Money


class Payout(BaseModel):
    voucher_id: str
    payee: str = Field(description="'bank' or the holder's borrower id")
    amount: float


class PaymentPublic(BaseModel):
    root_id: str
    amount: float
    paid_at: datetime
    paid_by: str
    payouts: list[Payout]



# --- T+0 reconciliation ---

class ReconciliationBreak(BaseModel):
    id: int
    kind: Literal["duplicate", "missing_in_platform", "missing_in_bank", "amount_mismatch",
                  "date_mismatch"]
    facility_id: str
    reference: str
    detail: str
    bank_line: int | None = Field(description="the line (CSV) or entry (camt.053) of the statement")
    platform_reference: str | None
    alert_id: int | None


class StatementImport(BaseModel):
    id: int
    format: Literal["csv", "camt053"]
    source: str
    lines: int
    period_from: date
    period_to: date
    imported_by: str
    imported_at: datetime
    matched: int
    breaks: int
    counts: dict[str, int] = Field(description="breaks by kind")


class StatementReconciled(StatementImport):
    break_list: list[ReconciliationBreak]


class StockImported(BaseModel):
    imported: int


class GoodsThreeWays(BaseModel):
    lot_id: str
    facility_id: str
    pledged: float
    sensors: float | None = Field(description="sensor-verified (the latest limit snapshot)")
    operator: float | None = Field(description="the warehouse operator's stock ledger (latest)")
    differences: dict[str, float]
    flagged: list[str] = Field(description="differences beyond the tolerance (2 % of pledged)")


# --- credit ratings -------------------------------------------------------------------------------

Grade = Literal["A", "B", "C", "D", "E", "F", "G"]


class RatingReason(BaseModel):
    feature: str = Field(description="the indicator")
    points_lost: float = Field(description="points it cost against the indicator's best bin")
    bin: str = Field(description="the bin the borrower fell in ('missing' when no value)")


class RatingPublic(BaseModel):
    borrower_id: str
    as_of: date
    model: str = Field(description="the card: 'expert' or the registry's model kind")
    version: int
    score: float
    pd: float = Field(description="probability of default the score means")
    grade: Grade
    reasons: list[RatingReason] = Field(description="the features that cost the most points")
    rated_at: datetime


class GradeChange(BaseModel):
    as_of: date
    previous_grade: Grade | None
    grade: Grade
    model: str
    version: int
    reasons: list[RatingReason]
    facilities: list[dict[str, Any]] = Field(
        description="facilities whose terms followed the grade: advance rate and line, from/to")
    changed_by: str
    changed_at: datetime


class BorrowerRating(BaseModel):
    borrower_id: str
    current: RatingPublic | None = Field(description="null until the borrower is first rated")
    history: list[RatingPublic] = Field(description="recent ratings, newest first")
    grade_changes: list[GradeChange] = Field(description="changes of grade, newest first")


class RatingRun(BaseModel):
    as_of: date
    model: str
    version: int
    features: int = Field(description="borrowers whose features were computed")
    rated: int
    grade_changes: int
    facilities_moved: int
    skipped: bool = Field(description="another run held the lock; nothing was done")
