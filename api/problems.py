"""One error shape for every route: RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.password_policy import WeakPassword
from lending.financing import NotFound
from lending.operations import InvalidRequest, LendingError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"

TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Payload too large",
          415: "Unsupported media type", 422: "Invalid request", 429: "Too many requests",
          500: "Internal server error", 503: "Service unavailable"}


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ApiProblem(Exception):
    """Raise from a route to answer with a problem."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def not_found(what: str, ident: object) -> ApiProblem:
    """The same answer whether the object does not exist or belongs to someone else."""
    return ApiProblem(404, f"no {what} {ident!r}")


T = TypeVar("T")


def found(value: T | None, what: str, ident: object) -> T:
    """``value``, or the 404 :func:`not_found` when the caller may not see it or it is not there."""
    if value is None:
        raise not_found(what, ident)
    return value


def problem_response(request: Request, status: int, detail: str | None,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail,
                   instance=request.url.path, **extra)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status,
                        media_type=MEDIA_TYPE, headers=headers)


def _field_error(err: dict[str, Any]) -> FieldError:
    return FieldError(loc=[p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
                      msg=str(err.get("msg", "")), type=str(err.get("type", "")))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers malformed JSON with 422 but a body that is not UTF-8 with 400
            return problem_response(request, 422, "the body is not UTF-8 JSON")
        return problem_response(request, exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        first = errors[0] if errors else None
        detail = (f"{'.'.join(str(p) for p in first.loc)}: {first.msg}" if first
                  else "the request is not valid")
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(LendingError)
    async def refused(request: Request, exc: LendingError) -> JSONResponse:
        return problem_response(request, 409, str(exc))

    @app.exception_handler(NotFound)  # not there, or not the caller's: the same answer
    async def missing(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(request, 404, str(exc))

    @app.exception_handler(InvalidRequest)  # a LendingError for what was sent, not the state
    async def invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
        return problem_response(request, 422, str(exc))

    @app.exception_handler(WeakPassword)
    async def weak_password(request: Request, exc: WeakPassword) -> JSONResponse:
        return problem_response(request, 422, f"password: {exc}")

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def unavailable(request: Request, _exc: Exception) -> JSONResponse:
        return problem_response(request, 503, "database unavailable", {"Retry-After": "5"})

    @app.exception_handler(psycopg.errors.DataError)
    async def bad_value(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        return problem_response(request, 422, f"a value is out of range: {exc.diag.message_primary}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(request, 500, "an internal error; it has been logged")


PROBLEM_CONTENT = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route may answer with."""
    return {s: {"model": Problem, "description": TITLES.get(s, "Error"), "content": PROBLEM_CONTENT}
            for s in statuses}
