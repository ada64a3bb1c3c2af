"""The gateway exports Mosquitto's queue depth ($SYS/broker/store/messages/count) for the
`PledgewatchBrokerQueue*` alert rules: a real mosquitto with the project's config and ACL (the
gateway account may read $SYS), publishing its statistics every second."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mqtt import connected_client, parse_mqtt_url
from pledgewatch.broker.mosquitto import GATEWAY_USER, Mosquitto, mosquitto_binary
from tests.support import BrokerUnderTest, PgServer, Stack, running_gateway, unique, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.once_per_run,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Debian's mosquitto"),
]


def test_the_gateway_exports_the_brokers_queue_depth(pg: PgServer, migrated_db: str,
                                                     tmp_path: Path) -> None:
    users = {GATEWAY_USER: "gw-secret-stats-1"}
    with Mosquitto(tmp_path / "mosquitto", users=users, overrides={"sys_interval": "1"}) as broker:
        target = parse_mqtt_url(broker.url(GATEWAY_USER))
        stack = Stack(pg, migrated_db, BrokerUnderTest("mosquitto", target, 1000))
        with connected_client(target, unique("gw-pub"), persistent=False) as client:
            for i in range(5):  # retained messages stay in the broker's store
                client.publish(f"pw/v1/{stack.tenant}/d{i}/stored", b'{"boot":1,"ranges":[]}',
                               qos=1, retain=True).wait_for_publish(5)
        with running_gateway(stack, stack.gateway_config(broker_stats=True)) as gw:
            def depth() -> float:
                return gw.metrics.registry.get_sample_value(
                    "pledgewatch_broker_store_messages") or 0.0

            assert wait_until(lambda: depth() >= 5, timeout=10), depth()
            assert gw.connected.is_set()  # the $SYS subscription did not cost the connection
