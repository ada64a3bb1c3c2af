"""`pledgewatch bench alert-latency`: publish a theft → unauthorised-outbound alert committed.

Set-up, each part in its own process as in production: the broker (Debian's mosquitto with the
project config), the gateway (with its writer process), the lending engine, and a background
publisher offering ``rate`` msg/s of normal warehouse telemetry from ``devices`` devices whose lots
sit in ``devices // 2`` facilities. This process publishes a theft (:data:`THEFT_READINGS` readings
of a 30 % weight drop, 200 ms apart: the goods ledger's fast detector wants that many in a row, so
that one glitch is not a theft) for a fresh victim lot per trial and LISTENs for two notifications
that PostgreSQL delivers at commit: ``pw_ingest`` naming the victim (its reading is stored: the
baseline) and ``pw_alerts`` for the victim's lot (the alert row is stored). Figures are
nearest-rank percentiles over trials.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.ingest import prepare_broker
from bench.stats import median, percentile
from gateway.consumer import Gateway, GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttTarget, connected_client, publish_qos1
from lending.domain.rules import RulePolicy
from lending.engine import LendingEngine
from lending.operations import load_portfolio
from lending.portfolio_file import PortfolioIn
from lending.store import ALERTS_CHANNEL
from pledgewatch.embedded import EmbeddedPostgres
from pledgewatch.runtime import gateway_config, time_series_options
from pledgewatch.settings import Settings
from schema.migrate import apply_all
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import telemetry_topic
from telemetry.queries import register_devices
from telemetry.writer import INGEST_CHANNEL

TENANT = "bench"
WEIGHT_KG = 20_000.0
UNITS = 800
BASELINE_READINGS = 15
THEFT_READINGS = RulePolicy().fast_min_samples  # readings in a row the fast detector needs


def background_device(i: int) -> str:
    return f"bg-{i:04d}"


def victim_device(i: int) -> str:
    return f"victim-{i:04d}"


def reading(boot: int, seq: int, weight: float, count: int, ts_ms: int | None = None) -> bytes:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    return json.dumps({"boot": boot, "seq": seq, "ts": ts, "readings": {
        "weight_kg": round(weight, 2), "rfid_count": count, "door_open": False,
        "temp_c": 15.0, "tamper": False}}).encode()


def portfolio(devices: int, victims: int, now: datetime) -> PortfolioIn:
    facilities = max(1, devices // 2)
    lots = [{"id": f"lot-{d}", "facility": f"fac-{i % facilities:04d}", "commodity": "steel-coil",
             "declared_quantity": UNITS, "unit_weight_kg": WEIGHT_KG / UNITS,
             "registration_no": f"REG-{d}", "sensors": [d], "business_hours": (0, 24)}
            for i, d in enumerate([background_device(i) for i in range(devices)]
                                  + [victim_device(i) for i in range(victims)])]
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel-coil", "unit": "t", "unit_kg": 1000.0}],
        "borrowers": [{"id": "bench-borrower", "name": "Bench", "tenant": TENANT}],
        "facilities": [{"id": f"fac-{i:04d}", "borrower": "bench-borrower", "line": 1e6,
                        "outstanding": 1e4} for i in range(facilities)],
        "lots": lots,
        "prices": [{"commodity": "steel-coil", "time": now - timedelta(days=d), "price": 4000 + d}
                   for d in range(10)],
    })


@contextmanager
def scratch_database(settings: Settings, workdir: Path) -> Any:
    """An empty database: embedded in ``workdir``, or a new one on the configured server."""
    if not settings.database_url:
        pg = EmbeddedPostgres(workdir / "postgres").start()
        try:
            yield pg.url
        finally:
            pg.stop()
        return
    parts = urlsplit(settings.database_url)
    name = f"pledgewatch_bench_{int(time.time())}"
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def run_gateway(url: str, target: MqttTarget, config: GatewayConfig, ready: Any, stop: Any) -> None:
    """Child process: the gateway until ``stop``."""
    gw = Gateway(url, target, config, GatewayMetrics())
    runner = threading.Thread(target=gw.run)
    runner.start()
    gw.subscribed.wait(30)
    ready.set()
    stop.wait(3600)
    gw.stop()
    runner.join(60)


def run_engine(url: str, ready: Any, stop: Any, out: Any) -> None:
    """Child process: the lending engine until ``stop``; reports its cycle count."""
    engine = LendingEngine(url, tick_s=30.0)
    done = threading.Event()

    def relay() -> None:
        stop.wait(3600)
        done.set()

    threading.Thread(target=relay, daemon=True).start()
    inner_ready = threading.Event()
    worker = threading.Thread(target=engine.run, args=(done, inner_ready))
    worker.start()
    inner_ready.wait(60)
    ready.set()
    worker.join()
    out.put({"cycles": engine.stats.cycles, "assessed": engine.stats.assessed})


def run_background(target: MqttTarget, devices: int, rate: float, stop: Any, out: Any) -> None:
    """Child process: steady telemetry from ``devices`` devices at ``rate`` msg/s in total."""
    rng = random.Random(1)
    sent = 0

    def stream() -> Any:
        nonlocal sent
        seq = 0
        while not stop.is_set():
            for i in range(devices):
                yield (telemetry_topic(TENANT, background_device(i)),
                       reading(1, seq, WEIGHT_KG + rng.gauss(0, 2.0), UNITS))
                sent += 1
            seq += 1

    with connected_client(target, f"bench-bg-{time.monotonic_ns()}", persistent=False) as client:
        publish_qos1(client, stream(), rate=rate)
    out.put(sent)


def _wait_for(listener: psycopg.Connection, channel: str, match: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for note in listener.notifies(timeout=left, stop_after=1):
            if note.channel == channel and match in note.payload:
                return time.perf_counter()
    return None


def run_alert_latency_bench(settings: Settings, *, rate: float, devices: int, trials: int,
                            gap_s: float, workdir: Path | None) -> int:
    ctx = mp.get_context("spawn")
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-")))
        url = stack.enter_context(scratch_database(settings, workdir))
        target, broker_name = prepare_broker(settings, stack, workdir)
        apply_all(url, time_series_options(settings))
        now = datetime.now(UTC)
        with psycopg.connect(url) as conn:
            register_devices(conn, [DeviceInfo(background_device(i), TENANT, "warehouse")
                                    for i in range(devices)]
                             + [DeviceInfo(victim_device(i), TENANT, "warehouse")
                                for i in range(trials)])
            load_portfolio(conn, portfolio(devices, trials, now), now)
        print(f"alert latency: {trials} thefts, background {rate:g} msg/s from {devices} devices "
              f"({max(1, devices // 2)} facilities), broker: {broker_name}", flush=True)

        stop = ctx.Event()
        config = GatewayConfig(**{**gateway_config(settings).__dict__,
                                  "client_id": "bench-alert-gateway", "tenant_filter": "+",
                                  "shared_group": None})
        gw_ready, engine_ready = ctx.Event(), ctx.Event()
        engine_out, bg_out = ctx.Queue(), ctx.Queue()
        children = [ctx.Process(target=run_gateway, args=(url, target, config, gw_ready, stop)),
                    ctx.Process(target=run_engine, args=(url, engine_ready, stop, engine_out))]
        for child in children:
            child.start()
        if not (gw_ready.wait(60) and engine_ready.wait(120)):
            stop.set()
            raise RuntimeError("gateway or lending engine did not start")
        # Every victim gets a steady history first, so the drop is a drop against a baseline.
        ts0 = int(time.time() * 1000) - BASELINE_READINGS * 200
        history = [(telemetry_topic(TENANT, victim_device(v)),
                    reading(1, s, WEIGHT_KG + (s % 3), UNITS, ts0 + s * 200))
                   for s in range(BASELINE_READINGS) for v in range(trials)]
        with connected_client(target, "bench-history", persistent=False) as client:
            publish_qos1(client, history)
        background = ctx.Process(target=run_background, args=(target, devices, rate, stop, bg_out))
        background.start()
        time.sleep(3.0)  # background load reaches steady state; victims' history is assessed

        ingest_ms: list[float] = []
        alert_ms: list[float] = []
        missed = 0
        with psycopg.connect(url, autocommit=True) as listener, \
                connected_client(target, "bench-thief", persistent=False) as thief:
            listener.execute(f"LISTEN {INGEST_CHANNEL}")
            listener.execute(f"LISTEN {ALERTS_CHANNEL}")
            for v in range(trials):
                device = victim_device(v)
                list(listener.notifies(timeout=0.0))  # drop what came before
                now_ms = int(time.time() * 1000)
                theft = [(telemetry_topic(TENANT, device),
                          reading(2, k, WEIGHT_KG * 0.7, int(UNITS * 0.7),
                                  now_ms - (THEFT_READINGS - 1 - k) * 200))
                         for k in range(THEFT_READINGS)]
                started = time.perf_counter()
                publish_qos1(thief, theft)
                stored = _wait_for(listener, INGEST_CHANNEL, device, 10.0)
                alerted = _wait_for(listener, ALERTS_CHANNEL, f'"lot-{device}"', 10.0)
                if stored is None or alerted is None:
                    missed += 1
                else:
                    ingest_ms.append((stored - started) * 1000)
                    alert_ms.append((alerted - started) * 1000)
                time.sleep(gap_s)
        stop.set()
        sent = bg_out.get(timeout=60)
        background.join(30)
        engine_stats = engine_out.get(timeout=60)
        for child in children:
            child.join(60)
        with psycopg.connect(url) as conn:
            alerts = conn.execute("SELECT count(*) FROM alerts WHERE type = 'unauthorised_outbound'"
                                  ).fetchone()[0]  # type: ignore[index]

    elapsed_note = f"background sent {sent:,} messages; engine ran {engine_stats['cycles']:,} cycles"
    print(elapsed_note)
    print(f"outbound alerts stored: {alerts} (expected {trials}); missed trials: {missed}")
    print(f"baseline publish->reading committed: p50 {percentile(ingest_ms, 50):.0f} ms "
          f"p99 {percentile(ingest_ms, 99):.0f} ms")
    print(f"p50 {percentile(alert_ms, 50):.0f} ms")
    print(f"p99 {percentile(alert_ms, 99):.0f} ms")
    ratio = percentile(alert_ms, 99) / percentile(ingest_ms, 99) if ingest_ms else float("nan")
    print(f"ratio {ratio:.2f} (alert p99 / ingest p99); median alert {median(alert_ms):.0f} ms")
    return 0 if missed == 0 and alerts == trials else 1
