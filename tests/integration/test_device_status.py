"""Device status follows the last will and the inactivity timeout."""

from __future__ import annotations

import socket
import threading

import pytest

from gateway.mqtt import connect_kwargs, new_client
from telemetry.contract.topics import status_topic, telemetry_topic
from tests.support import Publisher, Stack, running_gateway, telemetry, unique, wait_until

pytestmark = pytest.mark.integration


def status_of(stack: Stack, device: str) -> tuple[bool, object] | None:
    with stack.connect() as conn:
        row = conn.execute("SELECT online, last_seen FROM device_status WHERE device_id = %s",
                           (device,)).fetchone()
    return (row[0], row[1]) if row else None


def test_last_will_marks_a_device_offline(stack: Stack) -> None:
    stack.register("veh-1", kind="vehicle")
    with running_gateway(stack):
        device = new_client(stack.broker.target, unique("veh-1"), persistent=False)
        device.will_set(status_topic(stack.tenant, "veh-1"), b'{"state":"offline"}', qos=1)
        connected = threading.Event()
        device.on_connect = lambda *_: connected.set()
        device.connect(**connect_kwargs(stack.broker.target, persistent=False,  # type: ignore[arg-type]
                                        session_expiry_s=0, keepalive=5))
        device.loop_start()
        assert connected.wait(10)
        device.publish(status_topic(stack.tenant, "veh-1"), b'{"state":"online"}', qos=1
                       ).wait_for_publish(10)
        device.publish(telemetry_topic(stack.tenant, "veh-1"),
                       telemetry(1, 0, {"lat": 31.2, "lon": 121.5}), qos=1).wait_for_publish(10)
        assert wait_until(lambda: (status_of(stack, "veh-1") or (False,))[0] is True)

        device.loop_stop()
        sock = device.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the connection drops without a DISCONNECT: will fires
        sock.close()
        assert wait_until(lambda: (status_of(stack, "veh-1") or (True,))[0] is False, timeout=20)


def test_silent_device_goes_offline_after_the_timeout(stack: Stack) -> None:
    stack.register("wh-quiet", "wh-chatty")
    config = stack.gateway_config(device_offline_after_s=1.0)
    with running_gateway(stack, config), Publisher(stack.broker.target) as pub:
        pub.publish([(telemetry_topic(stack.tenant, "wh-quiet"), telemetry(1, 0, {"temp_c": 4.0}))])
        assert wait_until(lambda: status_of(stack, "wh-quiet") is not None)
        assert status_of(stack, "wh-quiet")[0] is True  # type: ignore[index]
        seq = 0

        def chatty_online() -> bool:
            nonlocal seq
            seq += 1
            pub.publish([(telemetry_topic(stack.tenant, "wh-chatty"),
                          telemetry(1, seq, {"temp_c": 4.0}))])
            return (status_of(stack, "wh-quiet") or (True,))[0] is False

        assert wait_until(chatty_online, timeout=15, interval=0.2)
        assert status_of(stack, "wh-chatty")[0] is True  # type: ignore[index]
