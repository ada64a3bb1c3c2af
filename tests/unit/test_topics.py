"""telemetry.contract.topics: the v1 topic scheme and the gateway's subscription filters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.contract.topics import (
    PREFIX,
    DeviceTopic,
    parse_topic,
    status_topic,
    subscription_filters,
    telemetry_topic,
)

slugs = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def test_prefix_is_versioned() -> None:
    assert PREFIX == "pw/v1"


def test_topic_builders() -> None:
    assert telemetry_topic("acme", "wh-0001") == "pw/v1/acme/wh-0001/telemetry"
    assert status_topic("acme", "wh-0001") == "pw/v1/acme/wh-0001/status"


@pytest.mark.parametrize(
    ("tenant", "device_id"),
    [("acme", "wh-0001"), ("a", "b"), ("ACME_2", "dev.1-x"), ("0", "9"), ("t" * 64, "d" * 64)],
)
def test_parse_round_trips_both_channels(tenant: str, device_id: str) -> None:
    assert parse_topic(telemetry_topic(tenant, device_id)) == DeviceTopic(
        tenant, device_id, "telemetry"
    )
    assert parse_topic(status_topic(tenant, device_id)) == DeviceTopic(tenant, device_id, "status")


@settings(max_examples=200, deadline=None, database=None)
@given(tenant=slugs, device_id=slugs)
def test_parse_round_trips_any_slugs(tenant: str, device_id: str) -> None:
    parsed = parse_topic(telemetry_topic(tenant, device_id))
    assert parsed == DeviceTopic(tenant, device_id, "telemetry")
    assert parse_topic(status_topic(tenant, device_id)) == DeviceTopic(tenant, device_id, "status")


segments = st.sampled_from(
    ["pw", "v1", "v2", "acme", "wh-1", "telemetry", "status", "+", "#", ""]
) | st.text(max_size=70)
topic_like = st.lists(segments, max_size=7).map("/".join) | st.text(max_size=100)
SLUG_FULL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@settings(max_examples=300, deadline=None, database=None)
@given(topic=topic_like)
def test_parse_never_raises_and_yields_slugs_only(topic: str) -> None:
    parsed = parse_topic(topic)
    if parsed is not None:
        assert topic == f"pw/v1/{parsed.tenant}/{parsed.device_id}/{parsed.channel}"
        assert SLUG_FULL.fullmatch(parsed.tenant)
        assert SLUG_FULL.fullmatch(parsed.device_id)
        assert parsed.channel in ("telemetry", "status")


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "pw",
        "pw/v1",
        "xx/v1/acme/wh-0001/telemetry",
        "PW/v1/acme/wh-0001/telemetry",
        "pw/v2/acme/wh-0001/telemetry",
        "pw/V1/acme/wh-0001/telemetry",
        "pw/v1/acme/wh-0001",
        "pw/v1/wh-0001/telemetry",
        "pw/v1/acme/wh-0001/telemetry/extra",
        "pw/v1/acme/sub/wh-0001/telemetry",
        "/pw/v1/acme/wh-0001/telemetry",
        "pw/v1/acme/wh-0001/telemetry/",
        "pw//v1/acme/wh-0001/telemetry",
        "pw/v1/+/wh-0001/telemetry",
        "pw/v1/acme/+/telemetry",
        "pw/v1/#/wh-0001/telemetry",
        "pw/v1/acme/#/telemetry",
        "pw/v1/acme/wh-0001/#",
        "pw/v1/acme/wh-0001/+",
        "pw/v1/acme+/wh-0001/telemetry",
        "pw/v1/acme/wh#1/telemetry",
        "pw/v1//wh-0001/telemetry",
        "pw/v1/acme//telemetry",
        "pw/v1/acme/wh-0001/",
        "pw/v1/acme/wh-0001/config",
        "pw/v1/acme/wh-0001/Telemetry",
        "pw/v1/acme/wh-0001/telemetry ",
        "pw/v1/" + "t" * 65 + "/wh-0001/telemetry",
        "pw/v1/acme/" + "d" * 65 + "/telemetry",
        "pw/v1/-acme/wh-0001/telemetry",
        "pw/v1/acme/.hidden/telemetry",
        "pw/v1/acme/_x/telemetry",
        "pw/v1/ac me/wh-0001/telemetry",
        "pw/v1/acme/wh\x000001/telemetry",
        "pw/v1/acmé/wh-0001/telemetry",
        "pw/v1/acme/wh-\uff10001/telemetry",
        "$share/ingest/pw/v1/acme/wh-0001/telemetry",
        "$SYS/broker/uptime",
    ],
)
def test_parse_rejects(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize(
    "topic", ["pw/v1/acme\n/wh-0001/telemetry", "pw/v1/acme/wh-0001\n/status"]
)
def test_parse_rejects_ids_with_a_trailing_newline(topic: str) -> None:
    assert parse_topic(topic) is None


def test_subscription_filters_without_a_group() -> None:
    assert subscription_filters() == ["pw/v1/+/+/telemetry", "pw/v1/+/+/status"]
    assert subscription_filters(None) == subscription_filters()
    assert subscription_filters("") == subscription_filters()


def test_subscription_filters_with_a_group_are_shared_subscriptions() -> None:
    assert subscription_filters("ingest") == [
        "$share/ingest/pw/v1/+/+/telemetry",
        "$share/ingest/pw/v1/+/+/status",
    ]


def test_every_built_topic_matches_a_subscription_filter() -> None:
    def matches(flt: str, topic: str) -> bool:
        f_parts, t_parts = flt.split("/"), topic.split("/")
        return len(f_parts) == len(t_parts) and all(
            f in ("+", t) for f, t in zip(f_parts, t_parts, strict=True)
        )

    filters = subscription_filters()
    for topic in (telemetry_topic("acme", "wh-1"), status_topic("globex", "veh-2")):
        assert sum(matches(f, topic) for f in filters) == 1
