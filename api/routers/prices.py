"""Commodity prices: anyone signed in reads them; officers post them as JSON or upload a CSV
(``time,commodity,price,currency``, the format of ``pledgewatch prices post``). Facilities holding
those commodities are revalued. A batch is stored whole or not at all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from api import scoped_reads
from api.deps import BankUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import responses
from api.schemas import Instant, PriceCreate, PricePublic, PricesPosted, Slug
from api.uploads import read_upload
from lending import operations, price_file
from lending.domain.model import PricePoint
from lending.price_file import PriceFileError

router = APIRouter(prefix="/prices", tags=["prices"])

MAX_ROWS = price_file.MAX_ROWS
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_ERRORS = 20
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


@router.get("", response_model=Page[PricePublic], responses=responses(401, 422))
def list_prices(conn: ConnDep, _principal: CurrentPrincipal, page: PageDep,
                commodity: Annotated[Slug | None, Query()] = None,
                start: Annotated[Instant | None, Query(description="from (inclusive)")] = None,
                end: Annotated[Instant | None, Query(description="to (exclusive)")] = None,
                ) -> Page[Any]:
    """Prices newest first (market data: the same for every caller)."""
    return page.page(scoped_reads.prices(conn, page.limit + 1, page.offset, commodity=commodity,
                                    start=start, end=end))


def _post(conn: ConnDep, points: list[PricePoint]) -> PricesPosted:
    affected = operations.post_prices(conn, points)
    return PricesPosted(posted=len(points), facilities=sorted(affected))


@router.post("", response_model=PricesPosted, status_code=201,
             responses=responses(401, 403, 409, 422))
def post_prices(conn: ConnDep, _officer: BankUser,
                body: Annotated[list[PriceCreate], Body(min_length=1, max_length=MAX_ROWS)],
                ) -> PricesPosted:
    """Post prices; 409 names commodities no portfolio defines."""
    return _post(conn, [PricePoint(p.commodity, p.time, p.price, p.currency) for p in body])


def _row_errors(exc: PriceFileError) -> RequestValidationError:
    """422 naming each bad field of each bad line of an upload (in the problem's ``errors``)."""
    return RequestValidationError([
        {"loc": ("body", "line", e.line, e.field), "msg": e.message, "type": "csv_row"}
        for e in exc.errors[:MAX_ERRORS]])


async def _csv_text(request: Request) -> str:
    """The uploaded CSV: a ``text/csv`` body, or the ``file`` part of a multipart form."""
    data = await read_upload(request, CSV_TYPES, MAX_CSV_BYTES, "CSV")
    try:
        return price_file.decode_prices_csv(data)
    except PriceFileError as exc:
        raise _row_errors(exc) from None


def parse_prices_csv(text: str) -> list[PricePoint]:
    """Every row checked by the rules of :mod:`lending.price_file` (those of a JSON price); a 422
    names up to 20 bad fields, each with its line."""
    try:
        return price_file.parse_prices_csv(text, max_rows=MAX_ROWS, max_errors=MAX_ERRORS)
    except PriceFileError as exc:
        raise _row_errors(exc) from None


CSV_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string", "description": "time,commodity,price,currency"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}}}}}


@router.post("/csv", response_model=PricesPosted, status_code=201, openapi_extra=CSV_BODY,
             responses=responses(400, 401, 403, 409, 413, 415, 422))
def upload_prices_csv(conn: ConnDep, _officer: BankUser,
                      text: Annotated[str, Depends(_csv_text)]) -> PricesPosted:
    """Upload prices as CSV with the header `time,commodity,price,currency` (RFC 3339 times).
    Every bad line is named in `errors`; nothing is stored unless every line is good."""
    return _post(conn, parse_prices_csv(text))
