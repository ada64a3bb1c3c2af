"""Fixtures of the end-to-end tier."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import DB_KINDS
from tests.e2e.demo_process import Demo, stop_leftover_postgres
from tests.support import BrokerUnderTest, PgServer, Stack

# The over-MQTT lending tests run once per run: on the configured PostgreSQL and broker when the
# environment names them, else on the embedded ones.
DB_KIND = DB_KINDS[-1]
BROKER_KIND = "external-mqtt" if os.environ.get("PLEDGEWATCH_TEST_MQTT_URL") else "embedded-mqtt"


@pytest.fixture
def lending_stack(pg_servers: dict[str, PgServer], brokers: dict[str, BrokerUnderTest]
                  ) -> Iterator[Stack]:
    """A migrated database of its own and the run's broker."""
    pg = pg_servers[DB_KIND]
    url = pg.migrated_database()
    yield Stack(pg, url, brokers[BROKER_KIND])
    pg.drop(url)


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Starts demos on one state directory; stops them (and a PostgreSQL left behind) afterwards."""
    started: list[Demo] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Demo:
        started.append(Demo(tmp_path / "state", *args, env=env))
        return started[-1]

    yield start
    for demo in started:
        demo.kill()
    stop_leftover_postgres(tmp_path / "state" / "postgres")
