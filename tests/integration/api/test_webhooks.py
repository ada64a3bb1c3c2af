"""The webhooks API: bank users register receivers and read the delivery log; enterprises may not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from notifier.config import NotifierConfig
from notifier.signing import verify
from notifier.worker import Notifier
from pledgewatch.http import create_app
from pledgewatch.notifier_hooks import notifier_hooks
from tests.integration.api.conftest import FAC, A, World, login
from tests.integration.api.conftest import settings as app_settings
from tests.integration.test_notifications import Receiver
from tests.support import wait_until

pytestmark = pytest.mark.integration

SECRET = "a-secret-of-the-bank-" + "z" * 20
# Webhooks go to public addresses only: these tests' receivers are allow-listed explicitly (the
# local receiver on 127.0.0.1, and a name that never resolves here, so nothing leaves the host).
ALLOW = ["127.0.0.1", "bank.example"]


@pytest.fixture
def api(world: World, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(world.url, settings=app_settings(tmp_path, webhook_allow=ALLOW)),
                    raise_server_exceptions=False) as client:
        yield client


def create(api: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/webhooks", json={"url": "https://bank.example/hooks", **body},
                 headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def dispatch(world: World, **config: Any) -> int:
    """One synchronous pass of a notifier over the outbox (webhooks only)."""
    notifier = Notifier(world.url, NotifierConfig(webhook_allow=("127.0.0.1",), **config))
    try:
        with world.connect() as conn:
            return notifier.run_once(conn)
    finally:
        notifier.stop()


def test_create_returns_a_generated_secret_once(api: TestClient, as_officer: dict[str, str],
                                                world: World) -> None:
    made = create(api, as_officer, description="core banking")
    assert made["secret"].startswith("whsec_") and len(made["secret"]) >= 32
    assert made["active"] and made["created_by"] == "officer" and made["borrower_id"] is None
    got = api.get(f"/api/v1/webhooks/{made['id']}", headers=as_officer).json()
    assert "secret" not in got and got["description"] == "core banking"
    with world.connect() as conn:
        stored = conn.execute("SELECT secret FROM webhooks WHERE id = %s", (made["id"],)).fetchone()
    assert stored == (made["secret"],)


def test_a_chosen_secret_is_kept_and_not_echoed(api: TestClient, as_admin: dict[str, str]) -> None:
    made = create(api, as_admin, secret=SECRET, borrower_id=A)
    assert made["secret"] is None and made["borrower_id"] == A


def test_list_filters_and_paginates(api: TestClient, as_officer: dict[str, str]) -> None:
    ids = [create(api, as_officer, borrower_id=A)["id"], create(api, as_officer)["id"],
           create(api, as_officer)["id"]]
    page = api.get("/api/v1/webhooks", params={"limit": 2}, headers=as_officer).json()
    assert [w["id"] for w in page["items"]] == ids[::-1][:2] and page["next_offset"] == 2
    only_a = api.get("/api/v1/webhooks", params={"borrower_id": A}, headers=as_officer).json()
    assert [w["id"] for w in only_a["items"]] == [ids[0]]
    assert all("secret" not in w for w in page["items"])


@pytest.mark.parametrize("body", [
    {"url": "ftp://bank.example/hooks"},
    {"url": "file:///etc/passwd"},
    {"url": "bank.example/hooks"},
    {"url": "https://user:pw@bank.example/hooks"},
    {"url": "http://bank.example:99999/"},
    {"url": "https://bank.example/" + "x" * 2000},
    {"url": "https://bank.example/hooks", "secret": "too-short"},
    {"url": "https://bank.example/hooks", "secret": "has spaces " + "x" * 40},
    {"url": "https://bank.example/hooks", "borrower_id": "no-such-borrower"},
    {"url": "https://bank.example/hooks", "surprise": 1},
])
def test_invalid_webhooks_are_refused(api: TestClient, as_officer: dict[str, str],
                                      body: dict[str, Any]) -> None:
    r = api.post("/api/v1/webhooks", json=body, headers=as_officer)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_enterprises_get_403_on_every_route(api: TestClient, as_officer: dict[str, str],
                                            as_a: dict[str, str]) -> None:
    hook = create(api, as_officer, borrower_id=A)["id"]
    calls = [("POST", "/api/v1/webhooks", {"url": "https://a.example/hooks"}),
             ("GET", "/api/v1/webhooks", None), ("GET", f"/api/v1/webhooks/{hook}", None),
             ("DELETE", f"/api/v1/webhooks/{hook}", None),
             ("GET", f"/api/v1/webhooks/{hook}/deliveries", None),
             ("POST", f"/api/v1/webhooks/{hook}/test", None)]
    for method, path, body in calls:
        r = api.request(method, path, json=body, headers=as_a)
        assert r.status_code == 403, (method, path, r.text)
        assert api.request(method, path, json=body).status_code == 401
    assert api.get(f"/api/v1/webhooks/{hook}", headers=as_officer).json()["active"]


def test_unknown_webhooks_are_404(api: TestClient, as_officer: dict[str, str]) -> None:
    for method, path in [("GET", "/api/v1/webhooks/999999"), ("DELETE", "/api/v1/webhooks/999999"),
                         ("GET", "/api/v1/webhooks/999999/deliveries"),
                         ("POST", "/api/v1/webhooks/999999/test")]:
        assert api.request(method, path, headers=as_officer).status_code == 404


def test_ping_and_alert_events_appear_in_the_delivery_log(
        api: TestClient, as_officer: dict[str, str], world: World) -> None:
    receiver = Receiver(script=[503])
    try:
        hook = create(api, as_officer, url=receiver.url, secret=SECRET, borrower_id=A)["id"]
        ping = api.post(f"/api/v1/webhooks/{hook}/test", headers=as_officer)
        assert ping.status_code == 202, ping.text
        assert ping.json()["event"] == "ping" and ping.json()["status"] == "pending"
        # an officer acknowledges A's alert through the API: an event for this webhook
        assert api.post(f"/api/v1/alerts/{world.alert[A]}/acknowledge",
                        headers=as_officer).status_code == 200
        assert dispatch(world, backoff_base_s=0.01, concurrency=1) == 2  # the ping meets the 503
        log = api.get(f"/api/v1/webhooks/{hook}/deliveries", headers=as_officer).json()["items"]
        assert [(d["event"], d["status"]) for d in log] == [("alert.acknowledged", "delivered"),
                                                             ("ping", "pending")]
        assert log[1]["attempt_log"][0]["status_code"] == 503
        assert log[1]["last_error"].startswith("HTTP 503") and log[1]["next_attempt_at"]
        assert log[0]["alert_id"] == world.alert[A] and log[0]["attempts"] == 1
        time.sleep(0.05)
        assert dispatch(world, backoff_base_s=0.01) == 1
        log = api.get(f"/api/v1/webhooks/{hook}/deliveries", params={"status": "delivered"},
                      headers=as_officer).json()["items"]
        assert [d["event"] for d in log] == ["alert.acknowledged", "ping"]
        assert [a["status_code"] for a in log[1]["attempt_log"]] == [503, 200]
        for request in receiver.requests:
            assert verify(SECRET, request.headers["X-PledgeWatch-Signature"], request.body)
        assert {r.event["type"] for r in receiver.requests} == {"ping", "alert.acknowledged"}
    finally:
        receiver.close()


def test_delete_deactivates_and_cancels_pending_deliveries(
        api: TestClient, as_admin: dict[str, str], world: World) -> None:
    hook = create(api, as_admin)["id"]
    assert api.post(f"/api/v1/webhooks/{hook}/test", headers=as_admin).status_code == 202
    gone = api.delete(f"/api/v1/webhooks/{hook}", headers=as_admin)
    assert gone.status_code == 200 and not gone.json()["active"] and gone.json()["deactivated_at"]
    assert api.delete(f"/api/v1/webhooks/{hook}", headers=as_admin).status_code == 200
    log = api.get(f"/api/v1/webhooks/{hook}/deliveries", headers=as_admin).json()["items"]
    assert [d["status"] for d in log] == ["cancelled"]
    assert api.post(f"/api/v1/webhooks/{hook}/test", headers=as_admin).status_code == 409
    inactive = api.get("/api/v1/webhooks", params={"active": False}, headers=as_admin).json()
    assert [w["id"] for w in inactive["items"]] == [hook]
    with psycopg.connect(world.url, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET status = 'acknowledged' WHERE facility_id = %s",
                     (FAC[A],))
        assert conn.execute("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s",
                            (hook,)).fetchone() == (1,)


def test_the_api_process_runs_the_notifier(world: World, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        settings = app_settings(tmp_path, webhook_allow=["127.0.0.1"])
        on_start, on_stop = notifier_hooks(settings, world.url, None)
        app = create_app(world.url, settings=settings, live=False, on_start=on_start,
                         on_stop=on_stop)
        with TestClient(app) as api:
            officer = login(api, "officer")
            hook = create(api, officer, url=receiver.url, secret=SECRET)["id"]
            assert isinstance(app.state.notifier, Notifier)
            assert wait_until(app.state.notifier.ready.is_set, 10) and app.state.notifier.running
            assert api.post(f"/api/v1/alerts/{world.alert[A]}/resolve", json={"comment": "ok"},
                            headers=officer).status_code == 200
            assert wait_until(lambda: len(receiver.requests) == 1, 10)
            event = receiver.requests[0].event
            assert event["type"] == "alert.resolved" and event["alert"]["comment"] == "ok"
            # the receiver has the request before its answer reaches the notifier, which then
            # records the delivery: poll, as a loaded machine may take a moment in between
            def statuses() -> list[str]:
                log = api.get(f"/api/v1/webhooks/{hook}/deliveries",
                              headers=officer).json()["items"]
                return [d["status"] for d in log]
            assert wait_until(lambda: statuses() == ["delivered"], 10), statuses()
        assert not app.state.notifier.running  # stopped with the app
    finally:
        receiver.close()
