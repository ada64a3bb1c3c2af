"""The API's public shapes (``*Public`` out, ``*Create`` in). Ids are slugs; amounts are finite."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
Comment = Annotated[str, StringConstraints(max_length=2000)]
LtvStatus = Literal["ok", "warning", "liquidation", "unknown"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Me(BaseModel):
    role: Literal["admin", "officer", "enterprise"]
    subject: str
    borrower_id: str | None


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
    disabled: bool | None = None
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)] | None = None


class ApiKeyCreate(Strict):
    borrower_id: Slug
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ApiKeyPublic(BaseModel):
    key_id: str
    borrower_id: str
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
    collateral_value: float | None
    ltv: float | None = Field(description="outstanding ÷ collateral value; null when undefined")
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
    ltv: float | None
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
    comment: Comment | None = None
