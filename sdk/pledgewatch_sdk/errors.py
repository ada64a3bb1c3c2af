"""Exceptions: every refusal of the API is an :class:`ApiError` carrying its RFC 9457 problem
details (status, title, detail, field errors); a class per status worth catching on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class PledgeWatchError(Exception):
    """Anything this SDK raises. ``idempotency_key`` is set for a drawdown request: call again
    with ``idempotency_key=error.idempotency_key`` and the API answers with the drawdown the first
    attempt made, if it made one, instead of paying twice."""

    idempotency_key: str | None = None


class TransportError(PledgeWatchError):
    """No answer from the API (connection refused, timeout, broken connection) after the retries
    the SDK allowed itself. For a request that is not safe to repeat it is not known whether the
    API acted on it: look before trying again (a drawdown is safe to repeat with its key)."""


class UnexpectedResponse(PledgeWatchError):
    """The API answered with something this SDK does not understand (not the documented shape):
    the server is newer or older than the SDK."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status, self.body = status, body


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a 422: where (``["body", "amount"]``), what and the error type."""

    loc: tuple[str | int, ...]
    msg: str
    type: str


class ApiError(PledgeWatchError):
    """The API refused the request: its problem details as attributes."""

    def __init__(self, status: int, title: str, detail: str | None, *, method: str, url: str,
                 type: str = "about:blank", instance: str | None = None,
                 errors: tuple[FieldError, ...] = (), retry_after: float | None = None) -> None:
        self.status, self.title, self.detail = status, title, detail
        self.method, self.url, self.type, self.instance = method, url, type, instance
        self.errors, self.retry_after = errors, retry_after
        super().__init__(f"{status} {title}: {detail or '(no detail)'} [{method} {url}]")


class BadRequest(ApiError):
    """400: the request lacks something (e.g. an Idempotency-Key)."""


class Unauthorized(ApiError):
    """401: the API key is unknown or revoked."""


class Forbidden(ApiError):
    """403: an enterprise may not do this (an officer's action, or a voucher it does not hold)."""


class NotFound(ApiError):
    """404: not there, or not yours (the API gives the same answer for both)."""


class Conflict(ApiError):
    """409: refused by the state of things (over the programme line, a voucher already spent,
    a receivable already confirmed, not enough goods in the lot)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the API accepts."""


class InvalidRequest(ApiError):
    """422: a field is not valid (``errors`` names each), or an Idempotency-Key was reused for a
    different request."""


class RateLimited(ApiError):
    """429: too many attempts; ``retry_after`` says how long to wait (seconds)."""


class ServerError(ApiError):
    """5xx: the API failed."""


class ServiceUnavailable(ServerError):
    """503: the API's database is unavailable; ``retry_after`` says when to try again."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: InvalidRequest, 429: RateLimited, 503: ServiceUnavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the API sends a number of seconds), if any."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _field_errors(raw: Any) -> tuple[FieldError, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(FieldError(tuple(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "")))
                 for e in raw if isinstance(e, dict))


def api_error(response: httpx.Response) -> ApiError:
    """The exception for an error response: its problem details when it has them, else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    status = response.status_code
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    detail = problem.get("detail")
    if detail is None and not problem:
        detail = response.text[:500] or None
    return cls(status, str(problem.get("title") or response.reason_phrase or "Error"),
               None if detail is None else str(detail),
               method=response.request.method, url=str(response.request.url),
               type=str(problem.get("type", "about:blank")), instance=problem.get("instance"),
               errors=_field_errors(problem.get("errors")), retry_after=retry_after(response))
