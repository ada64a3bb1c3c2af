"""Duplicate pledges on a normalised registration number, alerts that need an officer, and field
inspections, against a real PostgreSQL: the database's own key and its unique index (also when two
writers race), every refused attempt kept on the open alert, a count recorded through the CLI and
the API lowering trust until the sensors agree, comments required to resolve critical alerts, and
a geofence exit that stays in the queue as cleared."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from api.accounts import create_user, issue_api_key
from lending import operations
from lending.domain.alerts import AlertStatus, AlertType
from lending.domain.pledges import registration_key
from lending.engine import LendingEngine
from lending.operations import (
    CommentRequired,
    DuplicatePledgeError,
    InvalidRequest,
    list_alerts,
    load_portfolio,
    record_inspection,
    resolve_alert,
)
from lending.portfolio_file import PortfolioIn, read_portfolio
from pledgewatch.http import create_app
from pledgewatch.settings import Settings
from tests.integration.test_cli import pledgewatch
from tests.integration.test_lending_cli import land_readings, ok, refused

pytestmark = [pytest.mark.integration, pytest.mark.once_per_run]

PORTFOLIO = Path(__file__).resolve().parents[1] / "data" / "portfolio.yaml"
JWT_SECRET = "inspection-secret-" + "z" * 40
PASSWORD = "correct horse battery staple"
V1 = "/api/v1"
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "ZDW-2026-0001")  # an IME's full width


@pytest.fixture
def conn(migrated_db: str) -> Iterator[psycopg.Connection]:
    """The example portfolio (fac-grain: lot-wheat-1 registered as ZDW-2026-0001, weighed and
    counted; fac-metal: lot-copper-1 on a geofenced truck), loaded, with fresh readings."""
    with psycopg.connect(migrated_db, autocommit=True) as c:
        load_portfolio(c, read_portfolio(PORTFOLIO), datetime.now(UTC))
        land_readings(migrated_db)
        yield c


def claim(number: str, lot_id: str = "lot-x", facility: str = "fac-x") -> PortfolioIn:
    """Another borrower's portfolio pledging a lot under ``number``."""
    return PortfolioIn.model_validate({
        "borrowers": [{"id": "b-x", "name": "Borrower X", "tenant": "other"}],
        "facilities": [{"id": facility, "borrower": "b-x", "line": 100_000}],
        "lots": [{"id": lot_id, "facility": facility, "commodity": "wheat",
                  "declared_quantity": 10, "unit_weight_kg": 1000, "registration_no": number,
                  "sensors": [f"lc-{lot_id}"]}]})


def lot_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM lots").fetchone()
    assert row is not None
    return int(row[0])


def engine_pass(url: str, *facilities: str, engine: LendingEngine | None = None) -> None:
    own = engine or LendingEngine(url)
    try:
        own.recompute(list(facilities))
    finally:
        if engine is None:
            own.close()


def alert_of(conn: psycopg.Connection, kind: AlertType, lot_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM alerts WHERE type = %s AND lot_id = %s ORDER BY id DESC"
                           " LIMIT 1", (str(kind), lot_id)).fetchone()


def lot_line(conn: psycopg.Connection, facility: str, lot_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT inputs FROM limit_snapshots WHERE facility_id = %s"
                       " ORDER BY time DESC, id DESC LIMIT 1", (facility,)).fetchone()
    assert row is not None
    (line,) = [x for x in row[0]["lots"] if x["lot_id"] == lot_id]
    return dict(line)


# --- the registration key -----------------------------------------------------------------------

NUMBERS = ["ZDW-2026-0001", "zdw 2026 0001 ", FULL_WIDTH, "ZDW–2026·0001",
           "\ufeffZDW\u200b2026\u00ad0001", "「ZDW」2026、0001", "ZDW-2026-0002", "质押-2026-1",
           "抵押-2026-1", "Ⅻ-1", "STRASSE-1", "straße 1", "CAFE - \u0301 1", "café1", "a\tb"]


