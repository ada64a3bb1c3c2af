"""How much a broker crash can lose: PUBACKed messages queued for an offline gateway vs autosave.

Mosquitto keeps queued messages in memory and writes its whole database to disk on an autosave
(every ``autosave_interval`` seconds, or every ``autosave_interval`` changes with
``autosave_on_changes true``) and on a clean stop. A SIGKILL (or a power cut) loses what was
PUBACKed since the last save. For each setting this measures, with the project's mosquitto.conf
otherwise unchanged (Debian's mosquitto on a free port, a private data directory):

1. the gateway's persistent session is created (MQTT 5, clean start off) and saved (clean stop);
2. ``messages`` telemetry messages are published at QoS 1 while the gateway is offline:
   the ingest rate is PUBACKed messages per second;
3. the broker is SIGKILLed right after the last PUBACK, started again, and the session drained:
   ``lost`` = PUBACKed − delivered after the restart.

    .venv/bin/python -m bench.broker_durability [--messages 20000] [--runs 1]

Loss under interval autosave depends on when the kill falls in the interval (from 0 to one full
interval of traffic); ``--rate`` paces publishing so a run spans several intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from gateway.mqtt import MqttTarget, connect_kwargs, connected_client, new_client, publish_qos1
from pledgewatch.broker.mosquitto import CONFIG, Mosquitto
from telemetry.contract.topics import subscription_filters, telemetry_topic

SESSION_ID = "durability-gateway"
TENANT = "durability"
DEVICES = 100

# name -> mosquitto settings replacing the shipped ones ({} = the shipped config as it is)
SETTINGS: dict[str, dict[str, str]] = {
    "interval 30 s": {"autosave_interval": "30", "autosave_on_changes": "false"},
    "interval 5 s": {"autosave_interval": "5", "autosave_on_changes": "false"},
    "interval 1 s": {"autosave_interval": "1", "autosave_on_changes": "false"},
    "every 1000 changes": {"autosave_interval": "1000", "autosave_on_changes": "true"},
    "every 100 changes": {"autosave_interval": "100", "autosave_on_changes": "true"},
    "every 10000 changes": {"autosave_interval": "10000", "autosave_on_changes": "true"},
    "shipped": {},
}


@dataclass(frozen=True)
class Outcome:
    setting: str
    published: int
    acked: int
    seconds: float
    recovered: int  # of the measured messages (the seeded backlog is not counted)
    restart_s: float
    backlog: int = 0
    broker_cpu_s: float = 0.0  # the broker's CPU time while the messages were published

    @property
    def lost(self) -> int:
        return self.acked - self.recovered

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds > 0 else 0.0


def shipped_setting(name: str) -> str | None:
    """The value of ``name`` in the shipped mosquitto.conf (None when it is not set there)."""
    for line in CONFIG.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return value.strip()
    return None


def payloads(n: int, boot: int = 1) -> list[tuple[str, bytes]]:
    ts0 = int(datetime.now(UTC).timestamp() * 1000)
    return [(telemetry_topic(TENANT, f"wh-{i % DEVICES:03d}"),
             json.dumps({"boot": boot, "seq": i // DEVICES, "ts": ts0 + i,
                         "readings": {"weight_kg": 20_000.0 + i % 97, "temp_c": 12.5}}).encode())
            for i in range(n)]


def _session(target: MqttTarget) -> None:
    """Create the gateway's persistent session and its subscriptions, then leave."""
    client = new_client(target, SESSION_ID, persistent=True)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(**connect_kwargs(target, persistent=True,  # type: ignore[arg-type]
                                    session_expiry_s=86_400, keepalive=30))
    client.loop_start()
    try:
        for flt in subscription_filters():
            subscribed.clear()
            client.subscribe(flt, qos=1)
            if not subscribed.wait(10):
                raise RuntimeError("the broker did not confirm the subscription")
    finally:
        client.disconnect()
        client.loop_stop()


def drain(target: MqttTarget, idle_s: float = 2.0, timeout: float = 300) -> int:
    """Reconnect the persistent session and count the distinct messages it gets until idle."""
    seen: set[bytes] = set()
    last = [time.monotonic()]
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.add(bytes(msg.payload))
            last[0] = time.monotonic()

    client = new_client(target, SESSION_ID, persistent=True)
    client.on_message = on_message
    client.connect(**connect_kwargs(target, persistent=True,  # type: ignore[arg-type]
                                    session_expiry_s=86_400, keepalive=30))
    client.loop_start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and time.monotonic() - last[0] < idle_s:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(seen)


