"""The HTTP app against a real, migrated database: health counts, the latest value per metric
(``GET /api/v1/telemetry/latest``, signed in), borrower isolation of telemetry, hostile query
values, /metrics, and a database that disappears under it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from api.accounts import create_user, issue_api_key
from api.security import Role, issue_token
from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from pledgewatch.http import create_app
from pledgewatch.settings import Settings
from tests.support import BrokerUnderTest, Stack

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LATEST = "/api/v1/telemetry/latest"
JWT_SECRET = "http-test-secret-" + "z" * 40
PORTFOLIO = Path(__file__).parents[1] / "data" / "portfolio.yaml"
PROBLEM = "application/problem+json"


@pytest.fixture
def broker(brokers: dict[str, BrokerUnderTest]) -> BrokerUnderTest:
    """The HTTP app never talks MQTT: one broker kind is enough (no parametrization over brokers)."""
    return brokers["embedded-mqtt"]


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"state_dir": tmp_path / "state", "jwt_secret": JWT_SECRET})


@pytest.fixture
def client(stack: Stack, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(stack.database_url, settings=settings(tmp_path)),
                    raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def officer(stack: Stack) -> dict[str, str]:
    """An officer sees every device."""
    with stack.connect() as conn:
        create_user(conn, "officer", "correct horse battery staple", "officer")
    token = issue_token(JWT_SECRET, "officer", Role.OFFICER, timedelta(hours=1))
    return {"Authorization": f"Bearer {token}"}


def insert_readings(stack: Stack, rows: list[tuple[datetime, str, str, float, int, int]]) -> None:
    """rows: (time, device_id, metric, value, boot, seq)."""
    with stack.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, now())", rows)


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in body["items"]}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_health_counts_what_is_stored(stack: Stack, client: TestClient) -> None:
    empty = client.get("/health")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"status": "ok", "database": "ok", "readings": 0, "dead_letters": 0,
                            "devices": 0, "online": 0}

    stack.register("wh-1", "wh-2", "wh-3")
    insert_readings(stack, [(T0 + timedelta(seconds=i), "wh-1", "weight_kg", float(i), 1, i)
                            for i in range(5)])
    with stack.connect() as conn:
        conn.execute("INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
                     " VALUES (now(), 'pw/v1/x/y/telemetry', '\\x00', 'malformed_json', 'x')")
        conn.execute("INSERT INTO device_status (device_id, tenant, online, last_seen, changed_at)"
                     " VALUES ('wh-1', %(t)s, true, now(), now()),"
                     "        ('wh-2', %(t)s, false, now(), now())", {"t": stack.tenant})
    body = client.get("/health").json()
    assert body == {"status": "ok", "database": "ok", "readings": 5, "dead_letters": 1,
                    "devices": 3, "online": 1}


def test_latest_needs_credentials(stack: Stack, client: TestClient) -> None:
    stack.register("wh-1")
    response = client.get(LATEST)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert "wh-1" not in response.text
    assert client.get("/devices/latest").status_code == 404  # the old public route is gone


def test_latest_returns_the_newest_value_of_each_metric(stack: Stack, client: TestClient,
                                                        officer: dict[str, str]) -> None:
    stack.register("wh-1", "wh-2")
    insert_readings(stack, [
        # weight: the newest time wins, whatever the insertion order or seq.
        (T0 + timedelta(minutes=5), "wh-1", "weight_kg", 500.0, 1, 5),
        (T0, "wh-1", "weight_kg", 100.0, 1, 99),
        (T0 + timedelta(minutes=10), "wh-1", "weight_kg", 1000.0, 1, 10),
        (T0 + timedelta(minutes=7), "wh-1", "weight_kg", 700.0, 1, 7),
        # temperature: the same time twice; the higher seq wins.
        (T0, "wh-1", "temp_c", 20.0, 1, 6),
        (T0, "wh-1", "temp_c", 10.0, 1, 5),
        # humidity: the same time and seq; the later boot wins.
        (T0, "wh-1", "humidity_pct", 30.0, 1, 1),
        (T0, "wh-1", "humidity_pct", 40.0, 2, 1),
        # a second device, so the per-device probe cannot mix them up.
        (T0 + timedelta(hours=1), "wh-2", "weight_kg", 2.5, 1, 1),
    ])
    response = client.get(LATEST, headers=officer)
    assert response.status_code == 200, response.text
    devices = by_id(response.json())
    assert set(devices) == {"wh-1", "wh-2"}

    wh1 = devices["wh-1"]
    assert wh1["kind"] == "warehouse"
    values = {m: r["value"] for m, r in wh1["readings"].items()}
    assert values == {"weight_kg": 1000.0, "temp_c": 20.0, "humidity_pct": 40.0}
    assert parse_time(wh1["readings"]["weight_kg"]["time"]) == T0 + timedelta(minutes=10)
    assert parse_time(wh1["readings"]["temp_c"]["time"]) == T0

    assert {m: r["value"] for m, r in devices["wh-2"]["readings"].items()} == {"weight_kg": 2.5}
    one = client.get("/api/v1/telemetry/devices/wh-1/latest", headers=officer).json()
    assert one == wh1


def test_a_device_without_readings_is_listed_with_none(stack: Stack, client: TestClient,
                                                       officer: dict[str, str]) -> None:
    stack.register("wh-quiet")
    body = client.get(LATEST, headers=officer).json()
    assert body["items"] == [{"device_id": "wh-quiet", "kind": "warehouse", "lot_id": None,
                              "online": None, "last_seen": None, "readings": {}}]


def test_latest_pages(stack: Stack, client: TestClient, officer: dict[str, str]) -> None:
    stack.register(*(f"wh-{i:02d}" for i in range(5)))
    first = client.get(LATEST, params={"limit": 2}, headers=officer).json()
    assert [d["device_id"] for d in first["items"]] == ["wh-00", "wh-01"]
    assert first["next_offset"] == 2
    last = client.get(LATEST, params={"limit": 2, "offset": 4}, headers=officer).json()
    assert [d["device_id"] for d in last["items"]] == ["wh-04"] and last["next_offset"] is None


def test_enterprises_see_only_the_sensors_of_their_own_lots(stack: Stack,
                                                            client: TestClient) -> None:
    """Borrower isolation replaces the old ``?tenant=`` filter: an enterprise's API key sees the
    devices bound to its own lots, and nothing of another borrower's."""
    stack.register("wh-t-0001", "rfid-t-0001", "wh-t-0002", "trk-t-0001", "unbound-1")
    with stack.connect() as conn:
        load_portfolio(conn, read_portfolio(PORTFOLIO), datetime.now(UTC))
        grain, _ = issue_api_key(conn, "sup-grain", "grain ERP", "admin")
        metal, _ = issue_api_key(conn, "sup-metal", "metal ERP", "admin")
        conn.execute("INSERT INTO device_status (device_id, tenant, online, last_seen, changed_at)"
                     " VALUES ('trk-t-0001', %s, true, now(), now())", (stack.tenant,))
    insert_readings(stack, [
        (T0, "wh-t-0001", "weight_kg", 1.0, 1, 1),
        (T0, "trk-t-0001", "weight_kg", 666.0, 1, 1),
        (T0, "trk-t-0001", "lat", 31.5, 1, 2),
        (T0, "unbound-1", "weight_kg", 7.0, 1, 1),
    ])
    mine = client.get(LATEST, headers={"X-API-Key": grain.secret}).json()["items"]
    assert sorted(d["device_id"] for d in mine) == ["rfid-t-0001", "wh-t-0001", "wh-t-0002"]
    assert {d["lot_id"] for d in mine} == {"lot-wheat-1", "lot-wheat-2"}
    values = [r["value"] for d in mine for r in d["readings"].values()]
    assert 666.0 not in values and 7.0 not in values
    assert "lat" not in {m for d in mine for m in d["readings"]}

    theirs = client.get(LATEST, headers={"X-API-Key": metal.secret}).json()["items"]
    assert [d["device_id"] for d in theirs] == ["trk-t-0001"]
    assert theirs[0]["online"] is True
    assert {m: r["value"] for m, r in theirs[0]["readings"].items()} == {"weight_kg": 666.0,
                                                                        "lat": 31.5}
    # Asking for the other borrower's facility or device answers like asking for nothing.
    assert client.get(LATEST, params={"facility_id": "fac-metal"},
                      headers={"X-API-Key": grain.secret}).json()["items"] == []
    for device in ("trk-t-0001", "nothing-here"):
        r = client.get(f"/api/v1/telemetry/devices/{device}/latest",
                       headers={"X-API-Key": grain.secret})
        assert r.status_code == 404 and "666" not in r.text


