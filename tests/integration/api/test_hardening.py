"""API hardening against a real PostgreSQL: log-in throttling (table-backed, per account and per
address, parallel guesses included), tokens revoked by a password change and by disable/enable,
the password policy, the body size limit (in-process and over a real socket), the security
headers on every kind of response, strict numbers, and webhooks refused to internal addresses
when registered and again when delivered (a real receiver on 127.0.0.1 proves nothing arrives)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.accounts import create_user, set_password
from api.login_throttle import LoginThrottle, ThrottleConfig
from notifier.address_policy import DestinationPolicy, IPAddress
from notifier.config import NotifierConfig
from notifier.webhook_store import create_webhook
from notifier.webhooks import WebhookDispatcher
from pledgewatch.http import create_app
from pledgewatch.serve import HttpServer
from tests.integration.api.conftest import LOT, PASSWORD, A, World, login
from tests.integration.api.conftest import settings as app_settings
from tests.integration.test_notifications import Receiver

pytestmark = pytest.mark.integration

V1 = "/api/v1"
TOKEN = f"{V1}/auth/token"


@pytest.fixture
def users(migrated_db: str) -> World:
    """Only an admin and an officer: what most of these tests need (no portfolio to value)."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        create_user(conn, "admin", PASSWORD, "admin")
        create_user(conn, "officer", PASSWORD, "officer")
    return World(migrated_db, {}, {}, {})


@pytest.fixture
def bare(users: World, tmp_path: Path) -> Iterator[TestClient]:
    with client(users, tmp_path) as api:
        yield api


@contextmanager
def client(world: World, tmp_path: Path, peer: str = "testclient",
           **overrides: Any) -> Iterator[TestClient]:
    app = create_app(world.url, settings=app_settings(tmp_path, **overrides), live=False)
    with TestClient(app, raise_server_exceptions=False, client=(peer, 50000)) as api:
        yield api


def attempt(api: TestClient, username: str, password: str) -> Any:
    return api.post(TOKEN, data={"username": username, "password": password})


def throttled(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "log-in throttled" in r.getMessage()]


# --- log-in throttling --------------------------------------------------------------------------

def test_failed_log_ins_lock_the_account_with_growing_delays(
        users: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="api.login_throttle")
    with client(users, tmp_path, login_lockout_base_s=10.0) as api:
        statuses = [attempt(api, "officer", f"wrong guess {i}").status_code for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        right = attempt(api, "officer", PASSWORD)  # the right password during the lockout
        assert right.status_code == 429
        assert right.headers["content-type"] == "application/problem+json"
        retry = int(right.headers["retry-after"])
        assert 1 <= retry <= 10
        detail = f"too many failed log-ins for this account; try again in {retry} s"
        assert right.json()["detail"] == detail
        assert len(throttled(caplog)) == 4 and "'officer'" in throttled(caplog)[0]
        login(api, "admin")  # another account from the same address is not locked
    with client(users, tmp_path, login_lockout_base_s=10.0) as restarted:
        # the lockout is in the database: a restarted (or another) API process keeps it
        assert attempt(restarted, "officer", PASSWORD).status_code == 429
        with users.connect() as conn:  # ten seconds pass
            conn.execute("UPDATE login_throttle SET locked_until = now() WHERE key = 'officer'")
        assert attempt(restarted, "officer", "wrong guess 9").status_code == 401
        doubled = attempt(restarted, "officer", PASSWORD)
        assert doubled.status_code == 429 and 10 < int(doubled.headers["retry-after"]) <= 20
        with users.connect() as conn:
            conn.execute("UPDATE login_throttle SET locked_until = now() WHERE key = 'officer'")
        login(restarted, "officer")  # the right password after the lockout: in, and forgiven
        assert attempt(restarted, "officer", "one more typo").status_code == 401


def test_one_address_guessing_many_accounts_is_locked_out(users: World, tmp_path: Path) -> None:
    with client(users, tmp_path, peer="198.51.100.7", login_max_failures_per_address=3,
                http_trusted_proxies=["198.51.100.7/32"]) as api:
        assert [attempt(api, user, "wrong password!").status_code
                for user in ("officer", "admin", "nobody")] == [401, 401, 401]
        refused = attempt(api, "admin", PASSWORD)
        assert refused.status_code == 429 and "this address" in refused.json()["detail"]
        # behind a trusted proxy each client is counted by its X-Forwarded-For address
        forwarded = api.post(TOKEN, data={"username": "admin", "password": PASSWORD},
                             headers={"X-Forwarded-For": "203.0.113.9"})
        assert forwarded.status_code == 200, forwarded.text


def test_parallel_guesses_cannot_slip_past_the_limit(migrated_db: str) -> None:
    """Every attempt is counted before its password is checked: of 12 simultaneous attempts on
    one account exactly 5 are let through."""
    throttle = LoginThrottle(ThrottleConfig(max_failures=5, base_s=60))
    results: list[bool] = []
    start = threading.Barrier(12)

    def guess() -> None:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            start.wait()
            results.append(throttle.admit(conn, "officer", "192.0.2.44") is None)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False] * 7 + [True] * 5


