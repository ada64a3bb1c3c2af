"""The ``pledgewatch`` command line (Typer)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import Annotated

import psycopg
import typer
import uvicorn
from prometheus_client import start_http_server

from firmware_sim.market import PRICE_SCENARIOS
from firmware_sim.scenarios import SCENARIOS
from gateway.consumer import Gateway
from gateway.metrics import GatewayMetrics
from gateway.mqtt import parse_mqtt_url
from gateway.writer_process import WriterGone
from pledgewatch.cli import accounts, lending
from pledgewatch.cli.bench import register_bench
from pledgewatch.cli.common import fail, settings_or_exit, stop_on_signals
from pledgewatch.demo import DemoOptions, run_demo
from pledgewatch.http import create_app
from pledgewatch.notifier_hooks import notifier_hooks
from pledgewatch.runtime import (
    gateway_config,
    running_embedded_broker,
    start_database,
    start_services,
    time_series_options,
)
from pledgewatch.settings import SettingsError
from pledgewatch.sim import SimError, run_sim
from schema.migrate import NotMigratedError, apply_all, require_migrated
from schema.timescale import probe
from telemetry.provisioning import DeviceError, provision

app = typer.Typer(
    help="PledgeWatch: IoT collateral monitoring. Unset PLEDGEWATCH_DATABASE_URL / "
    "PLEDGEWATCH_MQTT_URL mean embedded PostgreSQL / MQTT broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="Register devices and issue their MQTT credentials.",
                          no_args_is_help=True)
app.add_typer(devices_app, name="devices")


@app.command()
def migrate() -> None:
    """Apply pending database migrations (TimescaleDB features when the extension exists)."""
    settings = settings_or_exit()
    with ExitStack() as stack:
        try:
            url = start_database(settings, stack)
            applied = apply_all(url, time_series_options(settings))
            with psycopg.connect(url) as conn:
                caps = probe(conn)
        except psycopg.OperationalError as exc:
            raise fail(f"cannot reach the database: {str(exc).strip()}") from None
    typer.echo(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    typer.echo(f"storage: {caps.backend}")


@app.command()
def gateway(
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off)")] = None,
) -> None:
    """Run the MQTT ingestion gateway until SIGINT/SIGTERM."""
    settings = settings_or_exit()
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise fail("--metrics-port must be between 0 and 65535")
    with ExitStack() as stack:
        endpoints = start_services(settings, stack)
        try:
            require_migrated(endpoints.database_url)
        except NotMigratedError as exc:
            raise fail(str(exc)) from None
        except psycopg.OperationalError as exc:
            raise fail(f"cannot reach the database: {str(exc).strip()}") from None
        metrics = GatewayMetrics()
        port = settings.metrics_port if metrics_port is None else metrics_port
        if port:
            start_http_server(port, addr=settings.http_host, registry=metrics.registry)
            typer.echo(f"metrics on http://{settings.http_host}:{port}/metrics")
        gw = Gateway(endpoints.database_url, endpoints.mqtt, gateway_config(settings), metrics)
        stop_on_signals(gw.stop)
        typer.echo(f"gateway {settings.mqtt_client_id}: {endpoints.mqtt.url} -> store")
        try:
            gw.run()
        except WriterGone as exc:
            raise fail(f"{exc}; unacknowledged messages stay with the broker", 1) from None


RateOption = Annotated[float, typer.Option(min=0.01, max=100, help="messages/s per device")]
DurationOption = Annotated[float | None, typer.Option(min=1, help="stop after N seconds")]
ScenarioOption = Annotated[str, typer.Option(help="simulator scenario")]


def check_scenario(scenario: str, *, prices: bool = False) -> None:
    """Device scenarios for the simulator; the demo also takes price scenarios (price-crash)."""
    known = set(SCENARIOS) | (set(PRICE_SCENARIOS) - {"steady"} if prices else set())
    if scenario not in known:
        raise fail(f"unknown scenario {scenario!r}; choose from {', '.join(sorted(known))}")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1, max=5000, help="simulated devices")] = 30,
    rate: RateOption = 1.0,
    duration: DurationOption = None,
    scenario: ScenarioOption = "normal",
) -> None:
    """Run the whole platform (store, broker, gateway, HTTP, simulated fleet) until Ctrl-C."""
    settings = settings_or_exit()
    check_scenario(scenario, prices=True)
    raise typer.Exit(run_demo(settings, DemoOptions(devices, rate, duration, scenario)))


@app.command()
def sim(
    devices: Annotated[int, typer.Option(min=1, max=20000, help="simulated devices")] = 10,
    rate: RateOption = 1.0,
    duration: DurationOption = None,
    scenario: ScenarioOption = "normal",
    tenant: Annotated[str, typer.Option(help="tenant of the simulated devices")] = "demo",
    register: Annotated[bool, typer.Option(help="register the devices in the store first")] = True,
) -> None:
    """Publish simulated telemetry over MQTT until Ctrl-C (or --duration)."""
    settings = settings_or_exit()
    check_scenario(scenario)
    try:
        code = run_sim(settings, devices=devices, rate=rate, duration=duration,
                       scenario=scenario, tenant=tenant, register=register)
    except SimError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def serve() -> None:
    """Run the API, the dashboard, live events and the alert notifier (webhooks + MQTT) until
    Ctrl-C."""
    settings = settings_or_exit()
    with ExitStack() as stack:
        url = start_database(settings, stack)
        try:
            require_migrated(url)
        except NotMigratedError as exc:
            raise fail(str(exc)) from None
        broker = settings.mqtt_url or running_embedded_broker(settings)
        mqtt = None if broker is None else parse_mqtt_url(
            broker, protocol=settings.mqtt_protocol if settings.mqtt_url else "3.1.1")
        on_start, on_stop = notifier_hooks(settings, url, mqtt)
        try:
            app = create_app(url, settings=settings, on_start=on_start, on_stop=on_stop)
        except SettingsError as exc:
            raise fail(str(exc)) from None
        typer.echo(f"api: http://{settings.http_host}:{settings.http_port}/docs  dashboard: "
                   f"http://{settings.http_host}:{settings.http_port}/dashboard/"
                   + ("" if mqtt else "  (no broker: alerts go to webhooks only)"), err=True)
        uvicorn.run(app, host=settings.http_host, port=settings.http_port,
                    log_level=settings.log_level.lower(), timeout_graceful_shutdown=2)


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Argument(help="device id (slug), also its MQTT username")],
    tenant: Annotated[str, typer.Option(help="tenant slug the device belongs to")],
    kind: Annotated[str, typer.Option(help="warehouse, line, vehicle, ...")] = "warehouse",
    bound_to: Annotated[str | None, typer.Option(help="lot, site or vehicle it watches")] = None,
) -> None:
    """Register a device and print its MQTT password once (only a hash is stored)."""
    settings = settings_or_exit()
    with ExitStack() as stack:
        url = start_database(settings, stack)
        try:
            with psycopg.connect(url) as conn:
                password = provision(conn, device_id, tenant, kind, bound_to)
        except DeviceError as exc:
            raise fail(str(exc)) from None
        except psycopg.OperationalError as exc:
            raise fail(f"cannot reach the database: {str(exc).strip()}") from None
    typer.echo(f"device {device_id} (tenant {tenant}) registered")
    typer.echo(f"MQTT username: {device_id}")
    typer.echo(f"MQTT password: {password}   (shown once; add it to the broker's password file)")


register_bench(app)
lending.register(app)
accounts.register(app)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
