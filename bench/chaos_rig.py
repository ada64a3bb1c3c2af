"""The chaos bench's rig: a private broker and database it may kill, real `pledgewatch gateway`
processes, publishers that record every PUBACK, and the store's account of what arrived.

Nothing here is shared with another program: the broker is Debian's mosquitto with the project's
config (read when it starts) on a free port with its persistence in the scenario's folder; the
database is an embedded cluster of the bench's own, or a new database on a given server.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import MQTTErrorCode
from psycopg import sql

from gateway.mqtt import MqttTarget, connect_kwargs, connected_client, new_client, parse_mqtt_url
from pledgewatch.broker.mosquitto import Mosquitto, mosquitto_binary
from pledgewatch.embedded import EmbeddedPostgres
from schema.migrate import apply_all
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import subscription_filters, telemetry_topic
from telemetry.queries import register_devices

READINGS = 2  # readings per message: weight_kg and temp_c
BOOT = 1
PgStop = Literal["fast", "immediate"]
PG_STOP_SIGNAL = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}  # PostgreSQL's shutdowns
NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason: accepted, but nobody will receive it


def progress(message: str) -> None:
    now = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
    print(f"chaos: {now} {message}", file=sys.stderr, flush=True)


# --- messages -------------------------------------------------------------------------------

def device_ids(tenant: str, count: int) -> list[str]:
    return [f"{tenant}-d{i:03d}" for i in range(count)]


def make_messages(tenant: str, devices: Sequence[str], n: int) -> list[tuple[str, bytes]]:
    """``n`` telemetry messages per contract v1, round robin over ``devices``: message ``i`` is
    device ``i % len(devices)``, seq ``i // len(devices)`` (see :func:`message_index`)."""
    ts0 = int(datetime.now(UTC).timestamp() * 1000) - n  # never in the future, never too old
    out = []
    for i in range(n):
        device, seq = devices[i % len(devices)], i // len(devices)
        body = (f'{{"boot":{BOOT},"seq":{seq},"ts":{ts0 + i},'
                f'"readings":{{"weight_kg":{1000 + i % 997}.5,"temp_c":12.5}}}}')
        out.append((telemetry_topic(tenant, device), body.encode()))
    return out


def message_index(devices: Sequence[str], device: str, seq: int) -> int:
    return seq * len(devices) + devices.index(device)


# --- publishers -----------------------------------------------------------------------------

class AckingPublisher:
    """One real paho client (QoS 1, clean start) publishing its messages, optionally paced, and
    recording when the broker acknowledged each one (epoch seconds; a PUBACK with a failure reason
    does not count). Like a device's outbox, paho keeps every unacknowledged message and sends it
    again after it reconnects; the messages' own (device, boot, seq) make the resend harmless."""

    def __init__(self, target: MqttTarget, client_id: str, messages: Sequence[tuple[str, bytes]],
                 rate: float | None, ack_timeout: float, window: int = 10_000) -> None:
        self.messages = messages
        self.rate = rate
        self.ack_timeout = ack_timeout
        self.window = window  # packet ids are 16 bits: keep well under 65,535 outstanding
        self.acked_at: list[float | None] = [None] * len(messages)
        # which connection each PUBACK arrived on: 1 for the first, +1 per reconnect. paho reads
        # what a dead broker sent before it handles the disconnect, so the PUBACKs of a killed
        # broker carry the generation of the connection to it, however late they are read.
        self.acked_on: list[int] = [0] * len(messages)
        self.generation = 0
        self.published = 0
        self.refused = 0
        self.no_subscribers = 0
        self.error: str | None = None
        self._events: deque[tuple[int, int, float, int]] = deque()
        self._pending: dict[int, int] = {}
        self._connected = threading.Event()
        self._client = new_client(target, client_id, persistent=False)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._kwargs = connect_kwargs(target, persistent=False, session_expiry_s=0, keepalive=10)
        self._thread = threading.Thread(target=self._run, name=f"publisher {client_id}",
                                        daemon=True)

    # paho's network thread: only record, the publishing thread matches ids to messages
    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._events.append((mid, int(getattr(rc, "value", 0)), time.time(), self.generation))

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            self.generation += 1
            self._connected.set()

    def start(self) -> AckingPublisher:
        self._client.connect_async(**self._kwargs)  # type: ignore[arg-type]
        self._client.loop_start()
        self._thread.start()
        return self

    def _match_acks(self) -> None:
        while self._events:
            mid, reason, at, generation = self._events.popleft()
            index = self._pending.pop(mid, None)
            if index is None:
                continue
            if reason >= 0x80:
                self.refused += 1
                continue
            if reason == NO_MATCHING_SUBSCRIBERS:
                self.no_subscribers += 1
            self.acked_at[index] = at
            self.acked_on[index] = generation

    def _run(self) -> None:
        try:
            if not self._connected.wait(30):
                raise ConnectionError("the broker did not accept the publisher within 30 s")
            started = time.monotonic()
            for index, (topic, payload) in enumerate(self.messages):
                self._match_acks()
                while len(self._pending) >= self.window:
                    time.sleep(0.002)
                    self._match_acks()
                self._publish(index, topic, payload)
                if self.rate:
                    delay = started + (index + 1) / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            deadline = time.monotonic() + self.ack_timeout
            while time.monotonic() < deadline:
                self._match_acks()
                if not self._pending:
                    return
                time.sleep(0.01)
        except Exception as exc:  # noqa: BLE001 - reported in the scenario's outcome
            self.error = f"{type(exc).__name__}: {exc}"

    def _publish(self, index: int, topic: str, payload: bytes) -> None:
        while True:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break  # sent, or kept to be sent once reconnected (MQTT_ERR_NO_CONN)
            time.sleep(0.01)  # its packet id is still in flight: wait for the ack, take another
            self._match_acks()
        if info.mid in self._pending:
            raise RuntimeError(f"packet id {info.mid} reused while still in flight")
        self._pending[info.mid] = index
        self.published += 1

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        self._match_acks()
        return not self._thread.is_alive()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def acked(self) -> int:
        return sum(1 for t in self.acked_at if t is not None)


