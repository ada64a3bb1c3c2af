"""N messages over real MQTT become exactly N stored readings; replays change nothing."""

from __future__ import annotations

import time

import pytest

from tests.support import Publisher, Stack, device_messages, running_gateway, wait_until

pytestmark = pytest.mark.integration


def test_messages_stored_exactly_once_and_replays_change_nothing(stack: Stack) -> None:
    devices = ["wh-a", "wh-b", "line-c"]
    stack.register(*devices)
    messages = device_messages(stack.tenant, devices, per_device=100)
    expected_rows = len(messages) * 2  # two readings per message

    with running_gateway(stack) as gw, Publisher(stack.broker.target) as pub:
        pub.publish(messages)
        assert wait_until(lambda: gw.totals["received"] >= len(messages)), gw.totals
        assert stack.count() == expected_rows
        assert gw.totals["stored"] == expected_rows
        assert gw.totals["duplicates"] == 0

        pub.publish(messages)  # the same bytes again: a device resending after a reconnect
        assert wait_until(lambda: gw.totals["received"] >= 2 * len(messages)), gw.totals
        assert stack.count() == expected_rows
        assert gw.totals["duplicates"] == expected_rows
        assert gw.totals["acked"] == 2 * len(messages)

    with stack.connect() as conn:
        rows = conn.execute(
            "SELECT device_id, count(DISTINCT (boot, seq)), min(seq), max(seq)"
            " FROM readings GROUP BY device_id ORDER BY device_id"
        ).fetchall()
        status = conn.execute(
            "SELECT device_id, online, last_boot, last_seq FROM device_status ORDER BY device_id"
        ).fetchall()
    assert rows == [(d, 100, 0, 99) for d in sorted(devices)]
    assert status == [(d, True, 1, 99) for d in sorted(devices)]


def test_unknown_device_registered_later_is_accepted(stack: Stack) -> None:
    """The registry reloads on a miss, so a device provisioned after start is recognised."""
    stack.register("wh-early")
    with running_gateway(stack) as gw, Publisher(stack.broker.target) as pub:
        pub.publish(device_messages(stack.tenant, ["wh-late"], per_device=1))
        assert wait_until(lambda: gw.totals["dead_letters"] == 1)
        stack.register("wh-late")
        time.sleep(0.3)  # past the registry's reload rate limit (registry_refresh_s=0.2)
        pub.publish(device_messages(stack.tenant, ["wh-late"], per_device=2, boot=2))
        assert wait_until(lambda: gw.totals["stored"] == 4), gw.totals
