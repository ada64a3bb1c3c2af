"""Payload v1: decode and validate one MQTT message into readings, or say why not.

The decoder is pure: it takes the topic, the raw bytes, the received time and the device
registry, and returns either :class:`Accepted` (readings to store) or :class:`Rejected` (a dead
letter with its reason). It never raises on device input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from telemetry.contract.catalogue import CATALOGUE
from telemetry.contract.topics import parse_topic

MAX_BOOT = 2**31 - 1
MAX_SEQ = 2**63 - 1
MAX_READINGS = 64


class Reason(StrEnum):
    """Why a message became a dead letter. The values are stable: metrics and queries use them."""

    BAD_TOPIC = "bad_topic"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    INVALID_SCHEMA = "invalid_schema"
    MISSING_BOOT_SEQ = "missing_boot_seq"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_DISABLED = "device_disabled"
    TENANT_MISMATCH = "tenant_mismatch"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite_value"
    OUT_OF_RANGE = "out_of_range"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    tenant: str
    kind: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 16_384
    max_future_skew: timedelta = timedelta(minutes=5)
    max_past_age: timedelta = timedelta(days=7)


class Reading(NamedTuple):
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class Accepted:
    device_id: str
    tenant: str
    boot: int
    seq: int
    device_time: datetime
    received_at: datetime
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A device's online/offline status. ``retained`` is the MQTT retain flag: True for a retained
    message the broker replays on (re)subscribe, whose age is unknown unless the payload says
    (``ts``, the device's clock)."""

    device_id: str
    tenant: str
    online: bool
    received_at: datetime
    retained: bool = False
    ts: datetime | None = None

    @property
    def as_of(self) -> datetime | None:
        """When this status held: its arrival for a live message; for a retained replay the
        payload's ``ts`` (never later than its arrival), or None when its age is unknown."""
        if not self.retained:
            return self.received_at
        if self.ts is None:
            return None
        return min(self.ts, self.received_at)


Decoded = Accepted | Rejected | StatusChange

# Any JSON scalar: the type is checked per metric so a wrong one is reported as WRONG_TYPE.
ReadingValue = StrictBool | StrictInt | StrictFloat | StrictStr | None
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