def seed_backlog(workdir: Path, messages: int) -> Path:
    """A mosquitto.db holding the gateway's session with ``messages`` queued (boot 0), to copy
    into each measurement's data directory: a deep backlog makes every save write more."""
    broker = Mosquitto(workdir).start()
    try:
        target = MqttTarget("127.0.0.1", broker.port, protocol="5")
        _session(target)
        with connected_client(target, "durability-seed", persistent=False) as pub:
            publish_qos1(pub, payloads(messages, boot=0), timeout=600)
        started = time.perf_counter()
        broker.stop()  # clean stop: everything saved
        print(f"seed: {messages:,} queued messages saved in {time.perf_counter() - started:.2f}s"
              f" ({(workdir / 'mosquitto.db').stat().st_size / 1e6:.1f} MB)", flush=True)
    finally:
        broker.stop()
    return workdir / "mosquitto.db"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(setting: str, overrides: dict[str, str], messages: int, workdir: Path,
            rate: float | None = None, seed: Path | None = None, backlog: int = 0,
            idle_s: float = 2.0) -> Outcome:
    """One run; ``idle_s``: the drain ends once nothing arrived for this long."""
    workdir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        shutil.copyfile(seed, workdir / "mosquitto.db")
    broker = Mosquitto(workdir, overrides=overrides).start()
    try:
        target = MqttTarget("127.0.0.1", broker.port, protocol="5")
        if seed is None:
            _session(target)
            broker.stop()  # a clean stop saves the session: it is not part of what is measured
            broker.start()
        batch = payloads(messages)
        with connected_client(target, f"durability-pub-{time.monotonic_ns()}",
                              persistent=False) as pub:
            assert broker.process is not None
            cpu0 = cpu_seconds(broker.process.pid)
            started = time.perf_counter()
            acked = publish_qos1(pub, batch, rate=rate, timeout=300)
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(broker.process.pid) - cpu0
            broker.stop(kill=True)  # SIGKILL right after the last PUBACK
        restarted = time.perf_counter()
        broker.start()
        restart_s = time.perf_counter() - restarted
        recovered = drain(target, idle_s) - backlog
        return Outcome(setting, messages, acked, seconds, recovered, restart_s, backlog, cpu)
    finally:
        broker.stop()


def table(outcomes: Sequence[Outcome]) -> str:
    lines = [("| setting | queued before | PUBACKed | ingest msg/s | broker CPU s "
              "| lost on SIGKILL | restart s |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {o.setting} | {o.backlog:,} | {o.acked:,} | {o.rate:,.0f} "
              f"| {o.broker_cpu_s:.1f} | {o.lost:,} | {o.restart_s:.2f} |" for o in outcomes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_durability",
                                     description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1, help="runs per setting")
    parser.add_argument("--rate", type=float, default=None, help="pace publishing (msg/s)")
    parser.add_argument("--backlog", type=int, default=0,
                        help="messages already queued for the gateway before each run")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS),
                        help="measure only these (repeatable; default all)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.runs < 1 or args.backlog < 0 or (
            args.rate is not None and args.rate <= 0):
        parser.error("--messages, --runs and --rate must be positive, --backlog at least 0")
    shipped = (f"shipped: autosave_interval {shipped_setting('autosave_interval')}, "
               f"autosave_on_changes {shipped_setting('autosave_on_changes') or 'false'}")
    print(shipped, flush=True)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="pw-durability-") as tmp:
        seed = seed_backlog(Path(tmp) / "seed", args.backlog) if args.backlog else None
        for name in args.setting or list(SETTINGS):
            for run in range(args.runs):
                outcome = measure(name, SETTINGS[name], args.messages,
                                  Path(tmp) / f"{len(outcomes)}-{run}", args.rate, seed,
                                  args.backlog)
                outcomes.append(outcome)
                print(f"{name}: acked {outcome.acked} in {outcome.seconds:.2f}s "
                      f"({outcome.rate:,.0f}/s, broker CPU {outcome.broker_cpu_s:.1f}s) "
                      f"lost {outcome.lost}", flush=True)
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