# --- broker ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Persistence:
    """What the project's broker config says about snapshots, as it was when the broker started."""

    enabled: bool
    autosave_interval: int
    autosave_on_changes: bool
    file: str

    def describe(self) -> str:
        if not self.enabled:
            return "persistence off"
        every = (f"every {self.autosave_interval} changes" if self.autosave_on_changes
                 else f"every {self.autosave_interval} s")
        return f"persistence on, autosave {every}"


def read_persistence(config: str) -> Persistence:
    values: dict[str, str] = {}
    for line in config.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            values[words[0]] = words[1].strip()
    return Persistence(
        enabled=values.get("persistence", "false") == "true",
        autosave_interval=int(values.get("autosave_interval", "1800")),
        autosave_on_changes=values.get("autosave_on_changes", "false") == "true",
        file=values.get("persistence_file", "mosquitto.db"),
    )


class ChaosBroker:
    """Debian's mosquitto with the project config; restarted on the same port and folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mosquitto = Mosquitto(workdir)

    def start(self) -> ChaosBroker:
        self.mosquitto.start()
        return self

    def stop(self, kill: bool = False) -> None:
        self.mosquitto.stop(kill=kill)

    @property
    def target(self) -> MqttTarget:
        return parse_mqtt_url(self.mosquitto.url(), "5")

    @property
    def persistence(self) -> Persistence:
        return read_persistence((self.workdir / "mosquitto.conf").read_text())

    def last_snapshot(self) -> float | None:
        """When mosquitto last wrote its persistence file (epoch seconds), None before the first."""
        try:
            return (self.workdir / self.persistence.file).stat().st_mtime
        except FileNotFoundError:
            return None


def mosquitto_version() -> str:
    binary = mosquitto_binary()
    if binary is None:
        return "?"
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    return words[2] if len(words) > 2 and words[:2] == ["mosquitto", "version"] else "?"


def open_session(target: MqttTarget, client_id: str, tenant: str,
                 shared_group: str | None = None) -> None:
    """The gateway's persistent session with its subscription, left offline: the broker queues
    from now on whether or not the gateway is up yet."""
    with connected_client(target, client_id, persistent=True, session_expiry_s=3600) as client:
        done = threading.Event()
        client.on_subscribe = lambda *_: done.set()
        client.subscribe([(f, 1) for f in subscription_filters(shared_group, tenant)])
        if not done.wait(10):
            raise RuntimeError(f"the broker did not confirm the subscription of {client_id}")


# --- database -------------------------------------------------------------------------------

class ChaosDatabase:
    """The store the gateways write to: a private embedded cluster the bench may stop, or a new
    database on a given server (which is shared, so an outage there refuses connections to this
    database and cuts the ones it has instead of stopping the server)."""

    def __init__(self, url: str, where: str, embedded: EmbeddedPostgres | None,
                 admin_url: str | None) -> None:
        self.url = url
        self.where = where
        self._embedded = embedded
        self._admin_url = admin_url

    @classmethod
    def embedded(cls, workdir: Path) -> ChaosDatabase:
        pg = EmbeddedPostgres(workdir / "postgres").start()
        apply_all(pg.url)
        return cls(pg.url, "embedded PostgreSQL (private cluster)", pg, None)

    @classmethod
    def on_server(cls, admin_url: str) -> ChaosDatabase:
        name = f"pledgewatch_chaos_{secrets.token_hex(4)}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
        db = cls(url, f"database {name} on the given server", None, admin_url)
        try:
            apply_all(url)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def name(self) -> str:
        return urlsplit(self.url).path.lstrip("/")

    def describe_outage(self, mode: PgStop) -> str:
        if self._embedded is not None:
            return f"outage = server stopped ({mode} shutdown) and started again"
        return "outage = connections to the bench's database refused and cut (shared server)"

    def prepare(self, tenant: str, devices: Sequence[str]) -> None:
        """Apply any migration added since the bench started (a gateway refuses to run on an
        unmigrated store), then register the scenario's devices."""
        apply_all(self.url)
        with psycopg.connect(self.url) as conn:
            register_devices(conn, [DeviceInfo(d, tenant, "warehouse") for d in devices])

    @contextmanager
    def outage(self, mode: PgStop) -> Iterator[None]:
        if self._embedded is not None:
            self._stop_embedded(mode)
            try:
                yield
            finally:
                self._embedded.restart()
            return
        assert self._admin_url is not None
        name = sql.Identifier(self.name)
        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,))
        try:
            yield
        finally:
            with psycopg.connect(self._admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))

    def _stop_embedded(self, mode: PgStop) -> None:
        assert self._embedded is not None
        pid_file = self._embedded.data_dir / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, PG_STOP_SIGNAL[mode])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"PostgreSQL (pid {pid}) did not stop within 60 s")

    @contextmanager
    def table_lock(self, table: str = "readings") -> Iterator[None]:
        """ACCESS EXCLUSIVE on ``table`` from a connection of its own until the block ends."""
        with psycopg.connect(self.url) as conn:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(table)))
            try:
                yield
            finally:
                conn.commit()

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            return
        assert self._admin_url is not None
        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.name)))