def test_the_database_key_never_joins_what_python_keeps_apart(conn: psycopg.Connection) -> None:
    keys = {n: conn.execute("SELECT pledge_registration_key(%s)", (n,)).fetchone()[0]  # type: ignore[index]
            for n in NUMBERS}
    assert len({keys[n] for n in NUMBERS[:6]}) == 1 == len({registration_key(n) for n in NUMBERS[:6]})
    for a, b in itertools.combinations(NUMBERS, 2):
        if keys[a] == keys[b]:
            assert registration_key(a) == registration_key(b), (a, b)
    stored = conn.execute("SELECT registration_key FROM lots WHERE lot_id = 'lot-wheat-1'").fetchone()
    assert stored == ("zdw20260001",)


@pytest.mark.parametrize("number", ["zdw 2026 0001 ", FULL_WIDTH, "Zdw_2026_0001"])
def test_a_retyped_number_is_refused_by_the_check_and_by_the_database(
        conn: psycopg.Connection, number: str) -> None:
    before = lot_count(conn)
    with pytest.raises(DuplicatePledgeError) as info:
        load_portfolio(conn, claim(number), datetime.now(UTC))
    (conflict,) = info.value.conflicts
    assert (conflict.what, conflict.existing.id) == ("registration number", "lot-wheat-1")
    assert lot_count(conn) == before
    with pytest.raises(psycopg.errors.UniqueViolation, match="lots_registration_key"):
        conn.execute("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity,"
                     " unit_weight_kg, registration_no) VALUES ('lot-raw', 'fac-metal', 'wheat',"
                     " 1, 1000, %s)", (number,))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity,"
                     " unit_weight_kg, registration_no) VALUES ('lot-raw', 'fac-metal', 'wheat',"
                     " 1, 1000, ' -- ')")


def test_the_unique_index_refuses_a_racing_duplicate(conn: psycopg.Connection,
                                                      migrated_db: str) -> None:
    """Two writers insert the same number, typed differently, in overlapping transactions: the
    second waits on the index and is refused when the first commits."""
    insert = ("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
              " registration_no) VALUES (%s, 'fac-metal', 'wheat', 1, 1000, %s)")
    outcome: list[BaseException | None] = []
    with psycopg.connect(migrated_db) as first, psycopg.connect(migrated_db) as second:
        first.execute(insert, ("lot-race-1", "ZDW-2026-7777"))
        pid = second.info.backend_pid

        def later() -> None:
            try:
                second.execute(insert, ("lot-race-2", "zdw 2026 7777"))
                second.commit()
                outcome.append(None)
            except psycopg.Error as exc:
                second.rollback()
                outcome.append(exc)

        racer = threading.Thread(target=later)
        racer.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the second writer waits for the first one's row
            row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                               (pid,)).fetchone()
            if row == ("Lock",):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the second insert never waited on the first")
        first.commit()
        racer.join(10)
    (error,) = outcome
    assert isinstance(error, psycopg.errors.UniqueViolation)
    assert conn.execute("SELECT lot_id FROM lots WHERE registration_key = 'zdw20267777'"
                        ).fetchall() == [("lot-race-1",)]


