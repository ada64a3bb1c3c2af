"""Devices, telemetry, borrowers, lots, releases, prices, sales and receivables over HTTP with the
two-tenant world: what each caller sees, what each may do, and hostile input refused with a clear
problem and nothing stored. (Who may reach whose objects is the matrix in test_authz_matrix.)"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from fastapi.testclient import TestClient

from api.problems import MEDIA_TYPE
from lending.engine import LendingEngine
from lending.store import latest_snapshots
from tests.integration.api.conftest import DEVICE, FAC, LOT, A, B, World

pytestmark = pytest.mark.integration

V1 = "/api/v1"
NOW = datetime.now(UTC).replace(microsecond=0)


def readings(world: World, rows: list[tuple[datetime, str, str, float]]) -> None:
    with world.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
            " VALUES (%s, %s, %s, %s, 1, %s, now())",
            [(t, d, m, v, i) for i, (t, d, m, v) in enumerate(rows)])


def count(world: World, table: str) -> int:
    with world.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# --- borrowers and lots -------------------------------------------------------------------------

def test_borrowers_are_scoped(api: TestClient, as_officer: dict[str, str],
                              as_a: dict[str, str]) -> None:
    everyone = api.get(f"{V1}/borrowers", headers=as_officer).json()["items"]
    assert {b["borrower_id"] for b in everyone} == {"core-mill", A, B}
    mine = api.get(f"{V1}/borrowers", headers=as_a).json()["items"]
    assert [(b["borrower_id"], b["facilities"]) for b in mine] == [(A, [FAC[A]])]
    assert api.get(f"{V1}/borrowers/{A}", headers=as_a).json()["core_id"] == "core-mill"


def test_lot_pledge_status_sensors_location_and_geofence(
        api: TestClient, world: World, as_officer: dict[str, str], as_b: dict[str, str]) -> None:
    wheat = api.get(f"{V1}/lots/{LOT[A]}", headers=as_officer).json()
    assert wheat["declared_quantity"] == 100 and wheat["commodity"] == "wheat"
    pledge = wheat["pledge"]
    assert pledge is not None and pledge["declared"] == 100
    assert set(pledge) >= {"verified", "trust", "trust_factors", "value", "price", "haircut"}
    assert 0 <= pledge["trust"] <= 1 and pledge["price"] == 2810
    assert [s["device_id"] for s in wheat["sensors"]] == ["rfid-t-0001", "wh-t-0001"]
    assert wheat["location"] is None and wheat["inside_geofence"] is None  # no fence, no GPS

    copper = api.get(f"{V1}/lots/{LOT[B]}", headers=as_b).json()
    assert copper["location"] is None and copper["inside_geofence"] is None
    with world.connect() as conn:
        conn.execute("INSERT INTO device_status (device_id, tenant, online, last_seen, changed_at)"
                     " VALUES ('trk-t-0001', 'acme', true, now(), now())")
    readings(world, [(NOW - timedelta(minutes=5), DEVICE[B], "lat", 31.5),
                     (NOW - timedelta(minutes=5), DEVICE[B], "lon", 121.5)])
    copper = api.get(f"{V1}/lots/{LOT[B]}", headers=as_b).json()
    assert copper["location"]["lat"] == 31.5 and copper["location"]["device_id"] == DEVICE[B]
    assert copper["inside_geofence"] is True
    assert copper["sensors"] == [{"device_id": DEVICE[B], "kind": "warehouse", "enabled": True,
                                  "online": True, "last_seen": copper["sensors"][0]["last_seen"]}]
    readings(world, [(NOW, DEVICE[B], "lat", 35.0), (NOW, DEVICE[B], "lon", 121.5)])
    copper = api.get(f"{V1}/lots/{LOT[B]}", headers=as_b).json()
    assert copper["location"]["lat"] == 35.0 and copper["inside_geofence"] is False
    lots = api.get(f"{V1}/lots", params={"facility_id": FAC[A]}, headers=as_officer).json()
    assert [lot["lot_id"] for lot in lots["items"]] == ["lot-wheat-1", "lot-wheat-2"]


# --- devices ------------------------------------------------------------------------------------

def test_provision_rotate_disable_a_device(api: TestClient, world: World,
                                           as_admin: dict[str, str]) -> None:
    r = api.post(f"{V1}/devices", json={"device_id": "wh-new-1", "tenant": "acme",
                                        "kind": "warehouse", "bound_to": "bay 9"}, headers=as_admin)
    assert r.status_code == 201, r.text
    issued = r.json()
    password = issued["mqtt_password"]
    assert issued["mqtt_username"] == "wh-new-1" and len(password) >= 24
    assert issued["device"]["has_credentials"] and issued["device"]["enabled"]

    def stored_hash() -> str:
        with world.connect() as conn:
            row = conn.execute("SELECT credentials_hash FROM devices WHERE device_id = 'wh-new-1'"
                               ).fetchone()
        assert row is not None
        return str(row[0])

    first = stored_hash()
    assert first.startswith("$argon2") and password not in first
    assert PasswordHasher().verify(first, password)
    shown = api.get(f"{V1}/devices/wh-new-1", headers=as_admin)
    assert shown.status_code == 200 and password not in shown.text and "argon2" not in shown.text

    again = api.post(f"{V1}/devices", json={"device_id": "wh-new-1", "tenant": "acme"},
                     headers=as_admin)
    problem(again, 409)
    assert stored_hash() == first

    rotated = api.post(f"{V1}/devices/wh-new-1/rotate", headers=as_admin)
    assert rotated.status_code == 200, rotated.text
    new_password = rotated.json()["mqtt_password"]
    assert new_password != password
    second = stored_hash()
    assert second != first and PasswordHasher().verify(second, new_password)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(second, password)

    disabled = api.post(f"{V1}/devices/wh-new-1/disable", headers=as_admin)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    enabled = api.post(f"{V1}/devices/wh-new-1/enable", headers=as_admin)
    assert enabled.json()["enabled"] is True


HOSTILE_DEVICES: dict[str, Any] = dict(zip(
    ["long", "space", "sql", "slash", "extra", "int", "missing", "bound-long", "list", "null"], [
    {"device_id": "x" * 65, "tenant": "acme"}, {"device_id": "a b", "tenant": "acme"},
    {"device_id": "' OR 1=1 --", "tenant": "acme"}, {"device_id": "d1", "tenant": "a/b"},
    {"device_id": "d1", "tenant": "acme", "extra": 1}, {"device_id": 5, "tenant": "acme"},
    {"device_id": "d1"}, {"device_id": "d1", "tenant": "acme", "bound_to": "x" * 201}, [], None,
    ], strict=True))


def test_hostile_device_bodies_are_422(api: TestClient, world: World, as_admin: dict[str, str],
                                       subtests: pytest.Subtests) -> None:
    before = count(world, "devices")
    for name, body in HOSTILE_DEVICES.items():
        with subtests.test(name):
            problem(api.post(f"{V1}/devices", json=body, headers=as_admin), 422)
    assert count(world, "devices") == before


# --- telemetry ----------------------------------------------------------------------------------

def test_bucketed_series_for_a_device_and_a_lot(api: TestClient, world: World,
                                                as_a: dict[str, str]) -> None:
    start = NOW.replace(minute=0, second=0) - timedelta(hours=2)
    readings(world, [(start + timedelta(minutes=m), DEVICE[A], "weight_kg", 1000.0 + m)
                     for m in range(0, 120, 10)])
    params = {"metric": "weight_kg", "start": start.isoformat(),
              "end": (start + timedelta(hours=2)).isoformat(), "bucket_s": 3600}
    device = api.get(f"{V1}/telemetry/devices/{DEVICE[A]}/series", params=params, headers=as_a)
    assert device.status_code == 200, device.text
    buckets = device.json()["buckets"]
    assert [b["count"] for b in buckets] == [6, 6]
    assert buckets[0]["min"] == 1000 and buckets[0]["max"] == 1050
    assert math.isclose(buckets[1]["avg"], 1085)
    lot = api.get(f"{V1}/telemetry/lots/{LOT[A]}/series", params=params, headers=as_a).json()
    assert [d["device_id"] for d in lot["devices"]] == ["rfid-t-0001", "wh-t-0001"]
    assert lot["devices"][1]["buckets"] == buckets and lot["devices"][0]["buckets"] == []
    latest = api.get(f"{V1}/telemetry/devices/{DEVICE[A]}/latest", headers=as_a).json()
    assert latest["readings"]["weight_kg"]["value"] == 1110


HOSTILE_SERIES = dict(zip(
    ["reversed", "over-a-year", "too-many-buckets", "bucket-0", "bucket-neg", "bucket-huge",
     "bucket-float", "naive-time", "year-1", "year-9999", "not-a-time", "unknown-metric",
     "no-metric", "sql"], [
    {"metric": "weight_kg", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    {"metric": "weight_kg", "start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z",
     "bucket_s": 86400},
    {"metric": "weight_kg", "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z",
     "bucket_s": 60},
    {"metric": "weight_kg", "bucket_s": 0}, {"metric": "weight_kg", "bucket_s": -5},
    {"metric": "weight_kg", "bucket_s": 10**20}, {"metric": "weight_kg", "bucket_s": "1e3"},
    {"metric": "weight_kg", "start": "2026-01-01T00:00:00"},
    {"metric": "weight_kg", "start": "0001-01-01T00:00:00+05:00"},
    {"metric": "weight_kg", "end": "9999-12-31T23:59:59-05:00"},
    {"metric": "weight_kg", "start": "yesterday"}, {"metric": "no_such_metric"}, {},
    {"metric": "weight_kg'; DROP TABLE readings; --"},
    ], strict=True))


def test_hostile_series_queries_are_422(api: TestClient, as_officer: dict[str, str],
                                        subtests: pytest.Subtests) -> None:
    for name, query in HOSTILE_SERIES.items():
        for path in (f"/telemetry/devices/{DEVICE[A]}/series", f"/telemetry/lots/{LOT[A]}/series"):
            with subtests.test(f"{name} {path}"):
                problem(api.get(V1 + path, params=query, headers=as_officer), 422)


HOSTILE_PATHS = [
    "/lots/" + "x" * 65, "/lots/%27%20OR%201%3D1--", "/devices/a%00b", "/borrowers/-x",
    "/releases/a%20b", "/telemetry/devices/%E2%80%8Bwh/latest", "/alerts/1e3", "/alerts/-1",
    "/alerts/99999999999999999999", "/facilities/fac%0Agrain",
]


def test_hostile_ids_in_paths_are_422(api: TestClient, as_officer: dict[str, str],
                                      subtests: pytest.Subtests) -> None:
    for path in HOSTILE_PATHS:
        with subtests.test(path):
            problem(api.get(V1 + path, headers=as_officer), 422)


# --- releases -----------------------------------------------------------------------------------

def test_release_lifecycle(api: TestClient, world: World, as_a: dict[str, str],
                           as_officer: dict[str, str]) -> None:
    r = api.post(f"{V1}/releases", json={"lot_id": LOT[A], "quantity": 30}, headers=as_a)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "requested" and order["facility_id"] == FAC[A]
    rid = order["release_id"]
    too_much = api.post(f"{V1}/releases", json={"lot_id": LOT[A], "quantity": 71}, headers=as_a)
    assert "cannot release" in problem(too_much, 409)["detail"]
    problem(api.post(f"{V1}/releases/{rid}/approve", headers=as_a), 403)
    assert api.get(f"{V1}/releases/{rid}", headers=as_a).json()["status"] == "requested"
    problem(api.post(f"{V1}/releases/{rid}/execute", headers=as_officer), 409)  # not approved
    assert api.post(f"{V1}/releases/{rid}/approve", headers=as_officer).json()["status"] == "approved"
    executed = api.post(f"{V1}/releases/{rid}/execute", headers=as_officer).json()
    assert executed["status"] == "executed" and executed["executed_at"]
    assert api.get(f"{V1}/lots/{LOT[A]}", headers=as_a).json()["declared_quantity"] == 70
    problem(api.post(f"{V1}/releases/{rid}/reject", headers=as_officer), 409)
    listed = api.get(f"{V1}/releases", params={"status": "executed"}, headers=as_a).json()
    assert [o["release_id"] for o in listed["items"]] == [rid]
    assert count(world, "release_orders") == 1


HOSTILE_RELEASES = [
    b'{"lot_id": "lot-wheat-1", "quantity": NaN}', b'{"lot_id": "lot-wheat-1", "quantity": Infinity}',
    b'{"lot_id": "lot-wheat-1", "quantity": -1}', b'{"lot_id": "lot-wheat-1", "quantity": 0}',
    b'{"lot_id": "lot-wheat-1", "quantity": 1e400}', b'{"lot_id": "lot-wheat-1", "quantity": 1e300}',
    b'{"lot_id": "lot-wheat-1", "quantity": "lots"}', b'{"lot_id": "lot-wheat-1"}',
    b'{"lot_id": "lot-wheat-1", "quantity": 1, "status": "executed"}',
    b'{"lot_id": ["lot-wheat-1"], "quantity": 1}', b'{"lot_id": "' + b"x" * 65 + b'", "quantity": 1}',
    b'{"lot_id": "lot-wheat-1", "quantity": 1', b"not json", b"\xff\xfe\x00", b"",
    b'[{"lot_id": "lot-wheat-1", "quantity": 1}]',
]


def test_hostile_release_requests_store_nothing(api: TestClient, world: World,
                                                as_a: dict[str, str],
                                                subtests: pytest.Subtests) -> None:
    for raw in HOSTILE_RELEASES:
        with subtests.test(raw[:40].decode("utf-8", "replace")):
            r = api.post(f"{V1}/releases", content=raw,
                         headers={**as_a, "Content-Type": "application/json"})
            problem(r, 422)
    assert count(world, "release_orders") == 0


# --- prices -------------------------------------------------------------------------------------

CSV_HEADER = "time,commodity,price,currency\n"


def test_post_prices_as_json_and_csv(api: TestClient, world: World,
                                     as_officer: dict[str, str], as_a: dict[str, str]) -> None:
    before = count(world, "prices")
    body = [{"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": 2900.5},
            {"commodity": "copper-cathode", "time": "2026-02-01T08:00:00+08:00", "price": 71000,
             "currency": "CNY"}]
    r = api.post(f"{V1}/prices", json=body, headers=as_officer)
    assert r.status_code == 201, r.text
    assert r.json() == {"posted": 2, "facilities": [FAC[A], FAC[B]]}
    csv_text = CSV_HEADER + "2026-02-02T00:00:00Z,wheat,2950,CNY\n\n2026-02-03T00:00:00Z,wheat,3000,CNY\n"
    r = api.post(f"{V1}/prices/csv", content=csv_text.encode(),
                 headers={**as_officer, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json()["posted"] == 2, r.text
    r = api.post(f"{V1}/prices/csv", headers=as_officer,
                 files={"file": ("p.csv", CSV_HEADER + "2026-02-04T00:00:00Z,wheat,3100,CNY\n",
                                 "text/csv")})
    assert r.status_code == 201 and r.json()["posted"] == 1, r.text
    assert count(world, "prices") == before + 5
    wheat = api.get(f"{V1}/prices", params={"commodity": "wheat", "limit": 2}, headers=as_a).json()
    assert [p["price"] for p in wheat["items"]] == [3100, 3000] and wheat["next_offset"] == 2
    copper = api.get(f"{V1}/prices", params={"commodity": "copper-cathode",
                                             "start": "2026-02-01T00:00:00Z"}, headers=as_a).json()
    assert [(p["time"], p["price"]) for p in copper["items"]] == [("2026-02-01T00:00:00Z", 71000)]


BAD_CSV = dict(zip(
    ["empty", "bad-header", "no-rows", "not-a-number", "non-finite", "bad-times",
     "column-count", "bad-ids", "unclosed-quote"], [
    ("", [1]), ("price,time\n", [1]), (CSV_HEADER, [2]),
    (CSV_HEADER + "2026-02-01T00:00:00Z,wheat,abc,CNY\n", [2]),
    (CSV_HEADER + "2026-02-01T00:00:00Z,wheat,100,CNY\n2026-02-01T00:00:00Z,wheat,NaN,CNY\n"
     "2026-02-02T00:00:00Z,wheat,inf,CNY\n2026-02-03T00:00:00Z,wheat,-5,CNY\n"
     "2026-02-04T00:00:00Z,wheat,1e400,CNY\n2026-02-05T00:00:00Z,wheat,1e300,CNY\n", [3, 4, 5, 6, 7]),
    (CSV_HEADER + "yesterday,wheat,100,CNY\n2026-02-01,wheat,100,CNY\n"
     "2026-02-01T00:00:00,wheat,100,CNY\n0001-01-01T00:00:00+05:00,wheat,100,CNY\n", [2, 3, 4, 5]),
    (CSV_HEADER + "2026-02-01T00:00:00Z,wheat,100\n2026-02-01T00:00:00Z,wheat,100,CNY,x\n", [2, 3]),
    (CSV_HEADER + "2026-02-01T00:00:00Z,' OR 1=1 --,100,CNY\n2026-02-01T00:00:00Z,wheat,100,yuan\n"
     "2026-02-01T00:00:00Z," + "w" * 65 + ",100,CNY\n", [2, 3, 4]),
    (CSV_HEADER + '2026-02-01T00:00:00Z,"wheat,100,CNY\n', [2]),
    ], strict=True))


def test_malformed_price_csv_names_its_lines_and_stores_nothing(
        api: TestClient, world: World, as_officer: dict[str, str],
        subtests: pytest.Subtests) -> None:
    before = count(world, "prices")
    for name, (csv_text, lines) in BAD_CSV.items():
        with subtests.test(name):
            r = api.post(f"{V1}/prices/csv", content=csv_text.encode(),
                         headers={**as_officer, "Content-Type": "text/csv"})
            body = problem(r, 422)
            assert [e["loc"][:3] for e in body["errors"]] == [["body", "line", n] for n in lines], body
            assert all(len(e["loc"]) == 4 and e["type"] == "csv_row" for e in body["errors"]), body
            assert body["detail"].startswith(f"body.line.{lines[0]}.{body['errors'][0]['loc'][3]}: ")
    assert count(world, "prices") == before


def test_a_price_csv_with_several_bad_rows_names_each_line_and_field(
        api: TestClient, world: World, as_officer: dict[str, str]) -> None:
    before = count(world, "prices")
    csv_text = (CSV_HEADER + "2026-02-01T00:00:00Z,wheat,100,CNY\n"
                "2026-01-01T00:00:00Z,Steel Coil!,1e300,NOT-A-CURRENCY-CODE\n\n"
                "2026-02-01T00:00:00,wheat,100,CNY\n2026-02-01T00:00:00Z,wheat,100,CNY,x\n"
                "2026-02-02T00:00:00Z,wheat,100,CNY\n")
    r = api.post(f"{V1}/prices/csv", content=csv_text.encode(),
                 headers={**as_officer, "Content-Type": "text/csv"})
    body = problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == [
        ["body", "line", 3, "commodity"], ["body", "line", 3, "price"],
        ["body", "line", 3, "currency"], ["body", "line", 5, "time"], ["body", "line", 6, "row"]]
    assert "'1e300'" in body["errors"][1]["msg"] and "NOT-A-CURRENCY-CODE" in body["errors"][2]["msg"]
    assert body["detail"].startswith("body.line.3.commodity: ")
    # The same row as JSON is refused on the same three fields.
    r = api.post(f"{V1}/prices", json=[{"commodity": "Steel Coil!", "time": "2026-01-01T00:00:00Z",
                                        "price": 1e300, "currency": "NOT-A-CURRENCY-CODE"}],
                 headers=as_officer)
    assert sorted(e["loc"][-1] for e in problem(r, 422)["errors"]) == ["commodity", "currency", "price"]
    # At most 20 errors are named, however many lines are bad.
    r = api.post(f"{V1}/prices/csv", content=(CSV_HEADER + "x,-,0,y\n" * 50).encode(),
                 headers={**as_officer, "Content-Type": "text/csv"})
    errors = problem(r, 422)["errors"]
    assert len(errors) == 20 and errors[-1]["loc"] == ["body", "line", 6, "currency"]
    # Bytes that are not UTF-8: the line they are on.
    r = api.post(f"{V1}/prices/csv", content=(CSV_HEADER + "2026-02-01T00:00:00Z,wh\xe9at,1,CNY\n"
                                               ).encode("latin-1"),
                 headers={**as_officer, "Content-Type": "text/csv"})
    assert [e["loc"] for e in problem(r, 422)["errors"]] == [["body", "line", 2, "file"]]
    assert count(world, "prices") == before


def test_price_uploads_refused_whole(api: TestClient, world: World,
                                     as_officer: dict[str, str]) -> None:
    before = count(world, "prices")
    unknown = CSV_HEADER + "2026-02-01T00:00:00Z,wheat,100,CNY\n2026-02-01T00:00:00Z,gold,1,CNY\n"
    r = api.post(f"{V1}/prices/csv", content=unknown, headers={**as_officer, "Content-Type": "text/csv"})
    assert "gold" in problem(r, 409)["detail"]
    problem(api.post(f"{V1}/prices/csv", content=b"\xff\xfe", headers={
        **as_officer, "Content-Type": "text/csv"}), 422)
    problem(api.post(f"{V1}/prices/csv", content=b"{}", headers={
        **as_officer, "Content-Type": "application/json"}), 415)
    problem(api.post(f"{V1}/prices/csv", headers=as_officer,
                     files={"upload": ("p.csv", unknown, "text/csv")}), 422)
    big = CSV_HEADER + "2026-02-01T00:00:00Z,wheat,100,CNY\n" * 80_000
    problem(api.post(f"{V1}/prices/csv", content=big, headers={
        **as_officer, "Content-Type": "text/csv"}), 413)
    for body in ([], [{"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": float("nan")}],
                 [{"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": 1e13}],
                 [{"commodity": "wheat", "time": "2026-02-01T00:00:00", "price": 1}],
                 [{"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": 1,
                   "currency": "cny"}],
                 [{"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": 1}] * 10_001,
                 {"commodity": "wheat", "time": "2026-02-01T00:00:00Z", "price": 1}):
        r = api.post(f"{V1}/prices", content=_json(body),
                     headers={**as_officer, "Content-Type": "application/json"})
        problem(r, 422)
    assert count(world, "prices") == before


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()  # NaN stays NaN (Python's json writes it)


# --- sales and receivables ----------------------------------------------------------------------

def test_enterprise_posts_sales_and_receivables(api: TestClient, as_a: dict[str, str],
                                                as_officer: dict[str, str]) -> None:
    sale = api.post(f"{V1}/sales", json={"facility_id": FAC[A], "amount": 1234.5}, headers=as_a)
    assert sale.status_code == 201, sale.text
    assert sale.json()["amount"] == 1234.5 and sale.json()["facility_id"] == FAC[A]
    past = (NOW - timedelta(days=1)).isoformat()
    api.post(f"{V1}/sales", json={"facility_id": FAC[A], "amount": 10, "time": past},
             headers=as_officer)
    listed = api.get(f"{V1}/sales", headers=as_a).json()["items"]
    assert [s["amount"] for s in listed] == [1234.5, 10]
    ar = api.post(f"{V1}/receivables", json={"facility_id": FAC[A], "debtor": "core-mill",
                                             "amount": 5000, "due": "2030-06-30T00:00:00Z"},
                  headers=as_a)
    assert ar.status_code == 201, ar.text
    assert ar.json()["receivable_id"].startswith("ar-") and ar.json()["paid"] is False
    mine = api.get(f"{V1}/receivables", headers=as_a).json()["items"]
    assert [r["debtor"] for r in mine] == ["core-mill"]
    assert len(api.get(f"{V1}/receivables", headers=as_officer).json()["items"]) == 2


def test_an_enterprises_receivable_counts_only_once_an_officer_verified_it(
        api: TestClient, world: World, as_a: dict[str, str], as_officer: dict[str, str]) -> None:
    def eligible() -> float:
        engine = LendingEngine(world.url)
        engine.recompute([FAC[A]])
        engine.close()
        with world.connect() as conn:
            return latest_snapshots(conn, [FAC[A]])[FAC[A]].eligible_receivables

    before = eligible()
    ar = api.post(f"{V1}/receivables", json={"facility_id": FAC[A], "debtor": "core-mill",
                                             "amount": 5000, "due": "2030-06-30T00:00:00Z"},
                  headers=as_a).json()
    assert ar["verified"] is False and ar["posted_by"] == world.key_id[A]
    assert eligible() == before, "an unchecked invoice raised the borrowing base"
    pending = api.get(f"{V1}/receivables?verified=false", headers=as_officer).json()["items"]
    assert [r["receivable_id"] for r in pending] == [ar["receivable_id"]]
    assert api.post(f"{V1}/receivables/{ar['receivable_id']}/verify",
                    headers=as_a).status_code == 403
    checked = api.post(f"{V1}/receivables/{ar['receivable_id']}/verify", headers=as_officer)
    assert checked.status_code == 200, checked.text
    assert checked.json()["verified"] is True and checked.json()["verified_by"] == "officer"
    assert eligible() == before + 5000
    by_bank = api.post(f"{V1}/receivables", json={"facility_id": FAC[A], "debtor": "core-mill",
                                                  "amount": 100, "due": "2030-06-30T00:00:00Z"},
                       headers=as_officer).json()
    assert by_bank["verified"] is True and by_bank["verified_by"] == "officer"


HOSTILE_SALES = dict(zip(
    ["nan", "inf", "negative", "huge", "string", "future", "naive", "extra", "sql-id",
     "empty-debtor", "long-debtor", "far-due", "ar-huge", "ar-extra", "ar-missing"], [
    ("/sales", {"facility_id": "fac-grain", "amount": float("nan")}),
    ("/sales", {"facility_id": "fac-grain", "amount": float("inf")}),
    ("/sales", {"facility_id": "fac-grain", "amount": -1}),
    ("/sales", {"facility_id": "fac-grain", "amount": 1e300}),
    ("/sales", {"facility_id": "fac-grain", "amount": "1,000"}),
    ("/sales", {"facility_id": "fac-grain", "amount": 1, "time": "2999-01-01T00:00:00Z"}),
    ("/sales", {"facility_id": "fac-grain", "amount": 1, "time": "2026-01-01T00:00:00"}),
    ("/sales", {"facility_id": "fac-grain", "amount": 1, "id": 7}),
    ("/sales", {"facility_id": "fac-grain'--", "amount": 1}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "", "amount": 1,
                      "due": "2030-01-01T00:00:00Z"}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "x" * 201, "amount": 1,
                      "due": "2030-01-01T00:00:00Z"}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "x", "amount": 1,
                      "due": "9999-12-31T23:59:59-12:00"}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "x", "amount": 1e15,
                      "due": "2030-01-01T00:00:00Z"}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "x", "amount": 1,
                      "due": "2030-01-01T00:00:00Z", "paid": True}),
    ("/receivables", {"facility_id": "fac-grain", "debtor": "x", "amount": 1}),
    ], strict=True))


def test_hostile_sales_and_receivables_store_nothing(api: TestClient, world: World,
                                                     as_a: dict[str, str],
                                                     subtests: pytest.Subtests) -> None:
    before = count(world, "sales") + count(world, "receivables")
    for name, (path, body) in HOSTILE_SALES.items():
        with subtests.test(name):
            r = api.post(V1 + path, content=_json(body),
                         headers={**as_a, "Content-Type": "application/json"})
            problem(r, 422)
    assert count(world, "sales") + count(world, "receivables") == before
