"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
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
_OWN_BASETEMP = pytest.StashKey[Path]()

DB_KINDS = ["embedded-pg"] + (["external-pg"] if os.environ.get("PLEDGEWATCH_TEST_DATABASE_URL")
                              else [])
BROKER_KINDS = ["embedded-mqtt", "mosquitto"] + (
    ["external-mqtt"] if os.environ.get("PLEDGEWATCH_TEST_MQTT_URL") else [])


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A private ``--basetemp`` per run (unless one is given): pytest's shared numbered folders
    under /tmp/pytest-of-<user> are pruned by whichever run starts next, so two runs on one
    machine could delete each other's databases and broker state."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="pledgewatch-tests-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the private base folder after a passing run; keep it for a look after a failure."""
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" in metafunc.fixturenames:
        once = metafunc.definition.get_closest_marker("once_per_run") is not None
        metafunc.parametrize("db_kind", DB_KINDS[-1:] if once else DB_KINDS, scope="session")
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
