"""Health (public: load balancers ask it) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from api.problems import ApiProblem, responses
from telemetry.queries import counts

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    readings: int | None = None
    dead_letters: int | None = None
    devices: int | None = None
    online: int | None = None


@router.get("/health", response_model=Health, responses=responses(503))
def health(request: Request) -> Health:
    pool: ConnectionPool = request.app.state.pool
    try:
        with pool.connection(timeout=2) as conn:
            c = counts(conn)
    except Exception:  # noqa: BLE001 - any failure means "not healthy", said in the body
        raise ApiProblem(503, "database unavailable", {"Retry-After": "5"}) from None
    return Health(status="ok", database="ok", **c)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry or REGISTRY
    extra: list[CollectorRegistry] = request.app.state.extra_registries
    body = b"".join(generate_latest(r) for r in (registry, *extra))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