@pytest.mark.parametrize(
    "query",
    ["facility_id=a%20b", "facility_id=" + "x" * 65, "facility_id=%00", "facility_id=acme%00",
     "facility_id=%27%20OR%201%3D1%20--", "facility_id=", "facility_id=a%2Fb",
     "facility_id=acme%0A", "facility_id=%2B", "facility_id=%23", "facility_id=-acme",
     "facility_id=%EF%BD%81cme", "lot_id=%27%3B%20DROP%20TABLE%20readings%3B--", "limit=0",
     "limit=501", "offset=-1", "limit=1e3", "offset=99999999999999999999"],
    ids=["space", "65-chars", "nul", "trailing-nul", "sql", "empty", "slash", "newline", "plus",
         "hash", "leading-dash", "fullwidth-a", "lot-sql", "limit-0", "limit-501", "offset-neg",
         "limit-float", "offset-huge"],
)
def test_hostile_query_values_are_422(stack: Stack, client: TestClient, officer: dict[str, str],
                                      query: str) -> None:
    stack.register("wh-1")
    response = client.get(f"{LATEST}?{query}", headers=officer)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"]


def test_a_64_character_id_is_accepted(stack: Stack, client: TestClient,
                                       officer: dict[str, str]) -> None:
    body = client.get(LATEST, params={"facility_id": "f" * 64}, headers=officer)
    assert body.status_code == 200, body.text
    assert body.json()["items"] == []