# --- tokens revoked, the password policy --------------------------------------------------------

def test_a_password_change_and_a_disable_revoke_the_users_tokens(users: World,
                                                                 tmp_path: Path) -> None:
    with client(users, tmp_path, auth_cache_s=0) as api:  # every request checks the store
        revoked_by_changes(users, api)


def revoked_by_changes(users: World, bare: TestClient) -> None:
    admin, officer = login(bare, "admin"), login(bare, "officer")
    assert bare.get(f"{V1}/auth/me", headers=officer).status_code == 200
    new = "a fresh and longer passphrase"
    assert bare.patch(f"{V1}/users/officer", json={"password": new},
                      headers=admin).status_code == 200
    old = bare.get(f"{V1}/auth/me", headers=officer)
    assert old.status_code == 401 and "log in again" in old.json()["detail"]
    officer = login(bare, "officer", new)
    assert bare.get(f"{V1}/auth/me", headers=officer).status_code == 200
    assert bare.get(f"{V1}/auth/me", headers=admin).status_code == 200  # others are untouched

    for disabled in (True, False):  # disabled, then enabled again
        assert bare.patch(f"{V1}/users/officer", json={"disabled": disabled},
                          headers=admin).status_code == 200
    assert bare.get(f"{V1}/auth/me", headers=officer).status_code == 401
    fresh = login(bare, "officer", new)
    assert bare.get(f"{V1}/auth/me", headers=fresh).status_code == 200
    with users.connect() as conn:
        epoch = "SELECT token_epoch FROM users WHERE username = 'officer'"
        assert conn.execute(epoch).fetchone() == (3,)
        conn.execute("UPDATE users SET disabled = false WHERE username = 'officer'")  # no change
        assert conn.execute(epoch).fetchone() == (3,)
        set_password(conn, "officer", new)  # any path that changes it (here: the demo's)
        assert conn.execute(epoch).fetchone() == (4,)
    assert bare.get(f"{V1}/auth/me", headers=fresh).status_code == 401


