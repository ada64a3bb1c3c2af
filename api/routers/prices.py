"""Commodity prices: anyone signed in reads them; officers post them as JSON or upload a CSV
(``time,commodity,price,currency``, the format of ``pledgewatch prices post``). Facilities holding
those commodities are revalued. A batch is stored whole or not at all."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api import scoped_reads
from api.deps import BankUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import ApiProblem, responses
from api.schemas import Instant, PriceCreate, PricePublic, PricesPosted, Slug
from firmware_sim.market import CSV_HEADER, parse_row
from lending import operations
from lending.domain.model import DomainError, PricePoint

router = APIRouter(prefix="/prices", tags=["prices"])

MAX_ROWS = 10_000
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_ERRORS = 20
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def _row_errors(errors: list[dict[str, Any]]) -> RequestValidationError:
    """422 naming each bad line of an upload (in the problem's ``errors``)."""
    return RequestValidationError(errors)


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


async def _csv_text(request: Request) -> str:
    """The uploaded CSV: a ``text/csv`` body, or the ``file`` part of a multipart form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_CSV_BYTES)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiProblem(422, "the multipart form needs a `file` part holding the CSV")
        data = await upload.read(MAX_CSV_BYTES + 1)
    elif media in CSV_TYPES:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_CSV_BYTES:
                break
            chunks.append(chunk)
        data = b"".join(chunks) if size <= MAX_CSV_BYTES else b"x" * (MAX_CSV_BYTES + 1)
    else:
        raise ApiProblem(415, "send the CSV as text/csv or as the `file` part of multipart/form-data")
    if len(data) > MAX_CSV_BYTES:
        raise ApiProblem(413, f"the CSV is larger than {MAX_CSV_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiProblem(422, f"the CSV is not UTF-8 text (byte {exc.start})") from None


def _error(line: int, msg: str) -> dict[str, Any]:
    return {"loc": ("body", "line", line), "msg": msg, "type": "csv_row"}


def parse_prices_csv(text: str) -> list[PricePoint]:
    """Every row checked like a JSON price; a 422 names up to 20 bad lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    errors: list[dict[str, Any]] = []
    points: list[PricePoint] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _row_errors([_error(1, str(exc))]) from None
    if header is None or tuple(c.strip() for c in header) != CSV_HEADER:
        raise _row_errors([_error(1, f"expected the header {','.join(CSV_HEADER)}")])
    while len(errors) < MAX_ERRORS:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(_error(reader.line_num, str(exc)))
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(points) + len(errors) >= MAX_ROWS:
            errors.append(_error(reader.line_num, f"more than {MAX_ROWS} rows"))
            break
        try:
            point = parse_row(row)
            checked = PriceCreate(commodity=point.commodity, time=point.time, price=point.price,
                                  currency=point.currency)
        except ValidationError as exc:
            errors.append(_error(reader.line_num, "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())))
            continue
        except (ValueError, DomainError, OverflowError) as exc:
            errors.append(_error(reader.line_num, str(exc)))
            continue
        points.append(PricePoint(checked.commodity, checked.time, checked.price, checked.currency))
    if errors:
        raise _row_errors(errors)
    if not points:
        raise _row_errors([_error(2, "no price rows after the header")])
    return points


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