@dataclass(frozen=True)
class StoreCount:
    """Messages of one scenario found in ``readings``: (device, seq) of each, and rows beyond one
    per reading (the dedupe key should make that 0)."""

    keys: frozenset[tuple[str, int]]
    duplicates: int


def count_rows(url: str, devices: Sequence[str]) -> int | None:
    """Rows of these devices, or None while the store does not answer (down, locked)."""
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '300ms'")
            row = conn.execute("SELECT count(*) FROM readings WHERE device_id = ANY(%s)",
                               (list(devices),)).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else 0


def count_messages(url: str, devices: Sequence[str]) -> StoreCount | None:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '300ms'")
            rows = conn.execute(
                "SELECT device_id, seq, count(*) - count(DISTINCT metric) FROM readings"
                " WHERE device_id = ANY(%s) AND boot = %s GROUP BY device_id, seq",
                (list(devices), BOOT)).fetchall()
    except psycopg.Error:
        return None
    return StoreCount(frozenset((d, int(s)) for d, s, _ in rows), sum(int(x) for *_, x in rows))


# --- gateway processes ----------------------------------------------------------------------

def gateway_env(database_url: str, target: MqttTarget, client_id: str, tenant: str,
                state_dir: Path, shared_group: str | None = None) -> dict[str, str]:
    """The environment of a `pledgewatch gateway` of this scenario; the caller's own PLEDGEWATCH_*
    settings are left out so nothing points it elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update({
        "PLEDGEWATCH_DATABASE_URL": database_url,
        "PLEDGEWATCH_MQTT_URL": target.url,
        "PLEDGEWATCH_MQTT_PROTOCOL": target.protocol,
        "PLEDGEWATCH_MQTT_CLIENT_ID": client_id,
        "PLEDGEWATCH_MQTT_TENANT_FILTER": tenant,
        "PLEDGEWATCH_MQTT_SESSION_EXPIRY_S": "3600",
        "PLEDGEWATCH_METRICS_PORT": "0",
        "PLEDGEWATCH_STATE_DIR": str(state_dir),
        "PLEDGEWATCH_LOG_LEVEL": "INFO",
    })
    if shared_group:
        env["PLEDGEWATCH_MQTT_SHARED_GROUP"] = shared_group
    return env


GATEWAY_COMMAND = [sys.executable, "-m", "pledgewatch", "gateway"]


class GatewayProcess:
    """A real `pledgewatch gateway`; its output goes to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, args: Sequence[str] = ()) -> None:
        self.env = env
        self.log = log
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([*GATEWAY_COMMAND, *self.args], env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no goodbye to the broker or the database."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (flush, commit, ack, disconnect); SIGKILL after ``timeout``. The exit code, or
        None when it had to be killed."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def tail(self, lines: int = 5) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []


def gateway_has_option(option: str) -> bool:
    """Whether this checkout's `pledgewatch gateway` takes ``option`` (e.g. ``--slots``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    out = subprocess.run([*GATEWAY_COMMAND, "--help"], capture_output=True, text=True, env=env,
                         check=False, timeout=60)
    return option in out.stdout