def test_weak_passwords_are_refused_by_the_api(bare: TestClient) -> None:
    admin, officer = login(bare, "admin"), login(bare, "officer")
    for username, password, said in [("olga", "aaaaaaaaaaaa", "too easy to guess"),
                                     ("olga", "password1234", "too easy to guess"),
                                     ("olga.petrova", "Olga.Petrova-2030", "the user name")]:
        r = bare.post(f"{V1}/users", json={"username": username, "password": password,
                                           "role": "officer"}, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith("password: ") and said in r.json()["detail"], r.text
    for password, said in [("aaaaaaaaaaaa", "too easy"), ("officer-officer", "the user name")]:
        r = bare.patch(f"{V1}/users/officer", json={"password": password}, headers=admin)
        assert r.status_code == 422 and said in r.json()["detail"], r.text
    # nothing changed: the old password and the officer's token still work
    assert bare.get(f"{V1}/auth/me", headers=officer).status_code == 200
    login(bare, "officer")


# --- request body size --------------------------------------------------------------------------

def test_a_large_body_is_refused_before_parsing_and_before_auth(bare: TestClient) -> None:
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    for path in (f"{V1}/prices", f"{V1}/releases", TOKEN):
        r = bare.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "the request body is larger than 1024 KiB"

    def chunked() -> Iterator[bytes]:
        yield b"["
        for _ in range(40):
            yield b" " * 65536
        yield b"]"

    r = bare.post(f"{V1}/prices", content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413

    officer = {**login(bare, "officer"), "Content-Type": "text/csv"}
    header = b"time,commodity,price,currency\n"
    csv = header + b"2030-01-01T00:00:00Z,wheat,x,CNY\n" * (45 * 1024)  # 1.5 MiB
    r = bare.post(f"{V1}/prices/csv", content=csv, headers=officer)
    assert r.status_code == 422, r.text  # parsed (bad lines): the upload has its own 2 MiB cap
    r = bare.post(f"{V1}/prices/csv", content=header + b"x" * (3 * 1024 * 1024), headers=officer)
    assert r.status_code == 413


def raw_request(port: int, head: bytes, part: bytes, times: int) -> tuple[bytes, int]:
    """Send ``head``, then ``part`` up to ``times`` times until the server answers; returns the
    answer's head and how many body bytes went out before it."""
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        for _ in range(times):
            with suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            try:
                sent += sock.send(part)
            except BlockingIOError:
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, sent


def test_over_a_real_socket_50_mb_are_refused_without_being_read(users: World,
                                                                 tmp_path: Path) -> None:
    app = create_app(users.url, settings=app_settings(tmp_path), live=False)
    http = HttpServer(app, "127.0.0.1", 0).start()
    try:
        declared = (b"POST /api/v1/prices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 52428800\r\n\r\n")
        answer, sent = raw_request(http.port, declared, b" " * 65536, 800)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 8 * 1024 * 1024, sent  # answered long before 50 MB could be sent
        chunked = (b"POST /api/v1/prices HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer, sent = raw_request(http.port, chunked, b"10000\r\n" + b" " * 65536 + b"\r\n", 800)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 8 * 1024 * 1024, sent
    finally:
        http.stop()


# --- security headers ---------------------------------------------------------------------------

def test_every_kind_of_response_carries_the_security_headers(users: World, bare: TestClient,
                                                             tmp_path: Path) -> None:
    officer = login(bare, "officer")
    responses = {
        "docs": bare.get("/docs"), "openapi": bare.get("/openapi.json"),
        "dashboard": bare.get("/dashboard/"), "health": bare.get("/health"),
        "api json": bare.get(f"{V1}/facilities", headers=officer),
        "401": bare.get(f"{V1}/facilities"), "404": bare.get("/no/such/page"),
        "422": bare.post(f"{V1}/releases", json={}, headers=officer),
        "413": bare.post(f"{V1}/releases", content=b" " * (2 * 1024 * 1024)),
    }
    for name, r in responses.items():
        headers = r.headers
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY", name
        assert headers["referrer-policy"] == "no-referrer", name
        assert "frame-ancestors 'none'" in headers["content-security-policy"], name
        assert "unsafe-inline" not in headers["content-security-policy"], name
        assert "strict-transport-security" not in headers, name  # plain HTTP, no proxy
    for name in ("openapi", "health", "api json", "401", "404", "422", "413"):
        assert responses[name].headers["cache-control"] == "no-store", name
    assert responses["api json"].status_code == 200 and responses["docs"].status_code == 200
    assert "script-src 'self' 'sha256-" in responses["docs"].headers["content-security-policy"]
    assert responses["dashboard"].headers["content-security-policy"].startswith("default-src 'self'")

    # HSTS: over TLS, or when a trusted proxy says the client used HTTPS (the app is not started:
    # these answers need no database)
    app = create_app(users.url, settings=app_settings(
        tmp_path, http_trusted_proxies=["10.0.0.0/8"]), live=False)
    tls = TestClient(app, base_url="https://testserver").get("/openapi.json")
    assert tls.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    https = {"X-Forwarded-Proto": "https"}
    proxied = TestClient(app, client=("10.9.8.7", 40000)).get("/openapi.json", headers=https)
    assert proxied.headers["strict-transport-security"].startswith("max-age=31536000")
    direct = TestClient(app, client=("198.51.100.1", 40000)).get("/openapi.json", headers=https)
    assert "strict-transport-security" not in direct.headers


# --- strict numbers -----------------------------------------------------------------------------

def test_amounts_and_quantities_must_be_sane_json_numbers(api: TestClient,
                                                          as_a: dict[str, str]) -> None:
    for quantity in (True, "100", 1e-300, 0, -5, 1e13, "NaN"):
        r = api.post(f"{V1}/releases", json={"lot_id": LOT[A], "quantity": quantity},
                     headers=as_a)
        assert r.status_code == 422, (quantity, r.text)
        assert r.json()["detail"].startswith("body.quantity: ")
    for amount in (True, "100", -1, 1e15):
        r = api.post(f"{V1}/sales", json={"facility_id": "fac-grain", "amount": amount},
                     headers=as_a)
        assert r.status_code == 422, (amount, r.text)
        assert r.json()["detail"].startswith("body.amount: ")
    ok = api.post(f"{V1}/releases", json={"lot_id": LOT[A], "quantity": 2}, headers=as_a)
    assert ok.status_code == 201, ok.text


# --- webhooks: SSRF ---------------------------------------------------------------------------

REFUSED_URLS = [
    ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
    ("http://localhost:8080/hook", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://[::1]/hook", "loopback"),
    ("http://2130706433/hook", "resolves to 127.0.0.1"),
    ("http://10.1.2.3/hook", "private (RFC 1918)"),
    ("http://192.168.0.10/hook", "private (RFC 1918)"),
    ("http://[fd12::1]/hook", "unique local"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://169.254.10.10/", "link-local"),
    ("http://100.64.1.1/", "CGNAT"),
    ("http://224.0.0.251/", "multicast"),
    ("http://0.0.0.0:9000/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("https://hooks.nowhere.invalid/x", "does not resolve"),
]


def test_webhooks_to_internal_addresses_are_refused_at_registration(bare: TestClient) -> None:
    officer = login(bare, "officer")
    for url, said in REFUSED_URLS:
        r = bare.post(f"{V1}/webhooks", json={"url": url}, headers=officer)
        assert r.status_code == 422, (url, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("url: ") and said in detail and "\n" not in detail, detail
    assert bare.get(f"{V1}/webhooks", headers=officer).json()["items"] == []


def queue_ping(world: World, url: str) -> int:
    """A webhook written straight into the store (as if registered while its name resolved
    elsewhere, or before these rules) with one ping due; its id."""
    with world.connect() as conn:
        row = conn.execute("INSERT INTO webhooks (url, secret, created_by) VALUES (%s, %s, 'x')"
                           " RETURNING id", (url, "s" * 40)).fetchone()
        assert row is not None
        ping(conn, int(row[0]))
    return int(row[0])


def ping(conn: psycopg.Connection, webhook_id: int) -> None:
    conn.execute("WITH e AS (INSERT INTO alert_events (kind, payload) VALUES ('ping', '{}')"
                 " RETURNING id) INSERT INTO webhook_deliveries (webhook_id, event_id)"
                 " SELECT %s, id FROM e", (webhook_id,))


def attempts(world: World, webhook_id: int) -> list[tuple[Any, ...]]:
    with world.connect() as conn:
        return conn.execute(
            "SELECT a.status_code, a.error FROM webhook_attempts a JOIN webhook_deliveries d"
            " ON d.id = a.delivery_id WHERE d.webhook_id = %s ORDER BY a.attempt", (webhook_id,)
        ).fetchall()


def dispatch(world: World, dispatcher: WebhookDispatcher) -> int:
    try:
        with world.connect() as conn:
            return dispatcher.run_once(conn)
    finally:
        dispatcher.close()


def test_internal_receivers_are_refused_at_delivery(users: World) -> None:
    """Without the allow-list nothing reaches the receiver on 127.0.0.1: neither by address, nor
    by a name that resolves to it, nor by a name that resolved to a public address when it was
    registered and to 127.0.0.1 when the alert went out (DNS rebinding)."""
    receiver = Receiver()
    answer = {"now": "93.184.215.14"}

    def dns(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(answer["now"])]

    try:
        by_address = queue_ping(users, receiver.url)
        by_name = queue_ping(users, f"http://localhost:{receiver.port}/hooks")
        with users.connect() as conn:
            rebound = int(create_webhook(conn, f"http://rebind.example:{receiver.port}/hooks",
                                         "s" * 40, None, "", "officer",
                                         policy=DestinationPolicy(), resolver=dns)["id"])
            ping(conn, rebound)
        answer["now"] = "127.0.0.1"  # the name now points inside
        assert dispatch(users, WebhookDispatcher(NotifierConfig(), resolver=dns)) == 3
        assert dispatch(users, WebhookDispatcher(NotifierConfig())) == 0  # retries are not due
        assert receiver.requests == []  # nothing was sent
        [(code, error)] = attempts(users, by_address)
        assert code is None and error.startswith("refused: 127.0.0.1 is a loopback address")
        [(code, error)] = attempts(users, by_name)
        assert code is None and "refused: localhost resolves to 127.0.0.1" in error
        [(code, error)] = attempts(users, rebound)
        assert code is None and "rebind.example resolves to 127.0.0.1, a loopback" in error
    finally:
        receiver.close()


def test_an_allow_listed_receiver_is_reached_at_the_checked_address_and_its_reply_not_kept(
        users: World, bare: TestClient) -> None:
    receiver = Receiver(script=[500], reply=b"redis_version:7.2.4 internal-secret")
    try:
        hook = queue_ping(users, f"http://localhost:{receiver.port}/hooks")
        allow = ("127.0.0.0/8", "::1")
        assert dispatch(users, WebhookDispatcher(NotifierConfig(webhook_allow=allow))) == 1
        assert attempts(users, hook) == [(500, "HTTP 500")]
        host = {k.lower(): v for k, v in receiver.requests[0].headers.items()}["host"]
        assert host == f"localhost:{receiver.port}"  # connected to 127.0.0.1, named as the URL
        log = bare.get(f"{V1}/webhooks/{hook}/deliveries", headers=login(bare, "officer"))
        assert log.status_code == 200 and log.json()["items"][0]["last_error"] == "HTTP 500"
        assert "internal-secret" not in log.text and "redis_version" not in log.text
    finally:
        receiver.close()
