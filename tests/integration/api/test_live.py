"""Server-sent events over a real socket: a running server streams the engine's limit and alert
notifications, each caller only its own facilities', and refuses a stream without credentials."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from lending.domain.alerts import Alert, AlertType, Severity
from lending.store import insert_alert
from pledgewatch.http import create_app
from pledgewatch.serve import HttpServer
from tests.integration.api.conftest import FAC, LOT, A, B, World, settings
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def server(world: World, tmp_path: Path) -> Iterator[str]:
    app = create_app(world.url, settings=settings(tmp_path))
    http = HttpServer(app, "127.0.0.1", 0).start()
    assert wait_until(app.state.hub.connected.is_set, 10)
    yield http.url
    http.stop()


def listen(url: str, headers: dict[str, str], out: queue.Queue[tuple[str, dict[str, Any]]],
           ready: threading.Event) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server stops at the end of the test
        read_events(url, headers, out, ready)


def read_events(url: str, headers: dict[str, str], out: queue.Queue[tuple[str, dict[str, Any]]],
                ready: threading.Event) -> None:
    with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith(": connected"):
                ready.set()
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event:
                out.put((event, json.loads(line.removeprefix("data: "))))
                if out.qsize() >= 2 and headers.get("X-API-Key"):
                    return


def stream(url: str, headers: dict[str, str]) -> queue.Queue[tuple[str, dict[str, Any]]]:
    out: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    ready = threading.Event()
    threading.Thread(target=listen, args=(url, headers, out, ready), daemon=True).start()
    assert ready.wait(10), "the event stream did not open"
    return out


def raise_alert(world: World, borrower: str) -> int:
    with world.connect() as conn:
        alert_id = insert_alert(conn, Alert(
            key=f"live:{FAC[borrower]}", type=AlertType.UNAUTHORISED_OUTBOUND,
            severity=Severity.CRITICAL, facility_id=FAC[borrower], lot_id=LOT[borrower],
            message="goods left without a release", evidence={"drop_kg": 5000},
            raised_at=datetime.now(UTC)))
    assert alert_id is not None
    return alert_id


def test_each_caller_streams_only_what_it_may_see(world: World, server: str) -> None:
    officer_token = httpx.post(f"{server}/api/v1/auth/token",
                               data={"username": "officer", "password": "correct horse battery staple"}
                               ).json()["access_token"]
    as_officer = stream(server, {"Authorization": f"Bearer {officer_token}"})
    as_a = stream(server, {"X-API-Key": world.key[A]})

    b_alert = raise_alert(world, B)
    with world.connect() as conn:
        conn.execute("SELECT pg_notify('pw_limits', %s)", (json.dumps(
            {"facility_id": FAC[B], "limit": 1.0, "available": 1.0, "ltv": 0.1}),))
        conn.execute("SELECT pg_notify('pw_limits', %s)", (json.dumps(
            {"facility_id": FAC[A], "limit": 2.0, "available": 2.0, "ltv": 0.2}),))
    a_alert = raise_alert(world, A)

    seen_by_officer = [as_officer.get(timeout=10) for _ in range(4)]
    assert [(e, d["facility_id"]) for e, d in seen_by_officer] == [
        ("alert", FAC[B]), ("limit", FAC[B]), ("limit", FAC[A]), ("alert", FAC[A])]
    assert seen_by_officer[0][1]["id"] == b_alert and seen_by_officer[0][1]["borrower_id"] == B

    seen_by_a = [as_a.get(timeout=10) for _ in range(2)]
    assert seen_by_a == [("limit", {"facility_id": FAC[A], "limit": 2.0, "available": 2.0,
                                    "ltv": 0.2, "borrower_id": A}),
                         ("alert", {**seen_by_a[1][1], "id": a_alert, "facility_id": FAC[A]})]
    assert as_a.empty(), "enterprise A was sent another borrower's event"


def test_a_stream_needs_credentials(world: World, server: str) -> None:
    for headers in ({}, {"X-API-Key": "pwk_forged"}, {"Authorization": "Bearer nonsense"}):
        r = httpx.get(f"{server}/api/v1/events", headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"


def test_notifications_with_bad_payloads_do_not_stop_the_stream(world: World, server: str) -> None:
    as_a = stream(server, {"X-API-Key": world.key[A]})
    with psycopg.connect(world.url, autocommit=True) as conn:
        for junk in ("not json", "[]", '{"no_facility": 1}', '{"facility_id": "nope"}'):
            conn.execute("SELECT pg_notify('pw_limits', %s)", (junk,))
    alert_id = raise_alert(world, A)
    event, data = as_a.get(timeout=10)
    assert (event, data["id"]) == ("alert", alert_id)
