"""The ``pledgewatch`` command line (Typer)."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from gateway import MAX_SLOTS
from pledgewatch.cli import accounts, financing, ledger, lending, operators, rating, reconcile
from pledgewatch.cli.bench import register_bench
from pledgewatch.cli.common import (
    check_broker,
    check_database,
    clean_failures,
    fail,
    one_line,
    settings_or_exit,
    stop_on_signals,
    warn,
)

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
    """Apply pending database migrations (TimescaleDB features when the extension can be used;
    plain PostgreSQL, with a warning, when it is not installed, not preloaded or not allowed)."""
    import psycopg

    from pledgewatch.runtime import start_database, time_series_options
    from schema.migrate import apply_all
    from schema.timescale import probe

    settings = settings_or_exit()
    with ExitStack() as stack, clean_failures():
        url = start_database(settings, stack)
        check_database(url)
        applied = apply_all(url, time_series_options(settings), on_warning=warn)
        with psycopg.connect(url) as conn:
            caps = probe(conn)
    typer.echo(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    typer.echo(f"storage: {caps.backend}")


def parse_slots(text: str) -> int:
    """``--slots``: a whole number from 1 to 64, or a one-line error (exit 2)."""
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_SLOTS:
        raise fail(f"--slots must be a whole number from 1 to {MAX_SLOTS} (got {text!r})")
    return int(value)


@app.command()
def gateway(
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off)")] = None,
    slots: Annotated[str | None, typer.Option(
        metavar="N", help="subscription slots shared by every gateway with this client id "
        f"(1-{MAX_SLOTS}; default PLEDGEWATCH_GATEWAY_SLOTS, 1); more than 1 needs "
        "PLEDGEWATCH_MQTT_SHARED_GROUP")] = None,
) -> None:
    """Run the MQTT ingestion gateway until SIGINT/SIGTERM. Gateways with the same client id share
    the slots: each holds its fair share, and takes over the slots of one that dies."""
    from pledgewatch.settings import SLOTS_NEED_A_GROUP

    settings = settings_or_exit()
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise fail("--metrics-port must be between 0 and 65535")
    if slots is not None:
        settings = settings.model_copy(update={"gateway_slots": parse_slots(slots)})
    if settings.gateway_slots > 1 and settings.mqtt_shared_group is None:
        raise fail(SLOTS_NEED_A_GROUP.format(slots=settings.gateway_slots))
    from prometheus_client import start_http_server

    from gateway.consumer import Gateway
    from gateway.metrics import GatewayMetrics
    from gateway.writer_process import WriterGone
    from pledgewatch.runtime import gateway_config, start_services
    from pledgewatch.serve import bind_problem
    from schema.migrate import require_migrated

    with ExitStack() as stack:
        with clean_failures():
            endpoints = start_services(settings, stack)
            require_migrated(endpoints.database_url)
        metrics = GatewayMetrics()
        port = settings.metrics_port if metrics_port is None else metrics_port
        if port:
            try:
                start_http_server(port, addr=settings.http_host, registry=metrics.registry)
            except OSError as exc:
                raise fail(f"cannot serve metrics: {bind_problem(exc, settings.http_host, port)}"
                           ) from None
            typer.echo(f"metrics on http://{settings.http_host}:{port}/metrics")
        if not endpoints.embedded_broker:
            check_broker(endpoints.mqtt)
        gw = Gateway(endpoints.database_url, endpoints.mqtt, gateway_config(settings), metrics)
        stop_on_signals(gw.stop)
        typer.echo(f"gateway {settings.mqtt_client_id}: {endpoints.mqtt.url} -> store "
                   f"({settings.gateway_slots} slot(s))")
        try:
            gw.run()
        except WriterGone as exc:
            raise fail(f"{exc}; unacknowledged messages stay with the broker", 1) from None


RateOption = Annotated[float, typer.Option(min=0.01, max=100, help="messages/s per device")]
DurationOption = Annotated[float | None, typer.Option(min=1, help="stop after N seconds")]
ScenarioOption = Annotated[str, typer.Option(help="simulator scenario")]


def check_scenario(scenario: str, *, prices: bool = False) -> None:
    """Device scenarios for the simulator; the demo also takes price scenarios (price-crash)."""
    from firmware_sim.market import PRICE_SCENARIOS
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
    supply_chain: Annotated[bool, typer.Option(
        help="also run the supply chain: the steelworks' payables passed down to tier 3 and "
             "financed, and a truck's delivery proven by telemetry beside one that never "
             "leaves (6 more devices)")] = True,
) -> None:
    """Run the whole platform (store, broker, gateway, HTTP, simulated fleet) until Ctrl-C."""
    from api.password_policy import WeakPassword, check_password
    from gateway.mqtt import parse_mqtt_url
    from pledgewatch.demo import OFFICER as DEMO_OFFICER
    from pledgewatch.demo import DemoOptions, run_demo

    settings = settings_or_exit()
    check_scenario(scenario, prices=True)
    if settings.demo_password is not None:
        try:
            check_password(settings.demo_password.get_secret_value(), DEMO_OFFICER)
        except WeakPassword as exc:
            raise fail(f"PLEDGEWATCH_DEMO_PASSWORD: {exc}") from None
    if settings.database_url is not None:
        check_database(settings.database_url)
    if settings.mqtt_url is not None:
        check_broker(parse_mqtt_url(settings.mqtt_url, protocol=settings.mqtt_protocol))
    with clean_failures():
        code = run_demo(settings, DemoOptions(devices, rate, duration, scenario,
                                                 supply_chain=supply_chain))
    raise typer.Exit(code)


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
    from gateway.mqtt import parse_mqtt_url
    from pledgewatch.sim import SimError, run_sim

    settings = settings_or_exit()
    check_scenario(scenario)
    if settings.mqtt_url is not None:
        check_broker(parse_mqtt_url(settings.mqtt_url, protocol=settings.mqtt_protocol))
    try:
        code = run_sim(settings, devices=devices, rate=rate, duration=duration,
                       scenario=scenario, tenant=tenant, register=register)
    except SimError as exc:
        raise fail(one_line(exc)) from None
    raise typer.Exit(code)


@app.command()
def serve() -> None:
    """Run the API, the dashboard, live events and the alert notifier (webhooks + MQTT) until
    Ctrl-C. The configured port must be free (PLEDGEWATCH_HTTP_PORT=0: any free port)."""
    import uvicorn

    from gateway.mqtt import parse_mqtt_url
    from pledgewatch.http import create_app
    from pledgewatch.notifier_hooks import notifier_hooks, notifier_target
    from pledgewatch.runtime import running_embedded_broker, start_database
    from pledgewatch.serve import bind_socket
    from pledgewatch.settings import SettingsError
    from schema.migrate import require_migrated

    settings = settings_or_exit()
    with ExitStack() as stack:
        with clean_failures():
            url = start_database(settings, stack)
            check_database(url)
            require_migrated(url)
            sock = stack.enter_context(bind_socket(settings.http_host, settings.http_port))
        broker = settings.mqtt_url or running_embedded_broker(settings)
        mqtt = None if broker is None else parse_mqtt_url(
            broker, protocol=settings.mqtt_protocol if settings.mqtt_url else "3.1.1")
        alerts_to = notifier_target(settings, mqtt) if settings.notifier_enabled else None
        if alerts_to is not None:
            check_broker(alerts_to)
        on_start, on_stop = notifier_hooks(settings, url, mqtt)
        try:
            app = create_app(url, settings=settings, on_start=on_start, on_stop=on_stop)
        except SettingsError as exc:
            raise fail(str(exc)) from None
        base = f"http://{settings.http_host}:{sock.getsockname()[1]}"
        typer.echo(f"api: {base}/docs  dashboard: {base}/dashboard/"
                   + ("" if mqtt else "  (no broker: alerts go to webhooks only)"), err=True)
        server = uvicorn.Server(uvicorn.Config(
            app, host=settings.http_host, port=sock.getsockname()[1],
            log_level=settings.log_level.lower(), timeout_graceful_shutdown=2))
        # uvicorn raises the SIGTERM it handled again once it has shut down: a no-op handler
        # lets this return, so the stack stops what it started (an embedded PostgreSQL).
        signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
        server.run(sockets=[sock])
        if not server.started:
            raise fail("the HTTP server did not start (its log above says why)")


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str | None, typer.Argument(
        help="device id (slug), also its MQTT username")] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant slug the device belongs to")] = None,
    kind: Annotated[str, typer.Option(help="warehouse, line, vehicle, ...")] = "warehouse",
    bound_to: Annotated[str | None, typer.Option(help="lot, site or vehicle it watches")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="CSV of devices (device_id,tenant,kind): all registered at once")] = None,
    credentials_out: Annotated[Path | None, typer.Option(
        help="with --file: a new file (0600) for device_id,username,password")] = None,
    passwd_out: Annotated[Path | None, typer.Option(
        help="with --file: a new file (0600) of Mosquitto password-file lines")] = None,
) -> None:
    """Register a device and print its MQTT password once (only a hash is stored); or, with
    --file, a whole fleet, its passwords written once to --credentials-out."""
    if file is not None:
        if device_id is not None or tenant is not None or bound_to is not None:
            raise fail("--file takes the devices from the file: no DEVICE_ID, --tenant or "
                       "--bound-to")
        if credentials_out is None:
            raise fail("--file needs --credentials-out PATH (where the passwords are written once)")
        _devices_add_file(file, credentials_out, passwd_out)
        return
    if device_id is None or tenant is None:
        raise fail("give DEVICE_ID and --tenant, or --file devices.csv")
    if credentials_out is not None or passwd_out is not None:
        raise fail("--credentials-out and --passwd-out go with --file")
    import psycopg

    from pledgewatch.runtime import start_database
    from telemetry.provisioning import DeviceError, provision

    settings = settings_or_exit()
    with ExitStack() as stack, clean_failures():
        url = start_database(settings, stack)
        try:
            with psycopg.connect(url) as conn:
                password = provision(conn, device_id, tenant, kind, bound_to)
        except DeviceError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"device {device_id} (tenant {tenant}) registered")
    typer.echo(f"MQTT username: {device_id}")
    typer.echo(f"MQTT password: {password}   (shown once; add it to the broker's password file)")


def _devices_add_file(file: Path, credentials_out: Path, passwd_out: Path | None) -> None:
    """Validate the file, refuse ids already registered, hash across the cores, write the
    secret files (new, 0600), then register every device in one transaction; if that fails the
    secret files are removed again: nothing is written."""
    outputs = [credentials_out] + ([passwd_out] if passwd_out else [])
    if passwd_out is not None and passwd_out.absolute() == credentials_out.absolute():
        raise fail("--passwd-out and --credentials-out must be different files")
    for out in outputs:
        if out.exists() or out.is_symlink():
            raise fail(f"{out} exists; refusing to overwrite it")
    import psycopg

    from pledgewatch.runtime import start_database
    from telemetry.provisioning import (
        DeviceError,
        create_secret_file,
        existing_devices,
        issue_credentials,
        provision_many,
        read_devices_csv,
    )

    settings = settings_or_exit()
    written: list[Path] = []
    try:
        devices = read_devices_csv(file)
        with ExitStack() as stack, clean_failures():
            url = start_database(settings, stack)
            with psycopg.connect(url) as conn:
                taken = existing_devices(conn, devices)
                if taken:
                    more = " and more" if len(taken) > 10 else ""
                    raise DeviceError(f"already registered (with credentials, or another tenant):"
                                      f" {', '.join(taken[:10])}{more}; nothing was registered")
                started = time.perf_counter()
                credentials = issue_credentials([d.device_id for d in devices])
                hashed = time.perf_counter() - started
                create_secret_file(credentials_out, ["device_id,username,password"] + [
                    f"{c.device_id},{c.device_id},{c.password}" for c in credentials])
                written.append(credentials_out)
                if passwd_out is not None:
                    create_secret_file(passwd_out, [c.broker_line for c in credentials])
                    written.append(passwd_out)
                count = provision_many(conn, devices, credentials)
        written.clear()
    except DeviceError as exc:
        raise fail(str(exc)) from None
    finally:
        for path in written:  # not registered: these passwords must not be used
            path.unlink(missing_ok=True)
    typer.echo(f"{count} device(s) registered; hashing took {hashed:.1f}s "
               f"({hashed / count * 1000:.1f} ms a device)")
    typer.echo(f"MQTT credentials written once to {credentials_out} (0600); only hashes are stored")
    if passwd_out is not None:
        typer.echo(f"Mosquitto password-file lines in {passwd_out}: append them to the broker's "
                   "password file and reload it (SIGHUP)")


register_bench(app)
lending.register(app)
financing.register(app)
reconcile.register(app)
ledger.register(app)
accounts.register(app)
operators.register(app)
rating.register(app)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
