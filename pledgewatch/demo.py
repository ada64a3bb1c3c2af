"""`make demo`: store, broker, gateway, HTTP server and a simulated fleet in one process."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial

import psycopg

from api import accounts
from firmware_sim.device_models import DeviceSpec, make_fleet
from firmware_sim.fleet import FleetStats, run_fleet
from firmware_sim.market import PRICE_SCENARIOS, PriceTick, price_series
from gateway.consumer import Gateway
from gateway.metrics import GatewayMetrics
from lending.domain.model import ReleaseStatus
from lending.engine import LendingEngine, start_engine_thread, utcnow
from lending.financing import FinancingSweeper
from lending.operations import (
    LendingError,
    advance_release,
    load_portfolio,
    post_prices,
    request_release,
)
from lending.operators import assign_lots, ensure_operator
from lending.portfolio_file import PortfolioIn
from lending.trade import judge_shipment
from pledgewatch import demo_delivery
from pledgewatch.demo_chain import PROGRAMME, ChainActivity
from pledgewatch.demo_portfolio import COMMODITIES, CORE, TIGHT_FACILITY, demo_portfolio, price_points
from pledgewatch.http import create_app
from pledgewatch.notifier_hooks import notifier_hooks
from pledgewatch.runtime import (
    Endpoints,
    gateway_config,
    kept_secret,
    start_ledger,
    start_services,
    time_series_options,
)
from pledgewatch.serve import HttpServer
from pledgewatch.settings import Settings
from schema.migrate import apply_all
from schema.timescale import probe
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import counts, register_devices

log = logging.getLogger(__name__)
TENANT = "demo"
RELEASE_FRACTION = 0.25  # what firmware_sim's `release` scenario takes out by default
OFFICER = "officer"
OPERATOR = ("op-bonded", "Bonded Warehouse Logistics Co.")  # stores every warehouse lot
PASSWORD_FILE = "demo_officer_password"


@dataclass
class DemoOptions:
    devices: int = 30
    rate_hz: float = 1.0
    duration_s: float | None = None
    scenario: str = "normal"
    price_every_s: float = 5.0
    incident_at_s: float | None = None  # None: settings.demo_incident_at_s, else the default
    supply_chain: bool = True  # the chain's vouchers and the delivery stories (pledgewatch.demo_*)

    @property
    def device_scenario(self) -> str:
        """Price scenarios move prices, not devices: the fleet then trades normally."""
        return "normal" if self.scenario in PRICE_SCENARIOS else self.scenario


def _incident_at_s(options: DemoOptions, settings: Settings) -> float | None:
    if options.incident_at_s is not None:
        return options.incident_at_s
    return settings.demo_incident_at_s


def _say(text: str) -> None:
    print(text, flush=True)


def _prepare_store(endpoints: Endpoints, options: DemoOptions,
                   settings: Settings) -> tuple[list[DeviceInfo], list[DeviceSpec]]:
    applied = apply_all(endpoints.database_url, time_series_options(settings),
                        on_warning=lambda message: print(f"warning: {message}", file=sys.stderr,
                                                         flush=True))
    fleet = make_fleet(options.devices, tenant=TENANT)
    infos = [DeviceInfo(s.device_id, s.tenant, s.kind) for s in fleet]
    with psycopg.connect(endpoints.database_url) as conn:
        new = register_devices(conn, infos)
        before = counts(conn)
        backend = probe(conn).backend
        portfolio = demo_portfolio(fleet, utcnow(), TENANT)
        loaded = load_portfolio(conn, portfolio, utcnow())
        stored = assign_demo_operator(conn, portfolio)
        if options.scenario == "release":
            _release_before_incident(conn, portfolio)
    delivery: list[DeviceSpec] = []
    if options.supply_chain:
        with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
            delivery = demo_delivery.prepare(conn, TENANT, utcnow())
    _say(f"store: {backend} ({'embedded' if endpoints.embedded_db else 'external'}), "
         f"{len(applied)} migration(s) applied, {new} new device(s), "
         f"{before['readings']:,} readings already stored")
    _say(f"portfolio: {loaded.borrowers} borrowers (a core steelworks, its suppliers and "
         f"distributors), {loaded.facilities} facilities, {loaded.lots} pledged lots")
    if stored:
        _say(f"warehouse operator: {OPERATOR[0]} ({OPERATOR[1]}) stores {stored} lot(s); "
             f"`pledgewatch api-keys issue --operator {OPERATOR[0]} --name …` gives it a key")
    return infos, delivery


def assign_demo_operator(conn: psycopg.Connection, portfolio: PortfolioIn) -> int:
    """One warehouse operator holds every warehouse lot (vehicles are in no warehouse)."""
    lots = [lot.id for lot in portfolio.lots if lot.vehicle is None]
    ensure_operator(conn, *OPERATOR)
    if lots:
        assign_lots(conn, OPERATOR[0], lots)
    return len(lots)


def _release_before_incident(conn: psycopg.Connection, portfolio: PortfolioIn) -> None:
    """The `release` scenario is a legitimate redemption: every warehouse lot gets an executed
    release order for the share of goods its device will report leaving."""
    stamp = int(time.time())
    for lot in portfolio.lots:
        if lot.vehicle is None:
            quantity = round(lot.declared_quantity * RELEASE_FRACTION)
            release_id = f"demo-{lot.id}-{stamp}"
            request_release(conn, release_id, lot.id, quantity, utcnow())
            advance_release(conn, release_id, ReleaseStatus.APPROVED, utcnow())
            advance_release(conn, release_id, ReleaseStatus.EXECUTED, utcnow())
    _say("release orders: one executed per warehouse lot (25 % of its goods may leave)")


def demo_password(settings: Settings) -> str:
    """``PLEDGEWATCH_DEMO_PASSWORD``, or a random password made on the first run and kept (0600)
    under the state directory, so the officer's log-in stays the same across restarts."""
    if settings.demo_password is not None:
        return settings.demo_password.get_secret_value()
    return kept_secret(settings.state_dir / PASSWORD_FILE, lambda: secrets.token_urlsafe(12))


