"""`pledgewatch sim`: a simulated fleet against the configured (or running embedded) broker."""

from __future__ import annotations

import asyncio
import signal
from contextlib import ExitStack

import psycopg

from firmware_sim.device_models import DeviceSpec, make_fleet
from firmware_sim.fleet import FleetStats, run_fleet
from gateway.mqtt import MqttTarget, parse_mqtt_url
from pledgewatch.runtime import running_embedded_broker, start_database
from pledgewatch.settings import Settings
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import SLUG
from telemetry.queries import register_devices


class SimError(RuntimeError):
    pass


def run_sim(settings: Settings, *, devices: int, rate: float, duration: float | None,
            scenario: str, tenant: str, register: bool) -> int:
    if not SLUG.fullmatch(tenant):
        raise SimError(f"tenant {tenant!r} must be 1-64 letters, digits, '.', '_' or '-'")
    url = settings.mqtt_url or running_embedded_broker(settings)
    if url is None:
        raise SimError("no broker: set PLEDGEWATCH_MQTT_URL, or start `pledgewatch gateway` "
                       "(it starts the embedded broker) first")
    protocol = settings.mqtt_protocol if settings.mqtt_url else "3.1.1"
    target = parse_mqtt_url(url, protocol)
    fleet = make_fleet(devices, tenant=tenant)
    if register:
        with ExitStack() as stack:
            database_url = start_database(settings, stack)
            try:
                with psycopg.connect(database_url) as conn:
                    new = register_devices(conn, [DeviceInfo(s.device_id, s.tenant, s.kind)
                                                  for s in fleet])
            except psycopg.Error as exc:
                raise SimError(f"could not register devices: {str(exc).strip()}") from None
        print(f"registered {new} new device(s) of tenant {tenant}", flush=True)
    print(f"simulating {devices} device(s) at {rate:g} msg/s each on {target.url} "
          f"(scenario {scenario}); Ctrl-C stops", flush=True)
    stats = asyncio.run(_run(settings, target, fleet, rate, duration, scenario))
    print(f"published {stats.published:,}, acknowledged {stats.acknowledged:,}, "
          f"resent {stats.resent:,}, dropped {stats.dropped:,}", flush=True)
    return 0 if stats.dropped == 0 else 1


async def _run(settings: Settings, target: MqttTarget, fleet: list[DeviceSpec], rate: float,
               duration: float | None, scenario: str) -> FleetStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def progress(stats: FleetStats) -> None:
        print(f"published {stats.published:,}  acknowledged {stats.acknowledged:,}  "
              f"pending {stats.pending:,}", flush=True)

    return await run_fleet(
        fleet, host=target.host, port=target.port, username=target.username,
        password=target.password, rate_hz=rate, duration_s=duration, scenario=scenario,
        state_dir=settings.state_dir, protocol=target.protocol, stop=stop,
        on_progress=progress, progress_every_s=5.0,
    )
