"""What wraps every request of the app (pure ASGI, outside FastAPI's own error handling so that it
also covers /docs, the dashboard, 404s and 500s): a request body size limit, enforced before the
body is parsed or the caller authenticated, and the security headers of every response. Also
where the client's address and scheme come from when a trusted reverse proxy stands in front."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import MEDIA_TYPE, TITLES, Problem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; FastAPI re-raises an
    HTTPException from body parsing as it is, so the problem handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


def too_large(limit: int) -> str:
    size = f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
    return f"the request body is larger than {size}"


def problem_bytes(status: int, detail: str, path: str) -> bytes:
    return Problem(title=TITLES.get(status, "Error"), status=status, detail=detail,
                   instance=path).model_dump_json(exclude_none=True).encode()


class BodySizeLimit:
    """413 for a request body over ``limit`` bytes (``overrides``: per exact path). A declared
    ``Content-Length`` over the limit is answered at once, before the app runs, without reading
    the body; a chunked body is counted as it streams and refused as soon as it passes the limit,
    before anything parses it."""

    def __init__(self, app: ASGIApp, limit: int, overrides: Mapping[str, int] | None = None) -> None:
        self.app, self.limit, self.overrides = app, limit, dict(overrides or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_problem(send, 413, too_large(limit), scope["path"],
                                [(b"connection", b"close")])
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_problem(send, 413, too_large(limit), scope["path"],
                                [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_problem(send: Send, status: int, detail: str, path: str,
                        extra: list[tuple[bytes, bytes]]) -> None:
    body = problem_bytes(status, detail, path)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
        *extra]})
    await send({"type": "http.response.body", "body": body})


# --- security headers ---------------------------------------------------------------------------

API_CSP = ("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HSTS = "max-age=31536000; includeSubDomains"
BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


@dataclass(frozen=True)
class HeaderPolicy:
    """``page_csp``: path prefix → the Content-Security-Policy of HTML pages served there (the
    docs); everything else without its own CSP (the dashboard's static files set theirs) gets
    :data:`API_CSP`. ``trusted_proxies``: peers whose ``X-Forwarded-Proto`` is believed."""

    page_csp: Mapping[str, str]
    trusted_proxies: Sequence[IPNetwork] = ()


class SecurityHeaders:
    """Adds the security headers to every response that does not set its own: nosniff,
    ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, a Content-Security-Policy,
    ``Cache-Control: no-store`` (the dashboard's files keep their ``no-cache``) and, over HTTPS
    (directly or through a trusted proxy), ``Strict-Transport-Security``."""

    def __init__(self, app: ASGIApp, policy: HeaderPolicy) -> None:
        self.app, self.policy = app, policy
        # (CSP, over HTTPS) → the headers to add, encoded once rather than on every response
        self._wanted: dict[tuple[str, bool], list[tuple[bytes, bytes]]] = {}

    def _headers(self, csp: str, https: bool) -> list[tuple[bytes, bytes]]:
        wanted = self._wanted.get((csp, https))
        if wanted is None:
            named = {**BASE_HEADERS, "content-security-policy": csp, "cache-control": "no-store"}
            if https:
                named["strict-transport-security"] = HSTS
            wanted = self._wanted[(csp, https)] = [(k.encode(), v.encode())
                                                   for k, v in named.items()]
        return wanted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = next((v for p, v in self.policy.page_csp.items() if path == p or
                    path.startswith(p.rstrip("/") + "/")), API_CSP)
        wanted = self._headers(csp, client_scheme(scope, self.policy.trusted_proxies) == "https")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                headers += [(k, v) for k, v in wanted if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- the client behind a proxy ------------------------------------------------------------------

def parse_networks(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in proxies)


def client_address(scope: Scope, proxies: Sequence[IPNetwork]) -> str:
    """The caller's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = _peer(scope)
    if not proxies or not _trusted(peer, proxies):
        return peer
    forwarded = Headers(scope=scope).getlist("x-forwarded-for")
    hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # a malformed chain: believe only the peer
        if not _trusted(address, proxies):
            return address
    return peer


def client_scheme(scope: Scope, proxies: Sequence[IPNetwork]) -> str:
    """``https`` when served over TLS, or when a trusted proxy says the client used it."""
    scheme = str(scope.get("scheme", "http"))
    if proxies and _trusted(_peer(scope), proxies):
        forwarded = Headers(scope=scope).get("x-forwarded-proto")
        if forwarded:
            scheme = forwarded.split(",")[0].strip().lower()
    return scheme
