"""Store confirmations over the wire: simulated devices (aiomqtt), the real gateway, a real broker
and PostgreSQL. A device's message leaves its outbox only once the store has it, so a message the
store did not take (here: refused while the device was not yet registered) comes back from the
device's outbox until it is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_sim.device_models import DeviceSpec, make_fleet
from firmware_sim.fleet import FleetStats, run_fleet
from tests.support import Stack, running_gateway

pytestmark = pytest.mark.integration


def _run(stack: Stack, specs: list[DeviceSpec], tmp_path: Path, seconds: float,
         confirm_timeout_s: float, register_after_s: float | None = None) -> FleetStats:
    target = stack.broker.target

    async def main() -> FleetStats:
        fleet = asyncio.create_task(run_fleet(
            specs, host=target.host, port=target.port, rate_hz=20.0, duration_s=seconds,
            state_dir=tmp_path, protocol=target.protocol, drain_timeout_s=10.0,
            confirm_timeout_s=confirm_timeout_s))
        if register_after_s is not None:
            await asyncio.sleep(register_after_s)
            await asyncio.to_thread(stack.register, *(s.device_id for s in specs))
        return await fleet

    return asyncio.run(main())


def _stored(stack: Stack, stats: FleetStats) -> tuple[int, int]:
    with stack.connect() as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (device_id, boot, seq)), count(DISTINCT (device_id, boot, seq,"
            " metric)) - count(*) FROM readings WHERE device_id = ANY(%s)",
            (list(stats.devices),)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_every_message_leaves_the_outbox_on_the_stores_confirmation(stack: Stack,
                                                                   tmp_path: Path) -> None:
    specs = make_fleet(3, tenant=stack.tenant, seed=11)
    stack.register(*(s.device_id for s in specs))
    with running_gateway(stack) as gw:
        stats = _run(stack, specs, tmp_path, seconds=2.0, confirm_timeout_s=30.0)
    assert stats.published > 60
    assert stats.confirmed == stats.published, stats
    assert stats.pending == 0 and stats.resent_unconfirmed == 0
    assert gw.metrics.confirmations._value.get() > 0
    assert _stored(stack, stats) == (stats.published, 0)


def test_a_message_the_store_refused_is_resent_until_it_is_stored_once(stack: Stack,
                                                                      tmp_path: Path) -> None:
    specs = make_fleet(2, tenant=stack.tenant, seed=12)
    with running_gateway(stack, stack.gateway_config(registry_refresh_s=0.2)):
        # Until a device's first confirmation, an unconfirmed message is released after the
        # timeout (a gateway that never confirms must not cause endless resends), so the
        # timeout must outlast registration plus the registry refresh with room for a loaded
        # machine: with 1 s against 0.8 s + 0.2 s, the first messages were sometimes released.
        stats = _run(stack, specs, tmp_path, seconds=2.5, confirm_timeout_s=3.0,
                     register_after_s=0.5)
    with stack.connect() as conn:
        refused = conn.execute("SELECT count(*) FROM dead_letters WHERE reason = 'unknown_device'"
                               " AND topic LIKE %s", (f"%/{stack.tenant}/%",)).fetchone()
    assert refused is not None and refused[0] > 0, "the first messages were refused"
    assert stats.resent_unconfirmed > 0, stats
    assert stats.confirmed == stats.published and stats.pending == 0, stats
    assert _stored(stack, stats) == (stats.published, 0)
