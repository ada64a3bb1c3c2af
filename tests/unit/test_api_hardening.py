"""API hardening without I/O: where webhooks may go (after resolution, with a fake resolver), the
pinned request a delivery makes, errors that quote nothing a receiver sent, the password policy,
token epochs, strict numbers in bodies, the client address behind a proxy, the body size limit
and the security headers (on an in-process ASGI app), and the /docs page's CSP."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import docs_csp
from api.middleware import (
    API_CSP,
    BodySizeLimit,
    HeaderPolicy,
    SecurityHeaders,
    client_address,
    client_scheme,
    parse_networks,
)
from api.password_policy import MIN_SCORE, WeakPassword, check_password, password_problem
from api.schemas import (
    InspectionCreate,
    PriceCreate,
    ReceivableCreate,
    ReleaseCreate,
    SaleCreate,
    UserUpdate,
)
from api.security import ALGORITHM, ISSUER, Role, TokenError, issue_token, read_session
from notifier.address_policy import (
    Destination,
    DestinationPolicy,
    IPAddress,
    RefusedDestination,
    blocked_reason,
    check_destination,
)
from notifier.webhooks import failure, pinned

NO_ALLOW = DestinationPolicy()


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def resolving_to(*addresses: str) -> Any:
    def resolver(host: str, port: int) -> list[IPAddress]:
        return [ip(a) for a in addresses]
    return resolver


def never_called(host: str, port: int) -> list[IPAddress]:
    raise AssertionError(f"{host} should not have been resolved")


# --- where webhooks may go ----------------------------------------------------------------------

@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "RFC 1918"), ("172.16.0.1", "RFC 1918"), ("172.31.255.255", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"), ("fc00::1", "unique local"), ("fd12:3456::1", "unique local"),
    ("100.64.0.1", "CGNAT"), ("100.127.255.254", "CGNAT"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "RFC 1918"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("192.0.2.1", "reserved"), ("198.18.0.1", "reserved"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("2001:db8::1", "reserved"),
])
def test_internal_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    found = blocked_reason(ip(address))
    assert found is not None and reason in found, found


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "172.32.0.1",
                                     "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ip(address)) is None


@pytest.mark.parametrize(("url", "addresses", "said"), [
    ("http://127.0.0.1:8080/hook", (), "127.0.0.1 is a loopback address"),
    ("http://[::1]/hook", (), "loopback"),
    ("http://169.254.169.254/latest/meta-data/", (), "cloud metadata"),
    ("https://[fd00:ec2::254]/", (), "cloud metadata"),
    ("https://hooks.bank.example/x", ("93.184.215.14", "10.0.0.7"), "resolves to 10.0.0.7"),
    ("https://localhost/x", ("127.0.0.1",), "localhost resolves to 127.0.0.1, a loopback"),
    ("https://2130706433/x", ("127.0.0.1",), "loopback"),  # decimal form, resolved by the OS
])
def test_check_destination_refuses_in_one_line(url: str, addresses: tuple[str, ...],
                                               said: str) -> None:
    with pytest.raises(RefusedDestination) as info:
        check_destination(url, NO_ALLOW, resolving_to(*addresses))
    message = str(info.value)
    assert said in message and "\n" not in message
    assert "PLEDGEWATCH_WEBHOOK_ALLOW" in message


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")
    with pytest.raises(RefusedDestination, match=r"nowhere\.example does not resolve"):
        check_destination("https://nowhere.example/", NO_ALLOW, fails)
    with pytest.raises(RefusedDestination, match="does not resolve"):
        check_destination("https://empty.example/", NO_ALLOW, resolving_to())


def test_a_public_destination_is_pinned_to_the_checked_address() -> None:
    got = check_destination("https://hooks.bank.example:8443/x", NO_ALLOW,
                            resolving_to("93.184.215.14", "2606:4700::1"))
    assert got == Destination("hooks.bank.example", 8443, ip("93.184.215.14"))


def test_the_allow_list_admits_networks_and_names_only() -> None:
    policy = DestinationPolicy.parse(["10.20.0.0/16", " 127.0.0.1 ", "hooks.bank.internal",
                                      "*.corp.internal", ""])
    assert check_destination("http://10.20.3.4/", policy, never_called).address == ip("10.20.3.4")
    assert check_destination("http://127.0.0.1:9/", policy, never_called).port == 9
    named = check_destination("https://HOOKS.bank.internal./x", policy, never_called)
    assert named.address is None  # connects by name: the bank vouches for it
    assert check_destination("https://a.b.corp.internal/", policy, never_called).address is None
    for refused in ("http://10.21.0.1/", "http://127.0.0.2/", "https://corp.internal/",
                    "https://evil-hooks.bank.internal/"):
        with pytest.raises(RefusedDestination):
            check_destination(refused, policy, resolving_to("192.168.0.1"))


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "999.1.1.1", "-bad.example",
                                   "a..b", "http://x/", "*"])
def test_bad_allow_list_entries_are_named(entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(entry))):
        DestinationPolicy.parse([entry])


# --- the delivery request -----------------------------------------------------------------------

def test_a_pinned_request_goes_to_the_address_with_the_hosts_name() -> None:
    headers: dict[str, str] = {}
    url, extensions = pinned("https://hooks.bank.example:8443/p?q=1",
                             Destination("hooks.bank.example", 8443, ip("93.184.215.14")), headers)
    assert url == "https://93.184.215.14:8443/p?q=1"
    assert headers == {"Host": "hooks.bank.example:8443", "Connection": "close"}
    assert extensions == {"sni_hostname": "hooks.bank.example"}
    url, extensions = pinned("http://bücher.example/x", Destination("bücher.example", 80,
                                                                     ip("2606:4700::1")), headers)
    assert url == "http://[2606:4700::1]/x" and extensions == {}
    assert headers["Host"] == "xn--bcher-kva.example"
    untouched: dict[str, str] = {}
    assert pinned("https://hooks.bank.internal/x", Destination("hooks.bank.internal", 443, None),
                  untouched) == ("https://hooks.bank.internal/x", {})
    assert untouched == {}


def test_failures_quote_nothing_the_receiver_sent() -> None:
    banner = httpx.RemoteProtocolError("illegal status line: bytearray(b'SSH-2.0-OpenSSH_9.6')")
    assert failure(banner) == "RemoteProtocolError"
    assert failure(httpx.ConnectError("[Errno 111] Connection refused")) == \
        "ConnectError: [Errno 111] Connection refused"
    assert failure(httpx.ReadTimeout("timed out")) == "ReadTimeout: timed out"
    assert failure(ValueError("redis_version:7.2")) == "ValueError"


# --- passwords ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("password", "said"), [
    ("aaaaaaaaaaaa", "too easy to guess"), ("password1234", "too easy to guess"),
    ("qwertyuiop123", "too easy to guess"), ("abcdefghijklmnop", "too easy to guess"),
    ("1234567890123", "too easy to guess"), ("pledgewatch2024", "too easy to guess"),
    ("olga.petrova.1990", "must not contain the user name"),
    ("short", "at least 12 characters"), ("x" * 257, "at most 256 characters"),
])
def test_weak_passwords_are_refused_in_one_line(password: str, said: str) -> None:
    problem = password_problem(password, "olga.petrova")
    assert problem is not None and said in problem and "\n" not in problem
    with pytest.raises(WeakPassword):
        check_password(password, "olga.petrova")


def test_the_users_own_name_is_refused_whatever_its_case() -> None:
    assert password_problem("theofficerofficer", "officer") is not None
    assert password_problem("OfficerPetrova-Vault-9", "officer") is not None


@pytest.mark.parametrize("password", ["correct horse battery staple", "a long enough password",
                                      "Tundra-velvet-Kiln-42", "x7#Qm!2pLz9@vR"])
def test_strong_passwords_pass(password: str) -> None:
    assert password_problem(password, "olga") is None
    assert check_password(password, "olga") == password
    assert MIN_SCORE >= 3


# --- token epochs -------------------------------------------------------------------------------

SECRET = "s" * 40


def test_a_token_carries_the_users_epoch() -> None:
    token = issue_token(SECRET, "olga", Role.OFFICER, timedelta(minutes=5), epoch=7)
    session = read_session(SECRET, token)
    assert (session.username, session.role, session.epoch) == ("olga", Role.OFFICER, 7)
    assert read_session(SECRET, issue_token(SECRET, "olga", Role.ADMIN,
                                            timedelta(minutes=5))).epoch == 0


@pytest.mark.parametrize("ver", [True, "1", -1, 2**31, 1.5, None])
def test_a_token_with_a_bad_epoch_is_refused(ver: object) -> None:
    now = int(datetime.now(UTC).timestamp())
    token = jwt.encode({"sub": "olga", "role": "officer", "iss": ISSUER, "iat": now,
                        "exp": now + 300, "ver": ver}, SECRET, algorithm=ALGORITHM)
    with pytest.raises(TokenError):
        read_session(SECRET, token)


def test_a_token_from_before_epochs_counts_as_epoch_zero() -> None:
    now = int(datetime.now(UTC).timestamp())
    token = jwt.encode({"sub": "olga", "role": "officer", "iss": ISSUER, "iat": now,
                        "exp": now + 300}, SECRET, algorithm=ALGORITHM)
    assert read_session(SECRET, token).epoch == 0


# --- strict numbers in bodies -------------------------------------------------------------------

WHEN = "2030-01-01T00:00:00Z"


@pytest.mark.parametrize(("model", "body"), [
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": True}),
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": "100"}),
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": 1e-300}),
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": 0}),
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": float("nan")}),
    (ReleaseCreate, {"lot_id": "lot-1", "quantity": 1e13}),
    (SaleCreate, {"facility_id": "f", "amount": True}),
    (SaleCreate, {"facility_id": "f", "amount": "100"}),
    (SaleCreate, {"facility_id": "f", "amount": -1}),
    (SaleCreate, {"facility_id": "f", "amount": float("inf")}),
    (SaleCreate, {"facility_id": "f", "amount": 10**400}),
    (PriceCreate, {"commodity": "wheat", "time": WHEN, "price": False}),
    (PriceCreate, {"commodity": "wheat", "time": WHEN, "price": "2500"}),
    (ReceivableCreate, {"facility_id": "f", "debtor": "d", "amount": "5", "due": WHEN}),
    (ReceivableCreate, {"facility_id": "f", "debtor": "d", "amount": 5, "due": WHEN,
                        "disputed": "false"}),
    (InspectionCreate, {"counted_quantity": True}),
    (UserUpdate, {"disabled": 1}),
])
def test_numbers_and_flags_in_bodies_are_strict_and_bounded(model: Any,
                                                             body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_plain_json_numbers_still_pass() -> None:
    assert ReleaseCreate.model_validate({"lot_id": "l", "quantity": 1e-6}).quantity == 1e-6
    assert ReleaseCreate.model_validate({"lot_id": "l", "quantity": 3}).quantity == 3.0
    assert SaleCreate.model_validate({"facility_id": "f", "amount": 0}).amount == 0.0
    assert InspectionCreate.model_validate({"counted_quantity": 0}).counted_quantity == 0.0


# --- the client behind a proxy ------------------------------------------------------------------

def scope(peer: str, *headers: tuple[str, str], scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "client": (peer, 1234), "scheme": scheme,
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


def test_forwarded_headers_are_believed_from_trusted_proxies_only() -> None:
    proxies = parse_networks(["10.0.0.0/8"])
    forwarded = ("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.3")
    assert client_address(scope("10.0.0.2", forwarded), proxies) == "198.51.100.7"
    assert client_address(scope("198.51.100.50", forwarded), proxies) == "198.51.100.50"
    assert client_address(scope("10.0.0.2", forwarded), ()) == "10.0.0.2"
    assert client_address(scope("10.0.0.2", ("x-forwarded-for", "nonsense")), proxies) == "10.0.0.2"
    assert client_address(scope("10.0.0.2"), proxies) == "10.0.0.2"
    https = ("x-forwarded-proto", "https")
    assert client_scheme(scope("10.0.0.2", https), proxies) == "https"
    assert client_scheme(scope("8.8.8.8", https), proxies) == "http"
    assert client_scheme(scope("8.8.8.8", scheme="https"), ()) == "https"


# --- the body limit and the headers, on a small app ---------------------------------------------

def small_app(limit: int = 1024) -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/boom")
    async def boom() -> dict[str, int]:
        raise RuntimeError("boom")

    wrapped = SecurityHeaders(BodySizeLimit(app, limit, {"/big": 4096}),
                              HeaderPolicy(page_csp={"/docs": "default-src 'self'"},
                                           trusted_proxies=parse_networks(["10.0.0.0/8"])))
    return TestClient(wrapped, raise_server_exceptions=False)


def test_a_declared_body_over_the_limit_is_refused_before_the_app_runs() -> None:
    client = small_app()
    assert client.post("/echo", content=b"x" * 1024).json() == {"size": 1024}
    r = client.post("/echo", content=b"x" * 1025)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "the request body is larger than 1 KiB"
    assert r.headers["x-content-type-options"] == "nosniff"  # the headers wrap the 413 too


def test_a_chunked_body_is_counted_as_it_streams() -> None:
    client = small_app()

    def chunks(n: int) -> Any:
        for _ in range(n):
            yield b"y" * 300

    assert client.post("/echo", content=chunks(3)).json() == {"size": 900}
    r = client.post("/echo", content=chunks(10))  # 3000 bytes: refused after the fourth chunk
    assert r.status_code == 413 and r.json()["detail"] == "the request body is larger than 1 KiB"
    assert client.post("/big", content=chunks(10)).status_code == 404  # its own 4 KiB limit


def test_every_response_gets_the_security_headers() -> None:
    client = small_app()
    for r in (client.post("/echo", content=b"{}"), client.get("/missing"), client.get("/boom")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["content-security-policy"] == API_CSP
        assert r.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in r.headers
    assert client.get("/boom").status_code == 500
    assert client.get("/docs/x").headers["content-security-policy"] == "default-src 'self'"


def test_hsts_only_over_https() -> None:
    app = small_app().app
    assert "strict-transport-security" in TestClient(app, base_url="https://testserver").get(
        "/missing").headers
    proxied = TestClient(app, client=("10.1.1.1", 5000))
    assert "max-age=" in proxied.get("/missing", headers={"X-Forwarded-Proto": "https"}).headers[
        "strict-transport-security"]
    spoofed = TestClient(app, client=("8.8.8.8", 5000))
    assert "strict-transport-security" not in spoofed.get(
        "/missing", headers={"X-Forwarded-Proto": "https"}).headers


def test_the_docs_csp_allows_exactly_its_inline_script() -> None:
    html = "<link href='/vendor/x.css'><script src='/vendor/x.js'></script><script>go()</script>"
    csp = docs_csp(html)
    digest = base64.b64encode(hashlib.sha256(b"go()").digest()).decode()
    assert f"'sha256-{digest}'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "https://" not in csp
    cdn = docs_csp("<script src='https://cdn.example/x.js'></script>")
    assert "script-src 'self' https://cdn.example;" in cdn
    assert "style-src 'self' https://cdn.example;" in cdn
