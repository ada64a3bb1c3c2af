"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from gateway.mqtt import parse_mqtt_url
from pledgewatch.broker.mosquitto import Mosquitto, mosquitto_binary
from pledgewatch.embedded import EmbeddedBroker
from tests.support import (
    BrokerUnderTest,
    EmbeddedPgServer,
    ExternalPgServer,
    PgServer,
    Stack,
    external_broker,
)

T = TypeVar("T")

DB_KINDS = ["embedded-pg"] + (["external-pg"] if os.environ.get("PLEDGEWATCH_TEST_DATABASE_URL")
                              else [])
BROKER_KINDS = ["embedded-mqtt", "mosquitto"] + (
    ["external-mqtt"] if os.environ.get("PLEDGEWATCH_TEST_MQTT_URL") else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" in metafunc.fixturenames:
        metafunc.parametrize("db_kind", DB_KINDS, scope="session")
    if "broker_kind" in metafunc.fixturenames:
        metafunc.parametrize("broker_kind", BROKER_KINDS, scope="session")


class Started(dict[str, T]):
    """Services by kind, started on first use and kept for the session."""

    def __init__(self, start: Callable[[str], T]) -> None:
        super().__init__()
        self._start = start

    def __missing__(self, kind: str) -> T:
        self[kind] = self._start(kind)
        return self[kind]


@pytest.fixture(scope="session")
def pg_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started[PgServer]]:
    def start(kind: str) -> PgServer:
        if kind == "embedded-pg":
            return EmbeddedPgServer(tmp_path_factory.mktemp("pg") / "data")
        return ExternalPgServer(os.environ["PLEDGEWATCH_TEST_DATABASE_URL"])

    servers = Started(start)
    yield servers
    for server in servers.values():
        server.drop_template()
        if isinstance(server, EmbeddedPgServer):
            server.close()


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started[BrokerUnderTest]]:
    stops: list[Callable[[], None]] = []

    def start(kind: str) -> BrokerUnderTest:
        if kind == "embedded-mqtt":
            embedded = EmbeddedBroker().start()
            stops.append(embedded.stop)
            return BrokerUnderTest(kind, parse_mqtt_url(embedded.url, protocol="3.1.1"), 100_000)
        if kind == "mosquitto":
            if mosquitto_binary() is None:
                pytest.fail("mosquitto is not installed; `make test` installs it")
            mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
            stops.append(mosquitto.stop)
            return BrokerUnderTest(kind, parse_mqtt_url(mosquitto.url(), protocol="5"), 1_000_000)
        return external_broker(os.environ["PLEDGEWATCH_TEST_MQTT_URL"])

    yield Started(start)
    for stop in stops:
        stop()


@pytest.fixture
def pg(db_kind: str, pg_servers: dict[str, PgServer]) -> PgServer:
    return pg_servers[db_kind]


@pytest.fixture
def broker(broker_kind: str, brokers: dict[str, BrokerUnderTest]) -> BrokerUnderTest:
    return brokers[broker_kind]


@pytest.fixture
def stack(pg: PgServer, broker: BrokerUnderTest) -> Iterator[Stack]:
    url = pg.migrated_database()
    yield Stack(pg, url, broker)
    pg.drop(url)


@pytest.fixture
def migrated_db(pg: PgServer) -> Iterator[str]:
    """A fresh, migrated database of its own (a copy of a migrated template)."""
    url = pg.migrated_database()
    yield url
    pg.drop(url)


@pytest.fixture
def empty_db(pg: PgServer) -> Iterator[str]:
    """A fresh database with no tables."""
    url = pg.empty_database()
    yield url
    pg.drop(url)
