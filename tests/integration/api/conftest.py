"""A two-tenant world for the API tests: borrower A (``sup-grain``, facility ``fac-grain``) and
borrower B (``sup-metal``, facility ``fac-metal``) from ``tests/data/portfolio.yaml``, limit
snapshots from a real engine pass, one open alert per facility, an admin, an officer, and one API
key per borrower; the app runs in-process against the real database. The ``operators`` fixture
adds two warehouse operators, one storing A's lot and one B's, each with its own API key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.accounts import create_user, issue_api_key
from lending.domain.alerts import Alert, AlertType, Severity
from lending.engine import LendingEngine
from lending.operations import load_portfolio
from lending.operators import add_operator, assign_lots
from lending.portfolio_file import read_portfolio
from lending.store import insert_alert
from pledgewatch.http import create_app
from pledgewatch.settings import Settings
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import register_devices
from tests.conftest import DB_KINDS
from tests.support import BrokerUnderTest, PgServer

PORTFOLIO = Path(__file__).parents[2] / "data" / "portfolio.yaml"
JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery staple"

A, B = "sup-grain", "sup-metal"
FAC = {A: "fac-grain", B: "fac-metal"}
LOT = {A: "lot-wheat-1", B: "lot-copper-1"}
DEVICE = {A: "wh-t-0001", B: "trk-t-0001"}
OP = {A: "op-north", B: "op-south"}  # the warehouse operator storing A's lot, B's lot


@pytest.fixture
def pg(pg_servers: dict[str, PgServer]) -> PgServer:
    """The API's SQL runs on one server per run: the configured one when the environment names it
    (CI: the machine's PostgreSQL 15, the oldest supported), else the embedded default."""
    return pg_servers[DB_KINDS[-1]]


@pytest.fixture
def broker(brokers: dict[str, BrokerUnderTest]) -> BrokerUnderTest:
    """The API tests talk MQTT only where they say so: one broker kind is enough."""
    return brokers["embedded-mqtt"]


@dataclass
class World:
    url: str
    alert: dict[str, int]  # borrower -> an open alert on its facility
    key: dict[str, str]  # borrower -> API key secret
    key_id: dict[str, str]
    admin: str = "admin"
    officer: str = "officer"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)


@pytest.fixture
def world(migrated_db: str) -> World:
    now = datetime.now(UTC)
    alert_ids: dict[str, int] = {}
    keys: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        register_devices(conn, [DeviceInfo(d, "acme", "warehouse") for d in
                                ("wh-t-0001", "rfid-t-0001", "wh-t-0002", "trk-t-0001")])
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
    engine = LendingEngine(migrated_db)
    engine.recompute()
    engine.close()
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        for borrower in (A, B):
            alert_id = insert_alert(conn, Alert(
                key=f"test:{FAC[borrower]}", type=AlertType.SENSOR_TAMPER, severity=Severity.CRITICAL,
                facility_id=FAC[borrower], lot_id=LOT[borrower], message="seal broken",
                evidence={"device": DEVICE[borrower]}, raised_at=now, auto_resolve=False))
            assert alert_id is not None
            alert_ids[borrower] = alert_id
            key, row = issue_api_key(conn, borrower, f"{borrower} ERP", "admin")
            keys[borrower], key_ids[borrower] = key.secret, row["key_id"]
        create_user(conn, "admin", PASSWORD, "admin")
        create_user(conn, "officer", PASSWORD, "officer")
    return World(migrated_db, alert_ids, keys, key_ids)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"state_dir": tmp_path / "state", "jwt_secret": JWT_SECRET,
                              "auth_cache_s": 2.0, **overrides}
    return Settings(**values)


@pytest.fixture
def api(world: World, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(world.url, settings=settings(tmp_path)),
                    raise_server_exceptions=False) as client:
        yield client


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def as_admin(api: TestClient) -> dict[str, str]:
    return login(api, "admin")


@pytest.fixture
def as_officer(api: TestClient) -> dict[str, str]:
    return login(api, "officer")


@pytest.fixture
def operators(world: World) -> dict[str, str]:
    """Operator id -> its API key secret: OP[A] stores LOT[A], OP[B] stores LOT[B]."""
    keys: dict[str, str] = {}
    with world.connect() as conn:
        for borrower in (A, B):
            add_operator(conn, OP[borrower], f"{OP[borrower]} warehousing")
            assign_lots(conn, OP[borrower], [LOT[borrower]])
            key, _row = issue_api_key(conn, None, "WMS", "admin", operator_id=OP[borrower])
            keys[OP[borrower]] = key.secret
    return keys


@pytest.fixture
def as_op_a(operators: dict[str, str]) -> dict[str, str]:
    """The warehouse operator storing A's lot."""
    return {"X-API-Key": operators[OP[A]]}


@pytest.fixture
def as_a(world: World) -> dict[str, str]:
    return {"X-API-Key": world.key[A]}


@pytest.fixture
def as_b(world: World) -> dict[str, str]:
    return {"X-API-Key": world.key[B]}
