"""`pledgewatch bench ingest`: drain a persistent-session backlog, raw paho vs the gateway.

Both consumers drain the same backlog from the same broker (Debian's mosquitto with the project's
config, on a free port) in child processes of their own, so each one's peak memory is its own:
(a) a raw paho-mqtt subscriber that only counts (the baseline), (b) the gateway with validation,
COPY into the store and commit-then-ack. Then p50/p99 publish->committed latency with the gateway
running under a steady offered load.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.stats import median, percentile
from gateway.consumer import Gateway, GatewayConfig
from gateway.ingest import Committed
from gateway.metrics import GatewayMetrics
from gateway.mqtt import (
    MqttTarget,
    connect_kwargs,
    connected_client,
    new_client,
    parse_mqtt_url,
    publish_qos1,
)
from pledgewatch.broker.mosquitto import Mosquitto, mosquitto_binary
from pledgewatch.embedded import EmbeddedPostgres
from pledgewatch.runtime import gateway_config, time_series_options
from pledgewatch.settings import Settings
from schema.migrate import apply_all
from schema.timescale import probe
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import subscription_filters, telemetry_topic
from telemetry.queries import register_devices

TENANT = "bench"
DEVICES = 200
RAW_ID = "bench-raw-subscriber"
GATEWAY_ID = "bench-gateway"


@dataclass
class Drain:
    messages: int
    seconds: float
    peak_rss_mb: float
    commit_ms: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def make_payloads(n: int, boot: int, readings: int = 4) -> list[tuple[str, bytes]]:
    """n warehouse messages of ``readings`` readings each, spread over DEVICES devices."""
    ts0 = int(datetime.now(UTC).timestamp() * 1000) - n
    out = []
    for i in range(n):
        device = f"wh-{i % DEVICES:04d}"
        seq = i // DEVICES
        values = {"weight_kg": 20_000.0 + (i % 97), "rfid_count": 400 + (i % 7),
                  "temp_c": 12.5, "door_open": False, "humidity_pct": 55.0, "tamper": False,
                  "power_v": 12.1, "camera_ok": True}
        body = {"boot": boot, "seq": seq, "ts": ts0 + i,
                "readings": dict(list(values.items())[:readings])}
        out.append((telemetry_topic(TENANT, device), json.dumps(body).encode()))
    return out


def publish(target: MqttTarget, messages: list[tuple[str, bytes]], rate: float | None = None,
            stamp: bool = False) -> None:
    """Publish QoS 1 and wait for every PUBACK; ``stamp`` rewrites ts to the publish time."""
    stream = ((topic, _stamped(payload)) for topic, payload in messages) if stamp else messages
    with connected_client(target, f"bench-pub-{time.monotonic_ns()}", persistent=False) as client:
        publish_qos1(client, stream, rate=rate)


def _stamped(payload: bytes) -> bytes:
    body = json.loads(payload)
    body["ts"] = int(time.time() * 1000)
    return json.dumps(body).encode()


def open_session(target: MqttTarget, client_id: str) -> None:
    """Create a persistent session with the subscription, then go offline."""
    with connected_client(target, client_id, persistent=True, session_expiry_s=3600) as client:
        done = threading.Event()
        client.on_subscribe = lambda *_: done.set()
        client.subscribe([(f, 1) for f in subscription_filters()])
        if not done.wait(10):
            raise RuntimeError("could not subscribe")


def close_session(target: MqttTarget, client_id: str) -> None:
    """Discard a persistent session (clean start, no expiry) so it queues nothing more."""
    with connected_client(target, client_id, persistent=False):
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus its largest finished child (the writer)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + child) / 1024


def raw_drain(target: MqttTarget, client_id: str, expected: int, out: Any) -> None:
    """Child process: a paho subscriber that only counts (auto-ack), the baseline."""
    client = new_client(target, client_id, persistent=True)
    state: dict[str, float] = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        state["n"] += 1
        if state["n"] == 1:
            state["first"] = time.perf_counter()
        if state["n"] >= expected:
            state["last"] = time.perf_counter()
            done.set()

    client.on_message = on_message
    client.connect(**connect_kwargs(target, persistent=True, session_expiry_s=3600,  # type: ignore[arg-type]
                                    keepalive=30))
    client.loop_start()
    done.wait(600)
    client.disconnect()
    client.loop_stop()
    out.put(Drain(int(state["n"]), state["last"] - state["first"], peak_rss_mb(), []))


def gateway_drain(database_url: str, target: MqttTarget, config: GatewayConfig, expected: int,
                  out: Any) -> None:
    """Child process: the gateway drains the backlog; counts committed messages."""
    state: dict[str, float] = {"n": 0, "first": 0.0, "last": 0.0}
    commit_ms: list[float] = []
    done = threading.Event()

    def on_commit(committed: Committed, _t: float) -> None:
        if state["n"] == 0:
            state["first"] = first_receive[0] or time.perf_counter()
        state["n"] += committed.messages
        commit_ms.append(committed.seconds * 1000)
        if state["n"] >= expected:
            state["last"] = time.perf_counter()
            done.set()

    first_receive = [0.0]
    gw = Gateway(database_url, target, config, GatewayMetrics(), on_commit=on_commit)
    original = gw._on_message

    def timed(c: Any, u: Any, m: Any) -> None:
        if not first_receive[0]:
            first_receive[0] = time.perf_counter()
        original(c, u, m)

    gw._client.on_message = timed

    def run() -> None:
        try:
            gw.run()
        finally:
            done.set()  # a crashed gateway must not leave the benchmark waiting

    runner = threading.Thread(target=run)
    runner.start()
    done.wait(600)
    gw.stop()
    runner.join(60)
    out.put(Drain(int(state["n"]), state["last"] - state["first"], peak_rss_mb(), commit_ms))


def gateway_latency(database_url: str, target: MqttTarget, config: GatewayConfig, out: Any,
                    ready: Any, stop: Any) -> None:
    """Child process: publish->commit latency of every accepted message, in ms."""
    latencies: list[float] = []

    def on_commit(committed: Committed, committed_at: float) -> None:
        latencies.extend((committed_at - t) * 1000 for t in committed.device_times)

    gw = Gateway(database_url, target, config, GatewayMetrics(), on_commit=on_commit)
    runner = threading.Thread(target=gw.run)
    runner.start()
    gw.subscribed.wait(30)
    ready.set()
    stop.wait(600)
    time.sleep(1.0)
    gw.stop()
    runner.join(60)
    out.put(latencies)


def run_child(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get(timeout=900)
    proc.join(60)
    return result


def prepare_store(settings: Settings, stack: ExitStack, workdir: Path) -> str:
    if settings.database_url:
        url = settings.database_url
    else:
        pg = EmbeddedPostgres(workdir / "postgres").start()
        stack.callback(pg.stop)
        url = pg.url
    apply_all(url, time_series_options(settings))
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE readings, dead_letters, device_status")
        register_devices(conn, [DeviceInfo(f"wh-{i:04d}", TENANT, "warehouse")
                                for i in range(DEVICES)])
    return url


def prepare_broker(settings: Settings, stack: ExitStack, workdir: Path) -> tuple[MqttTarget, str]:
    if mosquitto_binary():
        broker = Mosquitto(workdir / "mosquitto").start()
        stack.callback(broker.stop)
        return parse_mqtt_url(broker.url(), "5"), "mosquitto (project config)"
    if settings.mqtt_url:
        return parse_mqtt_url(settings.mqtt_url, settings.mqtt_protocol), settings.mqtt_url
    raise RuntimeError("the benchmark needs Debian's mosquitto (apt-get install mosquitto) "
                       "or PLEDGEWATCH_MQTT_URL")


def run_ingest_bench(settings: Settings, *, messages: int, rate: int, latency_seconds: float,
                     workdir: Path | None, repeat: int = 3, readings: int = 4) -> int:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-")))
        url = prepare_store(settings, stack, workdir)
        target, broker_name = prepare_broker(settings, stack, workdir)
        with psycopg.connect(url) as conn:
            backend = probe(conn).backend
        print(f"backlog: {messages} messages x {readings} readings, broker: {broker_name} MQTT "
              f"{target.protocol}, store: {backend}, {repeat} run(s)", flush=True)
        raws: list[Drain] = []
        gws: list[Drain] = []
        for run in range(1, repeat + 1):
            payloads = make_payloads(messages, boot=run, readings=readings)
            # Each consumer gets a fresh session holding exactly this backlog.
            raw_id, gw_id = f"{RAW_ID}-{run}", f"{GATEWAY_ID}-{run}"
            open_session(target, raw_id)
            publish(target, payloads)
            raw = run_child(raw_drain, target, raw_id, messages)
            close_session(target, raw_id)
            raws.append(raw)
            open_session(target, gw_id)
            publish(target, payloads)
            config = replace(gateway_config(settings), client_id=gw_id, tenant_filter="+",
                             shared_group=None)
            gw = run_child(gateway_drain, url, target, config, messages)
            close_session(target, gw_id)
            gws.append(gw)
            print(f"run {run}: raw {raw.rate:,.0f} msg/s ({raw.seconds:.2f} s), "
                  f"gateway {gw.rate:,.0f} msg/s ({gw.seconds:.2f} s), "
                  f"ratio {gw.rate / raw.rate:.2f}", flush=True)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
        config = replace(gateway_config(settings), client_id=GATEWAY_ID, tenant_filter="+",
                         shared_group=None)
        lat = measure_latency(url, target, config, rate, latency_seconds)

    raw_rate = median([r.rate for r in raws])
    gw_rate = median([g.rate for g in gws])
    commits = [ms for g in gws for ms in g.commit_ms]
    print(f"raw paho subscriber (baseline): {raw_rate:,.0f} msg/s median, "
          f"peak RSS {max(r.peak_rss_mb for r in raws):.0f} MB")
    print(f"gateway (validate + COPY + commit-then-ack): {gw_rate:,.0f} msg/s median, "
          f"peak RSS {max(g.peak_rss_mb for g in gws):.0f} MB (gateway + writer process)")
    print(f"commit latency p50 {percentile(commits, 50):.1f} ms p99 {percentile(commits, 99):.1f} ms"
          f" ({len(commits)} batches)")
    print(f"stored readings: {stored:,} (expected {messages * readings * repeat:,})")
    print(f"publish->committed at {rate} msg/s offered for {latency_seconds:.0f} s: "
          f"p50 {percentile(lat, 50):.0f} ms p99 {percentile(lat, 99):.0f} ms "
          f"({len(lat)} messages)")
    print(f"ratio {gw_rate / raw_rate:.2f}")
    return 0 if stored == messages * readings * repeat else 1


def measure_latency(url: str, target: MqttTarget, config: GatewayConfig, rate: int,
                    seconds: float) -> list[float]:
    ctx = mp.get_context("spawn")
    out, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    proc = ctx.Process(target=gateway_latency, args=(url, target, config, out, ready, stop))
    proc.start()
    ready.wait(60)
    payloads = make_payloads(int(rate * seconds), boot=1000)
    publish(target, payloads, rate=rate, stamp=True)
    stop.set()
    latencies: list[float] = out.get(timeout=120)
    proc.join(60)
    return latencies
