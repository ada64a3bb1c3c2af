"""Crashes mid-stream lose nothing and store nothing twice.

The gateway is a real `pledgewatch gateway` process killed with SIGKILL; the database outage is a
real server stop (embedded) or a real refusal of connections (the machine's shared server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import Publisher, Stack, device_messages, running_gateway, unique, wait_until

pytestmark = pytest.mark.integration


def gateway_process(stack: Stack, client_id: str, state_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update({
        "PLEDGEWATCH_DATABASE_URL": stack.database_url,
        "PLEDGEWATCH_MQTT_URL": stack.broker.url,
        "PLEDGEWATCH_MQTT_PROTOCOL": stack.broker.target.protocol,
        "PLEDGEWATCH_MQTT_CLIENT_ID": client_id,
        "PLEDGEWATCH_MQTT_TENANT_FILTER": stack.tenant,
        "PLEDGEWATCH_MQTT_SESSION_EXPIRY_S": "600",
        "PLEDGEWATCH_METRICS_PORT": "0",
        "PLEDGEWATCH_BATCH_MAX_AGE_MS": "20",
        "PLEDGEWATCH_STATE_DIR": str(state_dir),
    })
    return subprocess.Popen([sys.executable, "-m", "pledgewatch", "gateway"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stored(stack: Stack) -> int:
    """Readings of the test's devices: a slow gateway may store a second probe after its
    rows were removed."""
    with stack.connect() as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE device_id <> 'probe'").fetchone()
    return int(row[0]) if row else 0


def distinct_messages(stack: Stack) -> int:
    with stack.connect() as conn:
        row = conn.execute("SELECT count(DISTINCT (device_id, boot, seq)) FROM readings"
                           " WHERE device_id <> 'probe'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.once_per_run  # the brokers differ in how they hand a session back; the databases do not
def test_gateway_sigkill_mid_stream_stores_every_message_once(stack: Stack, tmp_path: Path) -> None:
    devices = [f"wh-{i}" for i in range(4)]
    stack.register(*devices, "probe")
    per_device = min(750, stack.broker.max_offline_backlog // len(devices))
    messages = device_messages(stack.tenant, devices, per_device)
    client_id = unique("gw")

    first = gateway_process(stack, client_id, tmp_path)
    publisher = Publisher(stack.broker.target)
    try:
        assert wait_until(lambda: _round_trip(stack), timeout=20), "gateway did not come up"
        sender = threading.Thread(target=publisher.publish, args=(messages,),
                                  kwargs={"rate": 1500.0})
        sender.start()
        assert wait_until(lambda: stored(stack) >= len(messages) // 2, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = stored(stack)
        assert killed_at < 2 * len(messages), "the kill came after the stream ended"

        second = gateway_process(stack, client_id, tmp_path)
        try:
            sender.join(60)
            # a generous wait: what is asserted is nothing lost and nothing twice, not speed
            # (the embedded broker hands a resumed session its backlog at ~100 messages/s)
            assert wait_until(lambda: stored(stack) >= 2 * len(messages), timeout=180), (
                stored(stack), 2 * len(messages))
            assert not wait_until(lambda: stored(stack) > 2 * len(messages), timeout=1)
        finally:
            second.send_signal(signal.SIGTERM)
            out = second.communicate(timeout=30)[0].decode(errors="replace")
        assert second.returncode == 0, out
    finally:
        publisher.close()
        if first.poll() is None:
            first.kill()
    assert stored(stack) == 2 * len(messages)
    assert distinct_messages(stack) == len(messages)


def _round_trip(stack: Stack) -> bool:
    """The gateway is up once a probe device's message comes through (its rows are removed)."""
    with Publisher(stack.broker.target) as pub:
        pub.publish(device_messages(stack.tenant, ["probe"], per_device=1))
    if not wait_until(lambda: stack.count() > 0, timeout=1):
        return False
    with stack.connect() as conn:
        conn.execute("DELETE FROM readings WHERE device_id = 'probe'")
    return True


def test_database_outage_mid_stream_loses_nothing_and_acks_nothing(stack: Stack) -> None:
    devices = [f"wh-{i}" for i in range(4)]
    stack.register(*devices)
    messages = device_messages(stack.tenant, devices, per_device=400)
    with running_gateway(stack) as gw, Publisher(stack.broker.target) as pub:
        sender = threading.Thread(target=pub.publish, args=(messages,), kwargs={"rate": 800.0})
        sender.start()
        assert wait_until(lambda: gw.totals["stored"] >= len(messages) // 2, timeout=30)
        with stack.pg.outage(stack.database_url):
            assert wait_until(lambda: gw.metrics.db_errors._value.get() > 0, timeout=10)
            # A batch whose COMMIT reached the server just before the cut is stored and may be
            # acknowledged; the first failed write means every earlier batch is counted, so the
            # count is taken only from then on.
            acked_before = gw.totals["acked"]
            wait_until(lambda: False, timeout=1.5)
            assert gw.totals["acked"] == acked_before, "acknowledged while the database was down"
        sender.join(60)
        assert wait_until(lambda: stack.count() >= 2 * len(messages), timeout=60), stack.count()
    assert stack.count() == 2 * len(messages)
    assert distinct_messages(stack) == len(messages)
