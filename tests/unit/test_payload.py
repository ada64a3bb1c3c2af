"""telemetry.contract.payload: each message decodes to Accepted, Rejected or StatusChange; never raises."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry.contract.catalogue import CATALOGUE
from telemetry.contract.payload import (
    MAX_READINGS,
    MAX_SEQ,
    Accepted,
    DeviceInfo,
    Limits,
    Reading,
    Reason,
    Rejected,
    StatusChange,
    decode_message,
)
from telemetry.contract.topics import status_topic, telemetry_topic

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TS_Z = "2025-06-01T12:00:00Z"
LIMITS = Limits()

DEVICES: dict[str, DeviceInfo] = {
    "wh-0001": DeviceInfo("wh-0001", "acme", "warehouse"),
    "line-0001": DeviceInfo("line-0001", "acme", "line"),
    "veh-0001": DeviceInfo("veh-0001", "acme", "vehicle"),
    "wh-0002": DeviceInfo("wh-0002", "globex", "warehouse"),
    "wh-0099": DeviceInfo("wh-0099", "acme", "warehouse", enabled=False),
}
TOPIC = telemetry_topic("acme", "wh-0001")
STATUS = status_topic("acme", "wh-0001")
DECODED_TYPES = (Accepted, Rejected, StatusChange)
_DEFAULT: Any = object()

fast = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def body(readings: Any = _DEFAULT, **fields: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"boot": 3, "seq": 42, "ts": TS_Z,
                           "readings": {"temp_c": 21.5} if readings is _DEFAULT else readings}
    msg.update(fields)
    return msg


def raw(msg: Any) -> bytes:
    return json.dumps(msg).encode()


def decode(payload: bytes | dict[str, Any], topic: str = TOPIC, limits: Limits = LIMITS,
           received_at: datetime = NOW) -> Accepted | Rejected | StatusChange:
    data = raw(payload) if isinstance(payload, dict) else payload
    return decode_message(topic, data, received_at, DEVICES, limits)


def rejected(payload: bytes | dict[str, Any], reason: Reason, **kw: Any) -> Rejected:
    result = decode(payload, **kw)
    assert isinstance(result, Rejected), result
    assert result.reason is reason, result
    assert result.detail
    return result


def accepted(payload: bytes | dict[str, Any], **kw: Any) -> Accepted:
    result = decode(payload, **kw)
    assert isinstance(result, Accepted), result
    return result


def values(result: Accepted) -> dict[str, float]:
    return {r.metric: r.value for r in result.readings}


# --- accepted messages -------------------------------------------------------------------------


def test_warehouse_message_is_accepted_with_exact_readings() -> None:
    readings = {"weight_kg": 1234.5, "rfid_count": 480, "temp_c": -3.25, "humidity_pct": 55.0,
                "door_open": False, "tamper": True, "camera_ok": True, "power_v": 12}
    result = accepted(body(readings, device="wh-0001"))
    assert result.device_id == "wh-0001"
    assert result.tenant == "acme"
    assert (result.boot, result.seq) == (3, 42)
    assert result.device_time == NOW
    assert result.received_at == NOW
    assert values(result) == {"weight_kg": 1234.5, "rfid_count": 480.0, "temp_c": -3.25,
                              "humidity_pct": 55.0, "door_open": 0.0, "tamper": 1.0,
                              "camera_ok": 1.0, "power_v": 12.0}
    assert [r.metric for r in result.readings] == list(readings)
    assert all(type(r.value) is float for r in result.readings)


def test_line_message_is_accepted_with_counts_and_bools() -> None:
    result = accepted(
        body({"line_count": 10**12, "line_running": True, "power_v": 230.1}),
        topic=telemetry_topic("acme", "line-0001"),
    )
    assert result.device_id == "line-0001"
    assert result.readings == (
        Reading("line_count", 1e12), Reading("line_running", 1.0), Reading("power_v", 230.1),
    )


def test_vehicle_message_is_accepted() -> None:
    result = accepted(
        body({"lat": 31.2304, "lon": 121.4737, "speed_kmh": 0, "door_open": True, "tamper": False}),
        topic=telemetry_topic("acme", "veh-0001"),
    )
    assert values(result) == {"lat": 31.2304, "lon": 121.4737, "speed_kmh": 0.0,
                              "door_open": 1.0, "tamper": 0.0}


def test_bool_metric_accepts_integer_zero_and_one() -> None:
    result = accepted(body({"door_open": 1, "tamper": 0}))
    assert values(result) == {"door_open": 1.0, "tamper": 0.0}


def test_count_metric_accepts_whole_float() -> None:
    assert values(accepted(body({"rfid_count": 5.0}))) == {"rfid_count": 5.0}


@pytest.mark.parametrize(
    "ts",
    [NOW_MS, TS_Z, "2025-06-01T12:00:00z", "2025-06-01T20:00:00+08:00",
     "2025-06-01T07:30:00-04:30", "2025-06-01T12:00:00.000Z", "2025-06-01T12:00:00+00:00"],
)
def test_timestamp_forms_give_the_same_utc_instant(ts: int | str) -> None:
    result = accepted(body(ts=ts))
    assert result.device_time == NOW
    assert result.device_time.utcoffset() == timedelta(0)


def test_epoch_millis_keep_millisecond_precision() -> None:
    result = accepted(body(ts=NOW_MS - 1))
    assert result.device_time == NOW - timedelta(milliseconds=1)


def test_payload_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not() -> None:
    base = raw(body())
    exact = base + b" " * (LIMITS.max_payload_bytes - len(base))
    assert len(exact) == LIMITS.max_payload_bytes
    accepted(exact)
    result = rejected(exact + b" ", Reason.PAYLOAD_TOO_LARGE)
    assert result.device_id is None


def test_sixty_four_readings_pass_the_schema_check() -> None:
    # Only 13 catalogue metrics exist, so 64 distinct known names cannot be sent: the schema
    # accepts 64 keys and the first unknown one is named (65 keys: see the schema tests).
    readings = {f"m{i}": 1 for i in range(MAX_READINGS)}
    result = rejected(body(readings), Reason.UNKNOWN_METRIC)
    assert "m0" in result.detail


# --- rejected: framing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b" ", b"{", b'{"boot":1', b"{'boot': 1}", b"not json", b'{"boot":1,}', b"\xef\xbb\xbf{}",
     raw(body()) + b"{", raw(body()) + b"x"],
    ids=["empty", "blank", "brace", "truncated", "single-quotes", "text", "trailing-comma", "bom",
         "two-documents", "trailing-garbage"],
)
def test_malformed_json(payload: bytes) -> None:
    rejected(payload, Reason.MALFORMED_JSON)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    big = Limits(max_payload_bytes=200_000)
    rejected(b"[" * 100_000, Reason.MALFORMED_JSON, limits=big)
    rejected(b'{"readings":' * 15_000, Reason.MALFORMED_JSON, limits=big)
    rejected(b"[" * 100_000, Reason.MALFORMED_JSON, topic=STATUS, limits=big)


def test_deeply_nested_json_over_the_size_limit_is_too_large() -> None:
    rejected(b"[" * 100_000, Reason.PAYLOAD_TOO_LARGE)


@pytest.mark.parametrize("payload", [b"[]", b"null", b"42", b'"text"', b"true", raw([body()])])
def test_json_that_is_not_an_object_is_invalid_schema(payload: bytes) -> None:
    rejected(payload, Reason.INVALID_SCHEMA)


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe", b"\x80", b'{"boot":1,"ts":"\xc3\x28"}', raw(body())[:-2] + b"\xe9}}"]
)
def test_non_utf8_bytes(payload: bytes) -> None:
    rejected(payload, Reason.NOT_UTF8)


def test_non_utf8_on_the_status_channel() -> None:
    rejected(b"onl\xffine", Reason.NOT_UTF8, topic=STATUS)


def test_oversized_check_uses_the_configured_limit() -> None:
    payload = raw(body())
    accepted(payload, limits=Limits(max_payload_bytes=len(payload)))
    rejected(payload, Reason.PAYLOAD_TOO_LARGE, limits=Limits(max_payload_bytes=len(payload) - 1))


# --- rejected: topic and identity --------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["", "pw/v1/acme/wh-0001", "pw/v2/acme/wh-0001/telemetry", "xx/v1/acme/wh-0001/telemetry",
     "pw/v1/acme/wh-0001/telemetry/extra", "pw/v1/+/wh-0001/telemetry", "pw/v1/acme/#/telemetry",
     "pw/v1/acme/wh-0001/config", "/pw/v1/acme/wh-0001/telemetry"],
)
def test_bad_topic(topic: str) -> None:
    result = rejected(raw(body()), Reason.BAD_TOPIC, topic=topic)
    assert result.device_id is None


def test_unknown_device() -> None:
    result = rejected(body(), Reason.UNKNOWN_DEVICE, topic=telemetry_topic("acme", "wh-7777"))
    assert result.device_id is None


def test_unknown_device_beats_non_utf8_and_bad_json() -> None:
    rejected(b"\xff", Reason.UNKNOWN_DEVICE, topic=telemetry_topic("acme", "nobody"))


def test_tenant_mismatch_topic_tenant_differs_from_registry() -> None:
    # wh-0002 belongs to globex; publishing it under acme must not be attributed to anyone.
    result = rejected(body(), Reason.TENANT_MISMATCH, topic=telemetry_topic("acme", "wh-0002"))
    assert result.device_id == "wh-0002"
    rejected(body(), Reason.TENANT_MISMATCH, topic=status_topic("acme", "wh-0002"))


def test_tenant_mismatch_is_checked_before_payload_content() -> None:
    rejected(b"garbage", Reason.TENANT_MISMATCH, topic=telemetry_topic("globex", "wh-0001"))


def test_payload_device_field_differing_from_topic() -> None:
    result = rejected(body(device="wh-0002"), Reason.DEVICE_MISMATCH)
    assert result.device_id == "wh-0001"
    rejected(body(device=""), Reason.DEVICE_MISMATCH)
    rejected(body(device="WH-0001"), Reason.DEVICE_MISMATCH)


def test_disabled_device() -> None:
    topic = telemetry_topic("acme", "wh-0099")
    result = rejected(body(), Reason.DEVICE_DISABLED, topic=topic)
    assert result.device_id == "wh-0099"
    rejected(b"online", Reason.DEVICE_DISABLED, topic=status_topic("acme", "wh-0099"))


# --- rejected: readings ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "", "TEMP_C", "temp_c ", "__class__"])
def test_unknown_metric(name: str) -> None:
    result = rejected(body({"temp_c": 20, name: 1}), Reason.UNKNOWN_METRIC)
    assert result.device_id == "wh-0001"


@pytest.mark.parametrize(
    "readings",
    [{"temp_c": True}, {"weight_kg": False}, {"rfid_count": True}, {"door_open": 2},
     {"door_open": -1}, {"tamper": 0.5}, {"camera_ok": 1.5}, {"rfid_count": 1.5},
     {"line_count": 0.1}, {"door_open": float("nan")}],
    ids=str,
)
def test_wrong_type(readings: dict[str, Any]) -> None:
    rejected(body(readings), Reason.WRONG_TYPE)


@pytest.mark.parametrize(
    "readings", [{"temp_c": "21.5"}, {"door_open": "true"}, {"rfid_count": "5"}], ids=str
)
def test_string_reading_values_are_rejected(readings: dict[str, Any]) -> None:
    result = decode(body(readings))
    assert isinstance(result, Rejected)
    assert result.reason in (Reason.WRONG_TYPE, Reason.INVALID_SCHEMA)


def test_string_reading_value_is_wrong_type() -> None:
    rejected(body({"temp_c": "21.5"}), Reason.WRONG_TYPE)


def test_null_reading_value_is_wrong_type() -> None:
    rejected(body({"temp_c": None}), Reason.WRONG_TYPE)


@pytest.mark.parametrize("value", [[1], {"v": 1}], ids=["list", "object"])
def test_non_scalar_reading_values_are_invalid_schema(value: Any) -> None:
    rejected(body({"temp_c": value}), Reason.INVALID_SCHEMA)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
@pytest.mark.parametrize("metric", ["temp_c", "weight_kg", "rfid_count", "line_count"])
def test_non_finite_values(literal: bytes, metric: str) -> None:
    payload = raw(body({metric: 0})).replace(b'"' + metric.encode() + b'": 0',
                                              b'"' + metric.encode() + b'": ' + literal)
    assert literal in payload
    rejected(payload, Reason.NON_FINITE)


def _numeric_metrics() -> list[str]:
    return [m.name for m in CATALOGUE.values() if m.kind != "bool"]


@pytest.mark.parametrize("metric", _numeric_metrics())
def test_range_bounds_are_inclusive(metric: str) -> None:
    spec = CATALOGUE[metric]
    for bound in (spec.low, spec.high):
        value: int | float = int(bound) if spec.kind == "count" else float(bound)
        assert values(accepted(body({metric: value}))) == {metric: float(bound)}


@pytest.mark.parametrize("metric", _numeric_metrics())
def test_just_outside_each_bound_is_out_of_range(metric: str) -> None:
    spec = CATALOGUE[metric]
    if spec.kind == "count":
        outside: list[int | float] = [int(spec.low) - 1, int(spec.high) + 1]
    else:
        outside = [math.nextafter(spec.low, -math.inf), math.nextafter(spec.high, math.inf)]
    for value in outside:
        result = rejected(body({metric: value}), Reason.OUT_OF_RANGE)
        assert metric in result.detail


def test_one_bad_reading_rejects_the_whole_message() -> None:
    rejected(body({"temp_c": 20.0, "humidity_pct": 100.5, "power_v": 12}), Reason.OUT_OF_RANGE)


@pytest.mark.parametrize("metric", ["weight_kg", "rfid_count", "temp_c"])
def test_integer_too_large_for_a_float_is_rejected_not_raised(metric: str) -> None:
    payload = raw(body({metric: 0})).replace(b": 0}", b": 1" + b"0" * 400 + b"}")
    result = decode(payload)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.OUT_OF_RANGE


# --- rejected: envelope ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["boot", "seq"])
def test_missing_boot_or_seq(missing: str) -> None:
    msg = body()
    del msg[missing]
    result = rejected(msg, Reason.MISSING_BOOT_SEQ)
    assert missing in result.detail
    assert result.device_id == "wh-0001"


def test_missing_both_boot_and_seq() -> None:
    rejected({"ts": TS_Z, "readings": {"temp_c": 1}}, Reason.MISSING_BOOT_SEQ)
    rejected(b"{}", Reason.MISSING_BOOT_SEQ)


@pytest.mark.parametrize(
    "fields",
    [{"boot": -1}, {"seq": -1}, {"boot": 2**31}, {"seq": MAX_SEQ + 1}, {"seq": 2**64},
     {"boot": 1.0}, {"boot": "1"}, {"seq": 1.0}, {"seq": "42"}, {"boot": True}, {"boot": None},
     {"extra": 1}, {"Boot": 1}, {"readings": {}}, {"readings": []}, {"readings": None},
     {"ts": None}, {"ts": 1.7e12}, {"ts": True}, {"device": 7}],
    ids=str,
)
def test_invalid_schema(fields: dict[str, Any]) -> None:
    result = rejected(body(**fields), Reason.INVALID_SCHEMA)
    assert result.device_id == "wh-0001"


def test_boot_and_seq_at_their_maxima_are_accepted() -> None:
    result = accepted(body(boot=2**31 - 1, seq=MAX_SEQ))
    assert (result.boot, result.seq) == (2**31 - 1, MAX_SEQ)
    result = accepted(body(boot=0, seq=0))
    assert (result.boot, result.seq) == (0, 0)


def test_more_than_64_readings_is_invalid_schema() -> None:
    readings = {f"m{i}": 1 for i in range(MAX_READINGS + 1)}
    rejected(body(readings), Reason.INVALID_SCHEMA)


def test_metric_name_too_long_is_rejected() -> None:
    result = decode(body({"x" * 1000: 1}))
    assert isinstance(result, Rejected)
    assert result.reason in (Reason.INVALID_SCHEMA, Reason.UNKNOWN_METRIC)
    assert len(result.detail) <= 300


# --- rejected: timestamps ----------------------------------------------------------------------


def test_ts_just_inside_the_future_skew_is_accepted() -> None:
    skew_ms = int(LIMITS.max_future_skew.total_seconds() * 1000)
    result = accepted(body(ts=NOW_MS + skew_ms))
    assert result.device_time == NOW + LIMITS.max_future_skew


def test_ts_just_outside_the_future_skew_is_rejected() -> None:
    skew_ms = int(LIMITS.max_future_skew.total_seconds() * 1000)
    rejected(body(ts=NOW_MS + skew_ms + 1), Reason.TS_IN_FUTURE)
    rejected(body(ts="2025-06-01T20:05:01+08:00"), Reason.TS_IN_FUTURE)
    rejected(body(ts="2099-01-01T00:00:00Z"), Reason.TS_IN_FUTURE)


def test_ts_just_inside_the_past_age_is_accepted() -> None:
    age_ms = int(LIMITS.max_past_age.total_seconds() * 1000)
    assert accepted(body(ts=NOW_MS - age_ms)).device_time == NOW - LIMITS.max_past_age


def test_ts_just_outside_the_past_age_is_rejected() -> None:
    age_ms = int(LIMITS.max_past_age.total_seconds() * 1000)
    rejected(body(ts=NOW_MS - age_ms - 1), Reason.TS_TOO_OLD)
    rejected(body(ts=0), Reason.TS_TOO_OLD)
    rejected(body(ts="2000-01-01T00:00:00Z"), Reason.TS_TOO_OLD)


def test_ts_limits_follow_the_configured_limits() -> None:
    tight = Limits(max_future_skew=timedelta(0), max_past_age=timedelta(seconds=1))
    accepted(body(ts=NOW_MS), limits=tight)
    rejected(body(ts=NOW_MS + 1), Reason.TS_IN_FUTURE, limits=tight)
    rejected(body(ts=NOW_MS - 1001), Reason.TS_TOO_OLD, limits=tight)


@pytest.mark.parametrize(
    "ts",
    ["2025-06-01T12:00:00", "2025-06-01 12:00:00", "2025-06-01T12:00:00.123"],
)
def test_ts_without_offset_is_invalid(ts: str) -> None:
    result = rejected(body(ts=ts), Reason.INVALID_SCHEMA)
    assert "ts" in result.detail


@pytest.mark.parametrize(
    "ts",
    ["", "now", "yesterday", "2025-06-01", "12:00:00Z", "2025-13-01T00:00:00Z",
     "2025-02-30T00:00:00Z", "2025-06-01T25:00:00Z", "2025-06-01T12:00:00+24:00",
     "2025-06-01T12:00:00Zjunk", "xxxxxxxxxxTxxxxxxxxx", "2025-06-01T12:00:00Z" + " " * 40,
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "-1", "1717243200000"],
)
def test_ts_garbage_strings_are_invalid(ts: str) -> None:
    rejected(body(ts=ts), Reason.INVALID_SCHEMA)


@pytest.mark.parametrize("ts", [2**47, -(2**47), 10**20, -(10**20), 2**63, 10**400])
def test_huge_epoch_millis_are_invalid(ts: int) -> None:
    rejected(body(ts=ts), Reason.INVALID_SCHEMA)


@pytest.mark.parametrize("ts", [2**47 - 1, -(2**47) + 1])
def test_epoch_millis_at_the_edge_of_range_do_not_raise(ts: int) -> None:
    result = decode(body(ts=ts))
    assert isinstance(result, Rejected)
    assert result.reason in (Reason.INVALID_SCHEMA, Reason.TS_IN_FUTURE, Reason.TS_TOO_OLD)


# --- status channel ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "online"),
    [(b"online", True), (b"offline", False), (b" online\n", True), (b"offline\r\n", False),
     (b'{"state":"online"}', True), (b'{"state":"offline"}', False),
     (b'{"state": "offline", "reason": "lwt"}', False)],
)
def test_status_messages(payload: bytes, online: bool) -> None:
    result = decode(payload, topic=STATUS)
    assert result == StatusChange("wh-0001", "acme", online, NOW)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", Reason.MALFORMED_JSON), (b"ONLINE", Reason.MALFORMED_JSON),
     (b"on line", Reason.MALFORMED_JSON), (b'{"state":', Reason.MALFORMED_JSON),
     (b'{"state":"bogus"}', Reason.INVALID_SCHEMA), (b'{"state":true}', Reason.INVALID_SCHEMA),
     (b"{}", Reason.INVALID_SCHEMA), (b'"online"', Reason.INVALID_SCHEMA),
     (b"[]", Reason.INVALID_SCHEMA), (b"null", Reason.INVALID_SCHEMA)],
)
def test_bad_status_payloads(payload: bytes, reason: Reason) -> None:
    result = rejected(payload, reason, topic=STATUS)
    assert result.device_id == "wh-0001"


def test_telemetry_on_the_status_topic_is_not_accepted_as_readings() -> None:
    result = decode(raw(body()), topic=STATUS)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.INVALID_SCHEMA


def test_status_word_on_the_telemetry_topic_is_malformed() -> None:
    rejected(b"online", Reason.MALFORMED_JSON)


# --- properties ---------------------------------------------------------------------------------

slugs = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,8}\Z")
device_topics = st.builds(
    lambda t, d, c: f"pw/v1/{t}/{d}/{c}",
    st.sampled_from(["acme", "globex"]) | slugs,
    st.sampled_from(sorted(DEVICES)) | slugs,
    st.sampled_from(["telemetry", "status"]),
)
topics = device_topics | st.text(max_size=80)

# Integers reach far past float range (1e400): the decoder must reject them, not raise.
json_scalars = (
    st.none() | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
catalogue_names = st.sampled_from(sorted(CATALOGUE)) | st.text(max_size=12)
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "boot": json_values | st.integers(-5, 2**32),
        "seq": json_values | st.integers(-5, 2**64),
        "ts": json_values | st.integers(-(2**48), 2**48) | st.just(TS_Z),
        "readings": st.dictionaries(catalogue_names, json_values, max_size=5) | json_values,
        "device": st.sampled_from(["wh-0001", "wh-0002"]) | json_values,
        "state": st.sampled_from(["online", "offline"]) | json_values,
    },
)


def _assert_decodes(topic: str, payload: bytes) -> None:
    result = decode_message(topic, payload, NOW, DEVICES, LIMITS)
    assert isinstance(result, DECODED_TYPES)
    if isinstance(result, Rejected):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.detail, str)


@fast
@given(topic=topics, payload=st.binary(max_size=300))
def test_arbitrary_bytes_and_topics_never_raise(topic: str, payload: bytes) -> None:
    _assert_decodes(topic, payload)


@fast
@given(topic=device_topics, obj=json_values | envelope_like)
def test_arbitrary_json_never_raises(topic: str, obj: Any) -> None:
    _assert_decodes(topic, json.dumps(obj).encode())


@fast
@given(obj=envelope_like)
def test_arbitrary_json_envelopes_on_a_known_device_never_raise(obj: dict[str, Any]) -> None:
    _assert_decodes(TOPIC, json.dumps(obj).encode())
    _assert_decodes(STATUS, json.dumps(obj).encode())


def _valid_value(name: str) -> st.SearchStrategy[bool | int | float]:
    spec = CATALOGUE[name]
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "count":
        return st.integers(int(spec.low), int(spec.high))
    return st.floats(spec.low, spec.high, allow_nan=False, allow_infinity=False)


@st.composite
def valid_readings(draw: st.DrawFn) -> dict[str, bool | int | float]:
    names = draw(st.lists(st.sampled_from(sorted(CATALOGUE)), min_size=1, unique=True))
    return {name: draw(_valid_value(name)) for name in names}


@fast
@given(
    readings=valid_readings(),
    boot=st.integers(0, 2**31 - 1),
    seq=st.integers(0, MAX_SEQ),
    offset_ms=st.integers(-int(LIMITS.max_past_age.total_seconds() * 1000),
                          int(LIMITS.max_future_skew.total_seconds() * 1000)),
    device=st.sampled_from(["wh-0001", None]),
)
def test_valid_messages_are_accepted_and_round_trip(
    readings: dict[str, bool | int | float], boot: int, seq: int, offset_ms: int,
    device: str | None,
) -> None:
    msg = body(readings, boot=boot, seq=seq, ts=NOW_MS + offset_ms)
    if device is not None:
        msg["device"] = device
    result = accepted(raw(msg))
    assert (result.device_id, result.tenant, result.boot, result.seq) == ("wh-0001", "acme",
                                                                          boot, seq)
    assert result.device_time == NOW + timedelta(milliseconds=offset_ms)
    expected = {k: (1.0 if v else 0.0) if isinstance(v, bool) else float(v)
                for k, v in readings.items()}
    assert values(result) == expected
    assert [r.metric for r in result.readings] == list(readings)


@st.composite
def out_of_range_reading(draw: st.DrawFn) -> tuple[str, int | float]:
    spec = draw(st.sampled_from([m for m in CATALOGUE.values() if m.kind != "bool"]))
    above = draw(st.booleans())
    if spec.kind == "count":
        value: int | float = (
            draw(st.integers(int(spec.high) + 1, int(spec.high) * 2 + 1)) if above
            else draw(st.integers(int(spec.low) - 10**9, int(spec.low) - 1))
        )
    elif above:
        value = draw(st.floats(min_value=spec.high, exclude_min=True, allow_infinity=False))
    else:
        value = draw(st.floats(max_value=spec.low, exclude_max=True, allow_infinity=False))
    return spec.name, value


@fast
@given(bad=out_of_range_reading(), good=valid_readings())
def test_generated_reading_outside_its_range_is_out_of_range(
    bad: tuple[str, int | float], good: dict[str, bool | int | float]
) -> None:
    name, value = bad
    readings = {k: v for k, v in good.items() if k != name}
    readings[name] = value
    result = rejected(body(readings), Reason.OUT_OF_RANGE)
    assert name in result.detail
