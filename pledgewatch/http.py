"""The small HTTP server of the ingestion backbone: health, latest readings per device, /metrics.

Routes stay thin: they call :mod:`telemetry.queries` and shape the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel

from gateway.topics import SLUG
from telemetry.queries import counts, device_overview


class MetricValue(BaseModel):
    value: float
    time: datetime


class DeviceLatest(BaseModel):
    device_id: str
    tenant: str
    kind: str
    online: bool | None
    last_seen: datetime | None
    readings: dict[str, MetricValue]


class Health(BaseModel):
    status: str
    database: str
    readings: int | None = None
    dead_letters: int | None = None
    devices: int | None = None
    online: int | None = None


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    pool: ConnectionPool = request.app.state.pool
    with pool.connection(timeout=5) as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


def create_app(database_url: str, registry: CollectorRegistry | None = None) -> FastAPI:
    pool = ConnectionPool(database_url, min_size=1, max_size=4, open=False,
                          kwargs={"autocommit": True})

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        yield
        pool.close()

    app = FastAPI(title="PledgeWatch telemetry", version="0.1.0", lifespan=lifespan)
    app.state.pool = pool

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "database unavailable"}, status_code=503)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        try:
            with pool.connection(timeout=2) as conn:
                c = counts(conn)
        except Exception:  # noqa: BLE001 - any failure means "not healthy", said in the body
            raise HTTPException(503, detail="database unavailable") from None
        return Health(status="ok", database="ok", **c)

    @app.get("/devices/latest", response_model=list[DeviceLatest])
    def latest(conn: ConnDep, tenant: Annotated[str | None, Query(max_length=64)] = None
               ) -> list[dict[str, Any]]:
        if tenant is not None and not SLUG.fullmatch(tenant):
            raise HTTPException(422, detail="tenant must be a slug (letters, digits, . _ -)")
        return device_overview(conn, tenant)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry or REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
