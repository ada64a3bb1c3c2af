"""The composition root of the HTTP app: API routers under /api/v1, health, metrics, live events
and the dashboard, over one connection pool."""

from __future__ import annotations

import base64
import gc
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp

from api import problems
from api.dashboard import CSP as DASHBOARD_CSP
from api.dashboard import mount, swagger_ui_available
from api.deps import ApiConfig, KeyLookups, PrincipalCache
from api.live import LiveHub
from api.login_throttle import LoginThrottle
from api.middleware import BodySizeLimit, HeaderPolicy, SecurityHeaders
from api.routers import (
    alerts,
    auth,
    borrowers,
    chain,
    devices,
    events,
    facilities,
    financing,
    health,
    ledger,
    lots,
    prices,
    ratings,
    reconciliation,
    releases,
    sales,
    telemetry,
    webhooks,
)

API_PREFIX = "/api/v1"
# The dashboard's pages and browser libraries: the checkout's api/dashboard (static/ and, after
# `make install`, node_modules), or the installed package's copy of the files it serves
# (pyproject.toml, [tool.setuptools.package-data]); see api/dashboard/__init__.py.
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

Hook = Callable[[FastAPI], None]
# The price CSV upload may be larger than the general body limit: its own cap plus a form's overhead.
BODY_LIMIT_OVERRIDES = {f"{API_PREFIX}/prices/csv": prices.MAX_CSV_BYTES + 64 * 1024}


class PledgeWatchApp(FastAPI):
    """FastAPI with the body size limit and the security headers around everything, outside its
    own error middleware, so that they also cover its 500s, /docs and the dashboard."""

    def build_middleware_stack(self) -> ASGIApp:
        config: ApiConfig = self.state.api_config
        limit = BodySizeLimit(super().build_middleware_stack(), config.max_body_bytes,
                              {p: max(n, config.max_body_bytes)
                               for p, n in BODY_LIMIT_OVERRIDES.items()})
        return SecurityHeaders(limit, self.state.header_policy)


def create_app(database_url: str, config: ApiConfig, *, registry: CollectorRegistry | None = None,
               pool_size: int = 8, live: bool = True, on_start: list[Hook] | None = None,
               on_stop: list[Hook] | None = None) -> FastAPI:
    pool = ConnectionPool(database_url, min_size=1, max_size=pool_size, open=False,
                          kwargs={"autocommit": True}, name="api")
    # Credential look-ups (a cache miss in api.deps.current_principal) take their connection from
    # a pool of their own: a route holding one of `pool`'s connections while its caller's key is
    # looked up must not wait for a second one (with as many such requests as connections, every
    # one of them would wait out the pool timeout).
    auth_pool = ConnectionPool(database_url, min_size=1, max_size=max(2, pool_size // 2),
                               open=False, kwargs={"autocommit": True}, name="api-auth")
    hub = LiveHub(database_url) if live else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        auth_pool.open()
        if hub is not None:
            hub.start()
        for hook in on_start or ():
            hook(app)
        # Everything built so far lives as long as the process: keep it out of the collector's
        # generations, so that collections during requests stay short (the p99 latency).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for hook in on_stop or ():
                hook(app)
            if hub is not None:
                hub.stop()
            auth_pool.close()
            pool.close()

    # Swagger UI from node_modules/swagger-ui-dist (a checkout after `make install`, or the installed
    # package, which ships its bundle, stylesheet and icon). Only a checkout without `npm ci` falls
    # back to FastAPI's /docs, which loads Swagger UI from a CDN.
    offline_docs = swagger_ui_available(DASHBOARD_DIR)
    app = PledgeWatchApp(
        title="PledgeWatch", version="0.1.0", lifespan=lifespan,
        docs_url=None, redoc_url=None,
        description="Collateral monitoring and dynamic credit limits. Officers and admins log in "
                    "with the OAuth2 password flow; enterprises send an `X-API-Key`. Errors are "
                    "RFC 9457 problem details; lists paginate with `limit` and `offset`.")
    app.state.pool = pool
    app.state.auth_pool = auth_pool
    app.state.key_lookups = KeyLookups(auth_pool)  # API keys the cache misses, in batches
    app.state.registry = registry
    app.state.extra_registries = []  # more processes' parts served on /metrics (the notifier)
    app.state.api_config = config
    app.state.principals = PrincipalCache(config.auth_cache_s)
    app.state.login_throttle = LoginThrottle(config.login_throttle)
    app.state.hub = hub
    docs_csp = _docs(app, offline_docs)
    app.state.header_policy = HeaderPolicy(page_csp={"/docs": docs_csp},
                                           trusted_proxies=config.trusted_proxies)
    problems.install(app)

    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    # The routers are tried in this order for every request, route by route (FastAPI ≥ 0.165
    # matches an included router's routes with a context each: 5-8 µs a route), so the hot write
    # paths (drawdowns, voucher transfers) come first. No route shadows another
    # (tests/unit/test_route_order.py), so the order changes only the time a match takes.
    for router in (financing.router, chain.router, auth.router, facilities.router, alerts.router,
                   events.router, borrowers.router, lots.router, devices.router, telemetry.router,
                   releases.router, prices.router, sales.router, webhooks.router, ledger.router,
                   reconciliation.router, ratings.router):
        app.include_router(router, prefix=API_PREFIX)
    _mount_dashboard(app)
    return app


def _docs(app: FastAPI, offline: bool) -> str:
    """/docs: Swagger UI from the npm package the dashboard installs (a checkout without `npm ci`
    falls back to FastAPI's CDN); returns the page's Content-Security-Policy, which allows its one
    inline script by hash and, in the fallback only, the CDN's origins."""
    if offline:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json", title="PledgeWatch API", oauth2_redirect_url=None,
            swagger_js_url="/vendor/swagger-ui-dist/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui-dist/swagger-ui.css",
            swagger_favicon_url="/vendor/swagger-ui-dist/favicon-32x32.png")
    else:
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="PledgeWatch API",
                                   oauth2_redirect_url=None)
    html = bytes(page.body).decode()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(html)

    return docs_csp(html)


def docs_csp(html: str) -> str:
    """The dashboard's CSP, plus the hashes of ``html``'s inline scripts and the origins of the
    assets it loads from elsewhere (none offline)."""
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
              for s in inline]
    origins = sorted({f"{u.scheme}://{u.netloc}" for u in map(urlsplit, re.findall(
        r"""(?:src|href)=["'](https?://[^"']+)["']""", html))})
    csp = DASHBOARD_CSP
    for directive, sources in (("script-src", [*hashes, *origins]), ("style-src", origins),
                               ("img-src", origins)):
        csp = csp.replace(f"{directive} 'self'", " ".join([f"{directive} 'self'", *sources]))
    return csp


def _mount_dashboard(app: FastAPI) -> None:
    if mount(app, DASHBOARD_DIR):
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/dashboard/")
