"""Every class of bad input lands as a dead letter with the right reason; the gateway keeps going."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from telemetry.contract.topics import status_topic, telemetry_topic
from telemetry.provisioning import set_enabled
from tests.support import Publisher, Stack, running_gateway, telemetry, wait_until

pytestmark = pytest.mark.integration


def now_ms(offset: timedelta = timedelta(0)) -> int:
    return int((datetime.now(UTC) + offset).timestamp() * 1000)


def bad_messages(tenant: str) -> list[tuple[str, bytes, str]]:
    t = telemetry_topic(tenant, "wh-1")
    ok = {"weight_kg": 10.0}
    return [
        (t, b'{"boot": 1, "seq": 1, "ts": 1', "malformed_json"),
        (t, b"\xff\xfe\x00garbage", "not_utf8"),
        (t, b"[" * 20_000, "payload_too_large"),
        (t, json.dumps({"seq": 1, "ts": now_ms(), "readings": ok}).encode(), "missing_boot_seq"),
        (t, json.dumps({"boot": "x", "seq": 1, "ts": now_ms(), "readings": ok}).encode(),
         "invalid_schema"),
        (telemetry_topic(tenant, "ghost"), telemetry(1, 1, ok), "unknown_device"),
        (telemetry_topic("other-tenant", "wh-1"), telemetry(1, 2, ok), "tenant_mismatch"),
        (t, json.dumps({"boot": 1, "seq": 3, "ts": now_ms(), "device": "wh-2",
                        "readings": ok}).encode(), "device_mismatch"),
        (t, telemetry(1, 4, {"moisture": 3}), "unknown_metric"),
        (t, telemetry(1, 5, {"door_open": "yes"}), "wrong_type"),
        (t, telemetry(1, 12, {"temp_c": [1, 2]}), "invalid_schema"),
        (t, telemetry(1, 6, {"weight_kg": True}), "wrong_type"),
        (t, b'{"boot": 1, "seq": 7, "ts": %d, "readings": {"temp_c": NaN}}' % now_ms(),
         "non_finite_value"),
        (t, b'{"boot": 1, "seq": 8, "ts": %d, "readings": {"temp_c": 1e999}}' % now_ms(),
         "non_finite_value"),
        (t, telemetry(1, 9, {"humidity_pct": 140.0}), "out_of_range"),
        (t, telemetry(1, 10, ok, ts=now_ms(timedelta(hours=2))), "ts_in_future"),
        (t, telemetry(1, 11, ok, ts="2001-01-01T00:00:00Z"), "ts_too_old"),
        (status_topic(tenant, "wh-1"), b'{"state": "sleeping"}', "invalid_schema"),
    ]


def test_each_bad_input_class_is_kept_with_its_reason(stack: Stack) -> None:
    stack.register("wh-1", "wh-2")
    # Register wh-1 under this tenant only; the "other-tenant" topic must not be able to use it.
    bad = bad_messages(stack.tenant) if stack.broker.kind != "external-mqtt" else [
        m for m in bad_messages(stack.tenant) if not m[0].startswith("pw/v1/other-tenant/")
    ]
    good = [(telemetry_topic(stack.tenant, "wh-1"), telemetry(1, 100 + i, {"weight_kg": 5.0}))
            for i in range(3)]
    # Subscribe to every tenant so the tenant-mismatch message reaches this gateway.
    config = stack.gateway_config(tenant_filter="+") if stack.broker.kind != "external-mqtt" \
        else stack.gateway_config()
    with running_gateway(stack, config) as gw, Publisher(stack.broker.target) as pub:
        pub.publish([(topic, payload) for topic, payload, _ in bad] + good)
        assert wait_until(lambda: gw.totals["received"] >= len(bad) + len(good)), gw.totals
        counts = gw.metrics.dead_letter_counts()

    with stack.connect() as conn:
        rows = conn.execute(
            "SELECT topic, payload, reason, detail, device_id FROM dead_letters ORDER BY id"
        ).fetchall()
    stored = {(r[0], bytes(r[1])): r for r in rows}
    for topic, payload, reason in bad:
        assert (topic, payload) in stored, f"{reason} message was lost"
        row = stored[(topic, payload)]
        assert row[2] == reason, (reason, row[3])
        assert row[3], "a dead letter explains itself"
    # Nothing else of this test's became a dead letter (other tests' retained status messages,
    # delivered to this all-tenant subscription, are not this test's concern).
    mine = {(t, p) for t, p, _ in bad}
    extra = [r for r in rows if (r[0], bytes(r[1])) not in mine and f"/{stack.tenant}/" in r[0]]
    assert not extra, extra
    assert len(mine & set(stored)) == len(bad)
    assert stack.count() == len(good)  # the gateway kept going
    expected: dict[str, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert counts == expected


def test_a_device_disabled_while_the_gateway_runs_is_refused_and_kept(stack: Stack) -> None:
    """The registry is re-read on every housekeeping pass: no unknown device is needed to notice
    that a known one was disabled (or enabled again)."""
    stack.register("wh-off")
    topic = telemetry_topic(stack.tenant, "wh-off")
    with running_gateway(stack, stack.gateway_config(device_offline_after_s=2)) as gw, \
            Publisher(stack.broker.target) as pub:
        pub.publish([(topic, telemetry(1, 1, {"weight_kg": 1.0}))])
        assert wait_until(lambda: stack.count() == 1)
        with stack.connect() as conn:
            assert set_enabled(conn, "wh-off", False)
        time.sleep(1.5)  # one housekeeping pass (every offline-timeout / 2 = 1 s)
        pub.publish([(topic, telemetry(1, 2, {"weight_kg": 2.0}))])
        assert wait_until(lambda: stack.count("dead_letters") >= 1), gw.totals
        with stack.connect() as conn:
            assert set_enabled(conn, "wh-off", True)
        time.sleep(1.5)
        pub.publish([(topic, telemetry(1, 3, {"weight_kg": 3.0}))])
        assert wait_until(lambda: stack.count() == 2)
    with stack.connect() as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters WHERE device_id ="
                                              " 'wh-off'").fetchall()]
        values = [r[0] for r in conn.execute("SELECT value FROM readings WHERE device_id = 'wh-off'"
                                             " ORDER BY seq").fetchall()]
    assert reasons == ["device_disabled"] and values == [1.0, 3.0]