def ensure_officer(database_url: str, password: str) -> None:
    """The demo's loan officer, created once; its password follows ``password`` on every start."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            accounts.create_user(conn, OFFICER, password, "officer")
        except LendingError:
            accounts.set_password(conn, OFFICER, password)


class PriceFeed:
    """Posts one live price per commodity every ``every_s`` seconds; under ``price-crash`` the
    steel price (held by the tightest facility) falls 35 % over three ticks, 30 s in."""

    def __init__(self, database_url: str, scenario: str, every_s: float) -> None:
        self.database_url, self.every_s = database_url, every_s
        start = utcnow()
        with psycopg.connect(database_url) as conn:  # continue from the stored history
            latest: dict[str, float] = dict(conn.execute(
                "SELECT DISTINCT ON (commodity) commodity, price FROM prices"
                " ORDER BY commodity, time DESC").fetchall())
        self.series: dict[str, list[PriceTick]] = {}
        for i, (name, spec) in enumerate(COMMODITIES.items()):
            crash = scenario == "price-crash" and name == "steel-coil"
            # A calm market moves ~1.5 % a day: scaled to the tick, not 0.5 % every few seconds
            # (which the haircut would read as a wildly volatile commodity).
            points = price_series(name, float(latest.get(name, spec["price"])), start=start,
                                  points=40, step_s=every_s, seed=100 + i,
                                  volatility=0.015 * math.sqrt(every_s / 86_400.0),
                                  crash_at=6 if crash else None, crash_fraction=0.35)
            self.series[name] = points
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="price-feed", daemon=True)

    def _run(self) -> None:
        step = 0
        while not self.stop.wait(self.every_s):
            step += 1
            ticks = [s[min(step, len(s) - 1)] for s in self.series.values()]
            points = price_points(ticks, at=utcnow())
            try:
                with psycopg.connect(self.database_url) as conn:
                    post_prices(conn, points)
            except psycopg.Error as exc:
                log.warning("price feed: %s", exc)

    def start(self) -> PriceFeed:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


class Progress:
    """Prints one line of live counters at most every ``every`` seconds."""

    def __init__(self, gateway: Gateway, engine: LendingEngine, every: float = 2.0) -> None:
        self.gateway, self.engine, self.every = gateway, engine, every
        self._last = (time.monotonic(), 0)

    def __call__(self, stats: FleetStats) -> None:
        now, stored = time.monotonic(), self.gateway.totals["stored"]
        last_t, last_stored = self._last
        if now - last_t < self.every and stats.pending:
            return
        rate = (stored - last_stored) / max(now - last_t, 1e-6)
        self._last = (now, stored)
        t = self.gateway.totals
        _say(f"published {stats.published:,}  acked by broker {stats.acknowledged:,}  "
             f"| gateway received {t['received']:,}  stored {stored:,} readings "
             f"({rate:,.0f}/s)  duplicates {t['duplicates']:,}  dead letters {t['dead_letters']:,}"
             f"  | lending: {self.engine.stats.snapshots:,} limit changes, "
             f"{self.engine.stats.alerts_raised:,} alerts raised")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Start everything, run the fleet, and on SIGINT/SIGTERM at any point unwind cleanly."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run_demo(settings, options)
    except KeyboardInterrupt:
        _say("interrupted; everything started was stopped")
        return 130


def _run_demo(settings: Settings, options: DemoOptions) -> int:
    with ExitStack() as stack:
        _say("starting PledgeWatch demo (Ctrl-C stops everything cleanly)")
        endpoints = start_services(settings, stack)
        _say(f"broker: {endpoints.mqtt.url} ({'embedded' if endpoints.embedded_broker else 'external'})")
        fleet_infos, delivery = _prepare_store(endpoints, options, settings)

        metrics = GatewayMetrics()
        gw = Gateway(endpoints.database_url, endpoints.mqtt, gateway_config(settings), metrics)
        gw_thread = threading.Thread(target=gw.run, name="gateway")
        gw_thread.start()
        stack.callback(gw_thread.join, 30)
        stack.callback(gw.stop)
        if not gw.subscribed.wait(30):
            _say("error: the gateway could not subscribe to the broker")
            return 1

        engine = LendingEngine(endpoints.database_url, tick_s=10.0)
        engine_stop = threading.Event()
        engine_thread = start_engine_thread(engine, engine_stop)
        stack.callback(engine_thread.join, 10)
        stack.callback(engine_stop.set)
        feed = PriceFeed(endpoints.database_url, options.scenario, options.price_every_s).start()
        stack.callback(feed.close)
        start_ledger(endpoints.database_url, settings, engine_stop)
        FinancingSweeper(endpoints.database_url, 10.0, partial(
            judge_shipment, deadline_hours=demo_delivery.DEADLINE_HOURS)).start(engine_stop)
        if options.supply_chain:
            chain = ChainActivity(endpoints.database_url)
            chain.start(engine_stop)
            _say(f"supply chain: programme {PROGRAMME} for {CORE}; every {chain.every_s:g}s a "
                 "payable is confirmed, passed down to tier 2 and 3 and financed (see "
                 "/dashboard/ and `pledgewatch programme list`)")
        _say(f"lending engine: running; live prices every {options.price_every_s:g}s"
             + (f" (steel crashes; watch {TIGHT_FACILITY})" if options.scenario == "price-crash"
                else "") + "; `pledgewatch facility limit <id>` explains a limit")

        password = demo_password(settings)
        ensure_officer(endpoints.database_url, password)
        on_start, on_stop = notifier_hooks(settings, endpoints.database_url, endpoints.mqtt)
        http = HttpServer(create_app(endpoints.database_url, metrics.registry, settings,
                                     on_start=on_start, on_stop=on_stop),
                          settings.http_host, settings.http_port).start()
        stack.callback(http.stop)
        if http.moved_from is not None:
            _say(f"note: port {http.moved_from} on {http.host} is in use; the HTTP server "
                 f"listens on {http.port} instead")
        _say(f"http: {http.url}/health  {http.url}/docs  {http.url}/metrics")
        _say(f"dashboard: {http.url}/dashboard/  ({OFFICER} / {password})")
        incident_at = _incident_at_s(options, settings)
        _say(f"fleet: {len(fleet_infos)} devices at {options.rate_hz:g} msg/s each, "
             f"scenario {options.scenario}"
             + (f" (incident {incident_at:g}s in)" if incident_at is not None
                and options.device_scenario != "normal" else ""))
        stats = asyncio.run(_fleet(settings, endpoints, options, Progress(gw, engine), delivery))
        _say(f"fleet stopped: {stats.published:,} published, {stats.acknowledged:,} acknowledged,"
             f" {stats.pending:,} still pending")
    _say("stopped cleanly; data stays in " + str(settings.state_dir))
    return 0


async def _fleet(settings: Settings, endpoints: Endpoints, options: DemoOptions,
                 progress: Progress, delivery_specs: list[DeviceSpec]) -> FleetStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    target = endpoints.mqtt
    fleet = make_fleet(options.devices, tenant=TENANT)
    incident_at = _incident_at_s(options, settings)
    if incident_at is not None:
        fleet = [replace(s, parameters={**s.parameters, "incident_at_s": incident_at}) for s in fleet]
    delivery = None if not delivery_specs else asyncio.create_task(demo_delivery.play(
        endpoints.database_url, delivery_specs, host=target.host, port=target.port,
        username=target.username, password=target.password, protocol=target.protocol,
        state_dir=settings.state_dir / "delivery", stop=stop, say=_say))
    try:
        return await run_fleet(
            fleet, host=target.host, port=target.port,
            username=target.username, password=target.password, rate_hz=options.rate_hz,
            duration_s=options.duration_s, scenario=options.device_scenario,
            state_dir=settings.state_dir, protocol=target.protocol, stop=stop,
            on_progress=progress, progress_every_s=2.0,
        )
    finally:
        stop.set()
        if delivery is not None:
            try:
                await asyncio.wait_for(delivery, 20.0)
            except Exception as exc:  # noqa: BLE001 - the demo's delivery must not fail the demo
                log.warning("demo delivery: %r", exc)