class TelemetryV1(BaseModel):
    """The wire shape of a telemetry message (types only; ranges are checked afterwards)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)

    boot: Annotated[StrictInt, Field(ge=0, le=MAX_BOOT)]
    seq: Annotated[StrictInt, Field(ge=0, le=MAX_SEQ)]
    ts: StrictInt | Annotated[str, Field(min_length=10, max_length=40)]
    readings: Annotated[dict[Annotated[str, Field(max_length=64)], ReadingValue],
                        Field(min_length=1, max_length=MAX_READINGS)]
    device: Annotated[str, Field(max_length=64)] | None = None


class StatusV1(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["online", "offline"]
    ts: StrictInt | Annotated[str, Field(min_length=10, max_length=40)] | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_device_time(ts: int | str) -> datetime:
    """Epoch milliseconds or RFC 3339 with an offset; raises ValueError otherwise."""
    if isinstance(ts, int):
        if not -(2**47) < ts < 2**47:
            raise ValueError("epoch milliseconds out of range")
        return _EPOCH + timedelta(milliseconds=ts)
    if not RFC3339.fullmatch(ts):
        raise ValueError("not an RFC 3339 timestamp with an offset, e.g. 2026-11-22T08:00:00Z")
    text = ts.upper().replace("Z", "+00:00")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python keeps microseconds; drop finer digits
        text = text.replace(frac.group(0), "." + frac.group(1)[:6])
    return datetime.fromisoformat(text).astimezone(UTC)


def _first_schema_error(exc: ValidationError) -> tuple[Reason, str]:
    errors = exc.errors(include_url=False)
    for err in errors:
        if err["type"] in ("json_invalid", "json_type"):
            return Reason.MALFORMED_JSON, str(err["msg"])[:200]
        if err["type"] == "missing" and err["loc"] and err["loc"][0] in ("boot", "seq"):
            return Reason.MISSING_BOOT_SEQ, f"{err['loc'][0]} is required"
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return Reason.INVALID_SCHEMA, f"{where}: {err['msg']}"[:200]


def check_reading(metric: str, raw: Any) -> Reading | Rejected:
    spec = CATALOGUE.get(metric)
    if spec is None:
        return Rejected(Reason.UNKNOWN_METRIC, f"unknown metric {metric[:64]!r}")
    # Fast path: a finite float (or a plain int for a number metric) inside its range.
    raw_type = type(raw)
    if spec.kind == "number" and (raw_type is float or raw_type is int):
        if raw_type is float and spec.low <= raw <= spec.high:  # False for NaN
            return Reading(metric, raw)
        if raw_type is int and spec.low <= raw <= spec.high:
            return Reading(metric, float(raw))
    if spec.kind == "bool":
        if isinstance(raw, bool) or (type(raw) is int and raw in (0, 1)):
            return Reading(metric, 1.0 if raw else 0.0)
        return Rejected(Reason.WRONG_TYPE, f"{metric} must be true/false, got {raw!r:.40}")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return Rejected(Reason.WRONG_TYPE, f"{metric} must be a number, got {raw!r:.40}")
    try:
        value = float(raw)
    except OverflowError:
        return Rejected(Reason.OUT_OF_RANGE, f"{metric} is too large for a number")
    if not math.isfinite(value):
        return Rejected(Reason.NON_FINITE, f"{metric} is {value}")
    if spec.kind == "count" and not value.is_integer():
        return Rejected(Reason.WRONG_TYPE, f"{metric} must be a whole count, got {value}")
    if not spec.low <= value <= spec.high:
        return Rejected(
            Reason.OUT_OF_RANGE, f"{metric}={value} outside [{spec.low}, {spec.high}] {spec.unit}"
        )
    return Reading(metric, value)


def decode_telemetry(
    payload: bytes, device: DeviceInfo, received_at: datetime, limits: Limits
) -> Accepted | Rejected:
    try:
        msg = TelemetryV1.model_validate_json(payload)
    except ValidationError as exc:
        reason, detail = _first_schema_error(exc)
        return Rejected(reason, detail, device.device_id)
    if msg.device is not None and msg.device != device.device_id:
        return Rejected(
            Reason.DEVICE_MISMATCH,
            f"payload names device {msg.device[:64]!r}, topic names {device.device_id!r}",
            device.device_id,
        )
    try:
        device_time = (_EPOCH + timedelta(milliseconds=msg.ts) if type(msg.ts) is int
                       and -(2**47) < msg.ts < 2**47 else parse_device_time(msg.ts))
    except (ValueError, OverflowError) as exc:
        return Rejected(Reason.INVALID_SCHEMA, f"ts: {exc}"[:200], device.device_id)
    if device_time - received_at > limits.max_future_skew:
        return Rejected(
            Reason.TS_IN_FUTURE, f"ts {device_time.isoformat()} is ahead of the gateway clock",
            device.device_id,
        )
    if received_at - device_time > limits.max_past_age:
        return Rejected(
            Reason.TS_TOO_OLD, f"ts {device_time.isoformat()} is older than allowed",
            device.device_id,
        )
    readings = []
    for metric, raw in msg.readings.items():
        checked = check_reading(metric, raw)
        if isinstance(checked, Rejected):
            return Rejected(checked.reason, checked.detail, device.device_id)
        readings.append(checked)
    return Accepted(
        device.device_id, device.tenant, msg.boot, msg.seq, device_time, received_at,
        tuple(readings),
    )


def decode_status(payload: bytes, device: DeviceInfo, received_at: datetime,
                  retained: bool = False) -> StatusChange | Rejected:
    text = payload.strip()
    if text in (b"online", b"offline"):
        return StatusChange(device.device_id, device.tenant, text == b"online", received_at,
                            retained)
    try:
        msg = StatusV1.model_validate_json(payload)
    except ValidationError as exc:
        reason, detail = _first_schema_error(exc)
        return Rejected(reason, detail, device.device_id)
    ts = None
    if msg.ts is not None:
        try:
            ts = parse_device_time(msg.ts)
        except (ValueError, OverflowError) as exc:
            return Rejected(Reason.INVALID_SCHEMA, f"ts: {exc}"[:200], device.device_id)
    return StatusChange(device.device_id, device.tenant, msg.state == "online", received_at,
                        retained, ts)


def decode_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    devices: Mapping[str, DeviceInfo],
    limits: Limits,
    retained: bool = False,
) -> Decoded:
    """Route one message: topic, size, identity, then the channel's payload decoder.
    ``retained`` is the MQTT retain flag (a retained status replayed by the broker)."""
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejected(Reason.BAD_TOPIC, f"not a device topic: {topic[:200]!r}")
    if len(payload) > limits.max_payload_bytes:
        return Rejected(
            Reason.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes > {limits.max_payload_bytes}",
            None,
        )
    device = devices.get(parsed.device_id)
    if device is None:
        return Rejected(Reason.UNKNOWN_DEVICE, f"no device {parsed.device_id!r}")
    if device.tenant != parsed.tenant:
        return Rejected(
            Reason.TENANT_MISMATCH,
            f"device {device.device_id!r} belongs to another tenant than {parsed.tenant!r}",
            device.device_id,
        )
    if not device.enabled:
        return Rejected(Reason.DEVICE_DISABLED, "device is disabled", device.device_id)
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(Reason.NOT_UTF8, f"byte {exc.start} is not UTF-8", device.device_id)
    if parsed.channel == "status":
        return decode_status(payload, device, received_at, retained)
    return decode_telemetry(payload, device, received_at, limits)