def test_two_loads_racing_for_one_number_pledge_it_once(conn: psycopg.Connection,
                                                        migrated_db: str) -> None:
    results: dict[str, BaseException | None] = {}
    start = threading.Barrier(2)

    def load(lot_id: str, number: str) -> None:
        with psycopg.connect(migrated_db, autocommit=True) as own:
            start.wait()
            try:
                load_portfolio(own, claim(number, lot_id, f"fac-{lot_id}"), datetime.now(UTC))
                results[lot_id] = None
            except DuplicatePledgeError as exc:
                results[lot_id] = exc

    threads = [threading.Thread(target=load, args=("lot-r1", "RACE-0001")),
               threading.Thread(target=load, args=("lot-r2", "race 0001"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r is None for r in results.values()) == [False, True], results
    assert conn.execute("SELECT count(*) FROM lots WHERE registration_key = 'race0001'"
                        ).fetchone() == (1,)


def test_a_duplicate_the_check_misses_is_refused_by_the_database_with_the_same_alert(
        conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "pledge_conflicts", lambda *_args: [])  # a check bypassed
    before = lot_count(conn)
    with pytest.raises(DuplicatePledgeError) as info:
        load_portfolio(conn, claim("zdw/2026/0001"), datetime.now(UTC))
    (conflict,) = info.value.conflicts
    assert (conflict.lot.id, conflict.existing.id) == ("lot-x", "lot-wheat-1")
    assert lot_count(conn) == before
    assert conn.execute("SELECT count(*) FROM facilities WHERE facility_id = 'fac-x'").fetchone() == (0,)
    alert = alert_of(conn, AlertType.DUPLICATE_PLEDGE, "lot-wheat-1")
    assert alert is not None and alert["facility_id"] == "fac-grain"
    assert alert["evidence"]["attempts"][0]["registration_no"] == "zdw/2026/0001"


def test_every_refused_attempt_is_recorded_on_the_open_alert(conn: psycopg.Connection) -> None:
    tries = [("zdw 2026 0001", "lot-x", "fac-x"), (FULL_WIDTH, "lot-y", "fac-y"),
             ("ZDW.2026.0001", "lot-z", "fac-z")]
    for number, lot_id, facility in tries:
        with pytest.raises(DuplicatePledgeError):
            load_portfolio(conn, claim(number, lot_id, facility), datetime.now(UTC))
    (alert,) = [a for a in list_alerts(conn) if a.type is AlertType.DUPLICATE_PLEDGE]
    assert (alert.facility_id, alert.lot_id, alert.status) == (
        "fac-grain", "lot-wheat-1", AlertStatus.OPEN)
    attempts = alert.evidence["attempts"]
    assert [(a["registration_no"], a["lot"], a["facility"]) for a in attempts] == tries
    assert all(a["matched"] == "registration number" and a["at"] for a in attempts)
    assert alert.evidence["attempted"][0]["lot"] == "lot-x"  # the first, as before
    kinds = [r[0] for r in conn.execute("SELECT kind FROM alert_events WHERE alert_id = %s"
                                        " ORDER BY id", (alert.id,)).fetchall()]
    assert kinds == ["raised", "escalated", "escalated"]  # the bank hears of each attempt
    assert alert.id is not None
    resolve_alert(conn, alert.id, "officer", "registry checked: the pledge is fac-grain's",
                  datetime.now(UTC))
    with pytest.raises(DuplicatePledgeError):
        load_portfolio(conn, claim("zdw-2026-0001", "lot-w", "fac-w"), datetime.now(UTC))
    fresh = alert_of(conn, AlertType.DUPLICATE_PLEDGE, "lot-wheat-1")
    assert fresh is not None and fresh["id"] != alert.id and fresh["status"] == "open"
    assert [a["lot"] for a in fresh["evidence"]["attempts"]] == ["lot-w"]


# --- critical alerts need an officer --------------------------------------------------------------

@pytest.fixture
def api(conn: psycopg.Connection, migrated_db: str, tmp_path: Path) -> Iterator[TestClient]:
    create_user(conn, "officer", PASSWORD, "officer")
    settings = Settings(state_dir=tmp_path / "state", jwt_secret=JWT_SECRET)  # type: ignore[arg-type]
    with TestClient(create_app(migrated_db, settings=settings),
                    raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def as_officer(api: TestClient) -> dict[str, str]:
    r = api.post(f"{V1}/auth/token", data={"username": "officer", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def key_for(conn: psycopg.Connection, borrower: str) -> dict[str, str]:
    key, _row = issue_api_key(conn, borrower, f"{borrower} ERP", "admin")
    return {"X-API-Key": key.secret}


def test_resolving_a_critical_alert_needs_a_comment_in_the_api_and_the_cli(
        conn: psycopg.Connection, api: TestClient, as_officer: dict[str, str], migrated_db: str,
        tmp_path: Path) -> None:
    with pytest.raises(DuplicatePledgeError):
        load_portfolio(conn, claim("zdw 2026 0001"), datetime.now(UTC))
    alert = alert_of(conn, AlertType.DUPLICATE_PLEDGE, "lot-wheat-1")
    assert alert is not None
    url = f"{V1}/alerts/{alert['id']}/resolve"
    for body in (None, {}, {"comment": None}, {"comment": ""}, {"comment": " \t\n "}):
        r = api.post(url, json=body, headers=as_officer)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "comment" in r.json()["detail"]
    with pytest.raises(CommentRequired):
        resolve_alert(conn, int(alert["id"]), "officer", "  ", datetime.now(UTC))
    for args in ((), ("--comment", ""), ("--comment", "   ")):
        refused(pledgewatch(migrated_db, tmp_path, "alerts", "resolve", str(alert["id"]), *args),
                "comment", one_line=True)
    assert alert_of(conn, AlertType.DUPLICATE_PLEDGE, "lot-wheat-1") == alert  # untouched
    r = api.post(url, json={"comment": "  registry checked  "}, headers=as_officer)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["comment"]) == ("resolved", "registry checked")

    # A warning an engine would clear by itself resolves without one.
    conn.execute("INSERT INTO alerts (key, type, severity, facility_id, lot_id, status, message,"
                 " evidence, auto_resolve, raised_at) VALUES ('sensor_stale:lot:lot-wheat-2',"
                 " 'sensor_stale', 'warning', 'fac-grain', 'lot-wheat-2', 'open', 'stale', '{}',"
                 " true, now())")
    stale = alert_of(conn, AlertType.SENSOR_STALE, "lot-wheat-2")
    assert stale is not None
    assert "resolved" in ok(pledgewatch(migrated_db, tmp_path, "alerts", "resolve",
                                        str(stale["id"])))


def test_geofence_exit_stays_in_the_queue_as_cleared(conn: psycopg.Connection,
                                                      migrated_db: str) -> None:
    """lot-copper-1 rides truck trk-t-0001 inside [[31, 121] … [32, 122]]."""
    engine = LendingEngine(migrated_db)
    start = datetime.now(UTC) - timedelta(minutes=20)
    try:
        def position(lat: float, lon: float, seq: int) -> None:
            """A fix every 5 minutes, ~2 km apart: a plausible truck, just across the line."""
            at, now = start + timedelta(minutes=5 * seq), datetime.now(UTC)
            for metric, value in (("lat", lat), ("lon", lon)):
                conn.execute("INSERT INTO readings VALUES (%s, 'trk-t-0001', %s, %s, 1, %s, %s)",
                             (at, metric, value, seq, now))
            conn.execute("INSERT INTO device_status (device_id, tenant, online, last_seen,"
                         " changed_at) VALUES ('trk-t-0001', 'acme', true, %s, %s) ON CONFLICT"
                         " (device_id) DO UPDATE SET last_seen = EXCLUDED.last_seen", (now, now))

        position(31.01, 121.01, 0)
        engine_pass(migrated_db, "fac-metal", engine=engine)
        assert alert_of(conn, AlertType.GEOFENCE_EXIT, "lot-copper-1") is None
        position(30.99, 121.01, 1)  # out of the corridor
        engine_pass(migrated_db, "fac-metal", engine=engine)
        out = alert_of(conn, AlertType.GEOFENCE_EXIT, "lot-copper-1")
        assert out is not None and (out["status"], out["cleared"], out["auto_resolve"]) == (
            "open", False, False)
        position(31.01, 121.01, 2)  # back inside: cleared, still the officer's
        engine_pass(migrated_db, "fac-metal", engine=engine)
        back = alert_of(conn, AlertType.GEOFENCE_EXIT, "lot-copper-1")
        assert back is not None and back["id"] == out["id"]
        assert (back["status"], back["cleared"], back["resolved_at"]) == ("open", True, None)
        assert out["id"] in [a.id for a in list_alerts(conn, "fac-metal")]  # still in the queue
        position(30.99, 121.01, 3)  # out again before anyone looked: no longer cleared, one alert
        engine_pass(migrated_db, "fac-metal", engine=engine)
        again = alert_of(conn, AlertType.GEOFENCE_EXIT, "lot-copper-1")
        assert again is not None and (again["id"], again["cleared"]) == (out["id"], False)
        engine_pass(migrated_db, "fac-metal", engine=engine)  # and nothing more on a replay
        kinds = conn.execute("SELECT kind FROM alert_events WHERE alert_id = %s ORDER BY id",
                             (out["id"],)).fetchall()
        assert kinds == [("raised",), ("escalated",)]  # out, (cleared: no event), out again
        with pytest.raises(CommentRequired):
            resolve_alert(conn, int(out["id"]), "officer", None, datetime.now(UTC))
        resolve_alert(conn, int(out["id"]), "officer", "driver took a detour, confirmed by phone",
                      datetime.now(UTC))
    finally:
        engine.close()


def test_a_tamper_flag_set_and_cleared_inside_a_backlog_raises(conn: psycopg.Connection,
                                                               migrated_db: str) -> None:
    engine = LendingEngine(migrated_db)
    try:
        engine_pass(migrated_db, "fac-grain", engine=engine)  # the cache has seen the live data
        now = datetime.now(UTC)
        with conn.cursor() as cur:  # a backlog from 10 minutes ago lands now: set 20 s, then clear
            cur.executemany("INSERT INTO readings VALUES (%s, 'wh-t-0001', 'tamper', %s, 2, %s, %s)",
                            [(now - timedelta(minutes=10, seconds=25 - 5 * i), v, i, now)
                             for i, v in enumerate([0.0, 1.0, 1.0, 1.0, 1.0, 0.0])])
        engine_pass(migrated_db, "fac-grain", engine=engine)
        tamper = alert_of(conn, AlertType.SENSOR_TAMPER, "lot-wheat-1")
        assert tamper is not None and tamper["severity"] == "critical"
        assert tamper["evidence"]["set_now"] == [] and "wh-t-0001" in tamper["evidence"]["seen_set_at"]
        assert not tamper["auto_resolve"]
    finally:
        engine.close()


# --- field inspections -----------------------------------------------------------------------------

def test_an_inspection_through_the_cli_and_the_api_outranks_the_sensors(
        conn: psycopg.Connection, api: TestClient, as_officer: dict[str, str], migrated_db: str,
        tmp_path: Path) -> None:
    engine_pass(migrated_db, "fac-grain")
    before = lot_line(conn, "fac-grain", "lot-wheat-1")
    assert before["trust"] == 1.0 and before["pledged"] == pytest.approx(100, abs=0.1)

    # The collateral manager finds 60 t where the sensors say 100 t.
    said = ok(pledgewatch(migrated_db, tmp_path, "inspection", "record", "lot-wheat-1", "--count",
                          "60", "--by", "CM Zhang", "--note", "bay 1 partly empty"))
    assert "counted 60.0 unit(s) by CM Zhang; the sensors said 100.0 unit(s)" in said
    listed = ok(pledgewatch(migrated_db, tmp_path, "inspection", "list", "--lot", "lot-wheat-1"))
    assert "lot-wheat-1 fac-grain counted 60.0 by CM Zhang (sensors 100.0): bay 1 partly empty" in listed
    engine_pass(migrated_db, "fac-grain")
    mismatch = alert_of(conn, AlertType.INSPECTION_MISMATCH, "lot-wheat-1")
    assert mismatch is not None and (mismatch["status"], mismatch["severity"]) == ("open", "warning")
    assert mismatch["evidence"]["counted_by"] == "CM Zhang"
    assert mismatch["evidence"]["sensor_quantity_then"] == pytest.approx(100, abs=0.1)
    line = lot_line(conn, "fac-grain", "lot-wheat-1")
    assert line["trust_factors"]["inspection_mismatch"] == 0.5 and line["trust"] == 0.5
    assert line["pledged"] == 60.0
    assert line["contribution"] < before["contribution"] * 0.31

    # An officer recounts through the API: 100 t, as the sensors say. The mismatch clears.
    r = api.post(f"{V1}/lots/lot-wheat-1/inspections", json={"counted_quantity": 100,
                 "note": "recount, all bays"}, headers=as_officer)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["counted_by"], body["recorded_by"], body["facility_id"]) == (
        "officer", "officer", "fac-grain")
    assert body["sensor_quantity"] == pytest.approx(100, abs=0.1)
    engine_pass(migrated_db, "fac-grain")
    resolved = alert_of(conn, AlertType.INSPECTION_MISMATCH, "lot-wheat-1")
    assert resolved is not None and resolved["id"] == mismatch["id"]
    assert resolved["status"] == "resolved"
    after = lot_line(conn, "fac-grain", "lot-wheat-1")
    assert "inspection_mismatch" not in after["trust_factors"] and after["trust"] == 1.0

    # Who sees the counts: the officer and the lot's own borrower; another borrower gets 404.
    listing = api.get(f"{V1}/lots/lot-wheat-1/inspections", headers=as_officer).json()["items"]
    assert [i["counted_quantity"] for i in listing] == [100.0, 60.0]
    own = api.get(f"{V1}/lots/lot-wheat-1/inspections", headers=key_for(conn, "sup-grain"))
    assert own.status_code == 200 and len(own.json()["items"]) == 2
    other = key_for(conn, "sup-metal")
    assert api.get(f"{V1}/lots/lot-wheat-1/inspections", headers=other).status_code == 404
    r = api.post(f"{V1}/lots/lot-wheat-1/inspections", json={"counted_quantity": 1},
                 headers=key_for(conn, "sup-grain"))
    assert r.status_code == 403  # a borrower cannot count its own goods


@pytest.mark.parametrize("body", [
    {"counted_quantity": -1}, {"counted_quantity": 1e13}, {"counted_quantity": "many"},
    {}, {"counted_quantity": 5, "counted_at": "2999-01-01T00:00:00Z"},
    {"counted_quantity": 5, "counted_at": "2026-01-01T00:00:00"},  # no time zone
    {"counted_quantity": 5, "counted_at": "2100-01-01T00:00:00Z"},  # in the future
    {"counted_quantity": 5, "counted_by": ""}, {"counted_quantity": 5, "counted_by": "   "},
    {"counted_quantity": 5, "note": "x" * 2001}, {"counted_quantity": 5, "lot_id": "lot-copper-1"},
])
def test_hostile_inspections_store_nothing(conn: psycopg.Connection, api: TestClient,
                                           as_officer: dict[str, str], body: dict[str, Any]) -> None:
    r = api.post(f"{V1}/lots/lot-wheat-1/inspections", json=body, headers=as_officer)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    for raw in (b'{"counted_quantity": NaN}', b'{"counted_quantity": Infinity}', b"\xff\xfe"):
        r = api.post(f"{V1}/lots/lot-wheat-1/inspections", content=raw,
                     headers={**as_officer, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
    assert api.post(f"{V1}/lots/lot-made-up/inspections", json={"counted_quantity": 1},
                    headers=as_officer).status_code == 404
    assert conn.execute("SELECT count(*) FROM inspections").fetchone() == (0,)


def test_hostile_counts_are_refused_by_the_operation_and_the_cli(
        conn: psycopg.Connection, migrated_db: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    for count in (float("nan"), float("inf"), -0.5, 1e13):
        with pytest.raises(InvalidRequest):
            record_inspection(conn, "lot-wheat-1", count, counted_by="x", recorded_by="x", now=now)
    with pytest.raises(InvalidRequest, match="future"):
        record_inspection(conn, "lot-wheat-1", 1, counted_by="x", recorded_by="x", now=now,
                          counted_at=now + timedelta(hours=1))
    with pytest.raises(InvalidRequest):
        record_inspection(conn, "lot-wheat-1", 1, counted_by=" ", recorded_by="x", now=now)
    for args in (("--count", "nan"), ("--count", "-5"), ("--count", "1e400")):
        refused(pledgewatch(migrated_db, tmp_path, "inspection", "record", "lot-wheat-1", *args),
                "count", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "inspection", "record", "lot-nope", "--count", "1"),
            "no lot", one_line=True)
    assert conn.execute("SELECT count(*) FROM inspections").fetchone() == (0,)
    assert "no inspections" in ok(pledgewatch(migrated_db, tmp_path, "inspection", "list"))
