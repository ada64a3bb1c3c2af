"""The composition root of the HTTP app: API routers under /api/v1, health, metrics, live events
and the dashboard, over one connection pool."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from api import problems
from api.dashboard import mount, swagger_ui_available
from api.deps import ApiConfig, PrincipalCache
from api.live import LiveHub
from api.routers import (
    alerts,
    auth,
    borrowers,
    devices,
    events,
    facilities,
    health,
    lots,
    prices,
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


def create_app(database_url: str, config: ApiConfig, *, registry: CollectorRegistry | None = None,
               pool_size: int = 8, live: bool = True, on_start: list[Hook] | None = None,
               on_stop: list[Hook] | None = None) -> FastAPI:
    pool = ConnectionPool(database_url, min_size=1, max_size=pool_size, open=False,
                          kwargs={"autocommit": True}, name="api")
    hub = LiveHub(database_url) if live else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open()
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
            pool.close()

    # Swagger UI from node_modules/swagger-ui-dist (a checkout after `make install`, or the installed
    # package, which ships its bundle, stylesheet and icon). Only a checkout without `npm ci` falls
    # back to FastAPI's /docs, which loads Swagger UI from a CDN.
    offline_docs = swagger_ui_available(DASHBOARD_DIR)
    app = FastAPI(
        title="PledgeWatch", version="0.1.0", lifespan=lifespan,
        docs_url=None if offline_docs else "/docs", redoc_url=None,
        description="Collateral monitoring and dynamic credit limits. Officers and admins log in "
                    "with the OAuth2 password flow; enterprises send an `X-API-Key`. Errors are "
                    "RFC 9457 problem details; lists paginate with `limit` and `offset`.")
    app.state.pool = pool
    app.state.registry = registry
    app.state.api_config = config
    app.state.principals = PrincipalCache(config.auth_cache_s)
    app.state.hub = hub
    problems.install(app)

    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    for router in (auth.router, facilities.router, alerts.router, events.router, borrowers.router,
                   lots.router, devices.router, telemetry.router, releases.router, prices.router,
                   sales.router, webhooks.router):
        app.include_router(router, prefix=API_PREFIX)
    _mount_dashboard(app)
    if offline_docs:
        _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI from the npm package the dashboard installs, not from a CDN."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="PledgeWatch API",
            swagger_js_url="/vendor/swagger-ui-dist/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui-dist/swagger-ui.css",
            swagger_favicon_url="/vendor/swagger-ui-dist/favicon-32x32.png",
            oauth2_redirect_url=None)


def _mount_dashboard(app: FastAPI) -> None:
    if mount(app, DASHBOARD_DIR):
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/dashboard/")
