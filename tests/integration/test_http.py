"""The HTTP app against a real, migrated database: health counts, latest value per metric, tenant
isolation, hostile query values, /metrics, and a database that disappears under it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from pledgewatch.http import create_app
from tests.support import BrokerUnderTest, Stack, unique

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def broker(brokers: dict[str, BrokerUnderTest]) -> BrokerUnderTest:
    """The HTTP app never talks MQTT: one broker kind is enough (no parametrization over brokers)."""
    return brokers["embedded-mqtt"]


@pytest.fixture
def client(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.database_url)) as c:
        yield c


def insert_readings(stack: Stack, rows: list[tuple[datetime, str, str, float, int, int]]) -> None:
    """rows: (time, device_id, metric, value, boot, seq)."""
    with stack.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, now())", rows)


def register_other_tenant(stack: Stack, tenant: str, *device_ids: str) -> None:
    with stack.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO devices (device_id, tenant, kind) VALUES (%s, %s, 'vehicle')",
                        [(d, tenant) for d in device_ids])


def by_id(body: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in body}


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


def test_latest_returns_the_newest_value_of_each_metric(stack: Stack, client: TestClient) -> None:
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
    response = client.get("/devices/latest", params={"tenant": stack.tenant})
    assert response.status_code == 200, response.text
    devices = by_id(response.json())
    assert set(devices) == {"wh-1", "wh-2"}

    wh1 = devices["wh-1"]
    assert wh1["tenant"] == stack.tenant and wh1["kind"] == "warehouse"
    values = {m: r["value"] for m, r in wh1["readings"].items()}
    assert values == {"weight_kg": 1000.0, "temp_c": 20.0, "humidity_pct": 40.0}
    assert parse_time(wh1["readings"]["weight_kg"]["time"]) == T0 + timedelta(minutes=10)
    assert parse_time(wh1["readings"]["temp_c"]["time"]) == T0

    assert {m: r["value"] for m, r in devices["wh-2"]["readings"].items()} == {"weight_kg": 2.5}


def test_a_device_without_readings_is_listed_with_none(stack: Stack, client: TestClient) -> None:
    stack.register("wh-quiet")
    body = client.get("/devices/latest", params={"tenant": stack.tenant}).json()
    assert body == [{"device_id": "wh-quiet", "tenant": stack.tenant, "kind": "warehouse",
                     "online": None, "last_seen": None, "readings": {}}]


def test_tenant_filter_isolates_tenants(stack: Stack, client: TestClient) -> None:
    other = unique("other")
    stack.register("a-1", "a-2")
    register_other_tenant(stack, other, "b-1")
    insert_readings(stack, [
        (T0, "a-1", "weight_kg", 1.0, 1, 1),
        (T0, "b-1", "weight_kg", 666.0, 1, 1),
        (T0, "b-1", "lat", 45.0, 1, 1),
    ])
    with stack.connect() as conn:
        conn.execute("INSERT INTO device_status (device_id, tenant, online, last_seen, changed_at)"
                     " VALUES ('b-1', %s, true, now(), now())", (other,))

    mine = client.get("/devices/latest", params={"tenant": stack.tenant}).json()
    assert sorted(d["device_id"] for d in mine) == ["a-1", "a-2"]
    assert all(d["tenant"] == stack.tenant for d in mine)
    assert 666.0 not in [r["value"] for d in mine for r in d["readings"].values()]
    assert "lat" not in {m for d in mine for m in d["readings"]}

    theirs = client.get("/devices/latest", params={"tenant": other}).json()
    assert [d["device_id"] for d in theirs] == ["b-1"]
    assert theirs[0]["online"] is True
    assert {m: r["value"] for m, r in theirs[0]["readings"].items()} == {"weight_kg": 666.0,
                                                                        "lat": 45.0}

    # A tenant that exists nowhere sees nothing; a prefix of a tenant is not that tenant.
    assert client.get("/devices/latest", params={"tenant": "nobody"}).json() == []
    assert client.get("/devices/latest", params={"tenant": stack.tenant[:-1]}).json() == []


@pytest.mark.parametrize(
    "query",
    ["tenant=a%20b", "tenant=" + "x" * 65, "tenant=%00", "tenant=acme%00", "tenant=%27%20OR%201%3D1%20--",
     "tenant=", "tenant=a%2Fb", "tenant=acme%0A", "tenant=%2B", "tenant=%23", "tenant=-acme",
     "tenant=%EF%BD%81cme"],
    ids=["space", "65-chars", "nul", "trailing-nul", "sql", "empty", "slash", "newline", "plus",
         "hash", "leading-dash", "fullwidth-a"],
)
def test_hostile_tenant_values_are_422(stack: Stack, client: TestClient, query: str) -> None:
    stack.register("wh-1")
    response = client.get(f"/devices/latest?{query}")
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_a_64_character_tenant_is_accepted(stack: Stack, client: TestClient) -> None:
    longest = "t" * 64
    register_other_tenant(stack, longest, "v-1")
    body = client.get("/devices/latest", params={"tenant": longest})
    assert body.status_code == 200, body.text
    assert [d["device_id"] for d in body.json()] == ["v-1"]


def test_hostile_tenant_sql_text_reaches_no_data(stack: Stack, client: TestClient) -> None:
    stack.register("wh-1")
    for tenant in ["' OR 1=1 --", "x" * 65, "a b", "\x00"]:
        response = client.get("/devices/latest", params={"tenant": tenant})
        assert response.status_code == 422, (tenant, response.text)
        assert "wh-1" not in response.text
    # ... and the database still answers normally afterwards.
    assert client.get("/health").json()["devices"] == 1


def test_metrics_are_prometheus_text(stack: Stack) -> None:
    registry = CollectorRegistry()
    Counter("pledgewatch_test_things", "things counted by the test", registry=registry).inc(3)
    with TestClient(create_app(stack.database_url, registry)) as c:
        response = c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]
    assert "# HELP pledgewatch_test_things_total things counted by the test" in response.text
    assert "# TYPE pledgewatch_test_things_total counter" in response.text
    assert "pledgewatch_test_things_total 3.0" in response.text.splitlines()


def test_metrics_default_to_the_process_registry(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert any(line.startswith("# TYPE ") for line in lines)
    assert any(line.startswith("python_info") for line in lines)


def test_health_is_503_once_the_database_is_gone(stack: Stack) -> None:
    with TestClient(create_app(stack.database_url), raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200
        stack.pg.drop(stack.database_url)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(stack.database_url, connect_timeout=5).close()
        for _ in range(2):  # the pool's cut connection, then a fresh attempt: both 503
            response = c.get("/health")
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": "database unavailable"}


def test_latest_is_503_once_the_database_is_gone(stack: Stack) -> None:
    with TestClient(create_app(stack.database_url), raise_server_exceptions=False) as c:
        assert c.get("/devices/latest").status_code == 200
        stack.pg.drop(stack.database_url)
        assert c.get("/devices/latest").status_code == 503