def test_hostile_sql_text_reaches_no_data(stack: Stack, client: TestClient,
                                          officer: dict[str, str]) -> None:
    stack.register("wh-1")
    for value in ["' OR 1=1 --", "x" * 65, "a b", "\x00"]:
        response = client.get(LATEST, params={"facility_id": value}, headers=officer)
        assert response.status_code == 422, (value, response.text)
        assert "wh-1" not in response.text
    # ... and the database still answers normally afterwards.
    assert client.get("/health").json()["devices"] == 1


def test_metrics_are_prometheus_text(stack: Stack, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("pledgewatch_test_things", "things counted by the test", registry=registry).inc(3)
    with TestClient(create_app(stack.database_url, registry, settings(tmp_path))) as c:
        response = c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]
    assert "# HELP pledgewatch_test_things_total things counted by the test" in response.text
    assert "# TYPE pledgewatch_test_things_total counter" in response.text
    assert "pledgewatch_test_things_total 3.0" in response.text.splitlines()


def test_metrics_default_to_the_process_registry(client: TestClient) -> None:
    response = client.get("/metrics")  # public, at the root, like /health
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert any(line.startswith("# TYPE ") for line in lines)
    assert any(line.startswith("python_info") for line in lines)


def test_health_is_503_once_the_database_is_gone(stack: Stack, tmp_path: Path) -> None:
    with TestClient(create_app(stack.database_url, settings=settings(tmp_path)),
                    raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200
        stack.pg.drop(stack.database_url)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(stack.database_url, connect_timeout=5).close()
        for _ in range(2):  # the pool's cut connection, then a fresh attempt: both 503
            response = c.get("/health")
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["detail"] == "database unavailable"


def test_latest_is_503_once_the_database_is_gone(stack: Stack, tmp_path: Path,
                                                 officer: dict[str, str]) -> None:
    with TestClient(create_app(stack.database_url, settings=settings(tmp_path)),
                    raise_server_exceptions=False) as c:
        assert c.get(LATEST, headers=officer).status_code == 200
        stack.pg.drop(stack.database_url)
        response = c.get(LATEST, headers=officer)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == PROBLEM
