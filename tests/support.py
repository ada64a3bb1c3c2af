"""Test harness: real PostgreSQL servers and real MQTT brokers, embedded or from the environment.

``PLEDGEWATCH_TEST_DATABASE_URL`` / ``PLEDGEWATCH_TEST_MQTT_URL`` add the machine's PostgreSQL and
broker to the embedded ones; every test gets its own database (from a migrated template), its own
tenant (so its own topics) and its own client ids.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from gateway.consumer import Gateway, GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqtt import (
    MqttTarget,
    connected_client,
    parse_mqtt_url,
    publish_qos1,
)
from pledgewatch.embedded import EmbeddedPostgres
from schema.migrate import apply_all, close_for_copying
from telemetry.contract.payload import DeviceInfo
from telemetry.contract.topics import telemetry_topic
from telemetry.queries import register_devices


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


class PgServer:
    """A PostgreSQL server that hands out fresh, migrated databases."""

    kind = "abstract"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._template: str | None = None
        self._lock = threading.Lock()

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)

    def _ensure_template(self) -> str:
        with self._lock:
            if self._template is None:
                name = unique("pwtest_tmpl").replace("-", "_")
                with self._admin() as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                apply_all(with_database(self.admin_url, name))
                with self._admin() as conn:  # TimescaleDB's scheduler would hold it open
                    close_for_copying(conn, name)
                self._template = name
            return self._template

    def empty_database(self) -> str:
        name = unique("pwtest").replace("-", "_")
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.admin_url, name)

    def migrated_database(self) -> str:
        template = self._ensure_template()
        name = unique("pwtest").replace("-", "_")
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        return with_database(self.admin_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def drop_template(self) -> None:
        if self._template:
            self.drop(with_database(self.admin_url, self._template))

    @contextmanager
    def outage(self, url: str) -> Iterator[None]:
        raise NotImplementedError


class EmbeddedPgServer(PgServer):
    """The embedded default; an outage really stops and restarts the server."""

    kind = "embedded-pg"

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedPostgres(data_dir, database="postgres").start()
        super().__init__(self.server.url)

    @contextmanager
    def outage(self, url: str) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.restart()

    def close(self) -> None:
        self.server.stop()


class ExternalPgServer(PgServer):
    """The machine's PostgreSQL; an outage refuses connections to the test's database and cuts the
    ones it has (the server itself is shared, so it is not stopped)."""

    kind = "external-pg"

    @contextmanager
    def outage(self, url: str) -> Iterator[None]:
        name = urlsplit(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        try:
            yield
        finally:
            with self._admin() as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)))


@dataclass
class BrokerUnderTest:
    kind: str
    target: MqttTarget
    max_offline_backlog: int  # what the broker queues for an offline session without dropping

    @property
    def url(self) -> str:
        return self.target.url


@dataclass
class Stack:
    """One test's database, broker and tenant."""

    pg: PgServer
    database_url: str
    broker: BrokerUnderTest
    tenant: str = field(default_factory=lambda: unique("t"))

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True)

    def register(self, *device_ids: str, kind: str = "warehouse") -> None:
        with psycopg.connect(self.database_url) as conn:
            register_devices(conn, [DeviceInfo(d, self.tenant, kind) for d in device_ids])

    def gateway_config(self, **overrides: Any) -> GatewayConfig:
        base: dict[str, Any] = {
            "client_id": unique("gw"), "tenant_filter": self.tenant, "batch_max_age_ms": 20,
            "session_expiry_s": 600, "registry_refresh_s": 0.2,
        }
        base.update(overrides)
        return GatewayConfig(**base)

    def count(self, table: str = "readings") -> int:
        with self.connect() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            return int(row.fetchone()[0])  # type: ignore[index]


@contextmanager
def running_gateway(stack: Stack, config: GatewayConfig | None = None,
                    on_commit: Any = None) -> Iterator[Gateway]:
    gw = Gateway(stack.database_url, stack.broker.target, config or stack.gateway_config(),
                 GatewayMetrics(), on_commit=on_commit)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            gw.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    assert gw.subscribed.wait(15), "gateway did not subscribe"
    try:
        yield gw
    finally:
        gw.stop()
        thread.join(30)
        assert not thread.is_alive(), "gateway did not stop"
        assert not errors, f"gateway crashed: {errors!r}"


def telemetry(boot: int, seq: int, readings: dict[str, Any], ts: int | str | None = None) -> bytes:
    if ts is None:
        ts = int(datetime.now(UTC).timestamp() * 1000)
    return json.dumps({"boot": boot, "seq": seq, "ts": ts, "readings": readings}).encode()


def device_messages(tenant: str, device_ids: list[str], per_device: int, boot: int = 1
                    ) -> list[tuple[str, bytes]]:
    ts0 = int(datetime.now(UTC).timestamp() * 1000) - per_device
    return [
        (telemetry_topic(tenant, d),
         telemetry(boot, seq, {"weight_kg": 1000.0 + seq, "temp_c": 10.0}, ts0 + seq))
        for seq in range(per_device) for d in device_ids
    ]


class Publisher:
    """A real MQTT client publishing QoS 1 and waiting for every PUBACK."""

    def __init__(self, target: MqttTarget, client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        if username:
            target = MqttTarget(target.host, target.port, username, password, target.tls,
                                target.protocol)
        self._stack = ExitStack()
        try:
            self.client = self._stack.enter_context(
                connected_client(target, client_id or unique("pub"), persistent=False, timeout=5))
        except ConnectionError as exc:
            raise AssertionError(f"publisher could not connect: {exc}") from None

    def publish(self, messages: list[tuple[str, bytes]], rate: float | None = None,
                timeout: float = 60) -> None:
        publish_qos1(self.client, messages, rate=rate, timeout=timeout)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def external_broker(url: str) -> BrokerUnderTest:
    # A stock Mosquitto queues 1000 messages for an offline session and then drops.
    return BrokerUnderTest("external-mqtt", parse_mqtt_url(url, protocol="5"), 900)

