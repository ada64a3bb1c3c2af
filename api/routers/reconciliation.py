"""T+0 reconciliation: officers upload the bank's core-ledger statement (CSV or camt.053 XML) and the
warehouse operator's stock ledger (which the operator may also upload itself, for its own lots);
breaks are listed (and alerted); goods three ways per lot."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from api.deps import BankOrOperator, BankUser, ConnDep, Page, PageDep, with_conn
from api.problems import responses
from api.schemas import GoodsThreeWays, Slug, StatementImport, StatementReconciled, StockImported
from api.security import Role
from api.uploads import read_upload
from lending import reconciliation, statement_file
from lending.statement_file import StatementFileError

router = APIRouter(prefix="/reconciliation", tags=["reconciliation"])

MAX_BYTES = 8 * 1024 * 1024
STATEMENT_TYPES = ("text/csv", "application/xml", "text/xml", "application/csv", "text/plain")
MAX_ERRORS = 20
UPLOAD = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/xml": {"schema": {"type": "string", "description": "ISO 20022 camt.053"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}}}}}


def _errors(exc: StatementFileError) -> RequestValidationError:
    return RequestValidationError([
        {"loc": ("body", "line", e.line, e.field), "msg": e.message, "type": "statement_row"}
        for e in exc.errors[:MAX_ERRORS]])


@router.post("/statements", response_model=StatementReconciled, status_code=201,
             openapi_extra=UPLOAD, responses=responses(400, 401, 403, 409, 413, 415, 422))
async def upload_statement(request: Request, officer: BankUser) -> dict[str, Any]:
    """Reconcile a core-ledger statement against the drawdowns and repayments of its accounts and
    period: matched lines and breaks (duplicate, missing in the platform or at the bank, amount or
    date mismatch), each break alerted on its facility. The same file twice is 409."""
    data = await read_upload(request, STATEMENT_TYPES, MAX_BYTES, "statement")
    try:
        fmt, lines = statement_file.parse_statement(data)
    except StatementFileError as exc:
        raise _errors(exc) from None
    return await with_conn(request, reconciliation.import_statement, data, fmt, lines,
                           source=request.headers.get("x-filename", "upload"),
                           by=officer.subject, now=datetime.now(UTC))


@router.get("/statements", response_model=Page[StatementImport], responses=responses(401, 403, 422))
def list_statements(conn: ConnDep, _officer: BankUser, page: PageDep) -> Page[Any]:
    return page.page(reconciliation.list_imports(conn, page.limit + 1, page.offset))


@router.get("/statements/{import_id}", response_model=StatementReconciled,
            responses=responses(401, 403, 404, 422))
def get_statement(conn: ConnDep, _officer: BankUser,
                  import_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> dict[str, Any]:
    return reconciliation.get_import(conn, import_id)


@router.post("/stock", response_model=StockImported, status_code=201, openapi_extra=UPLOAD,
             responses=responses(400, 401, 403, 404, 409, 413, 415, 422))
async def upload_stock(request: Request, who: BankOrOperator) -> StockImported:
    """The warehouse operator's stock ledger (`lot_id,quantity,as_of`), uploaded by an officer or
    by the operator itself with its own key: then every line must be for a lot in its
    warehouses, or the whole file is refused (404 naming the lot) and nothing is stored."""
    data = await read_upload(request, STATEMENT_TYPES, MAX_BYTES, "stock ledger")
    try:
        rows = statement_file.parse_stock_csv(statement_file.decode(data))
    except StatementFileError as exc:
        raise _errors(exc) from None
    operator = who.operator_id if who.role is Role.OPERATOR else None
    by = who.subject if operator is None else f"op:{operator}"
    return StockImported(imported=await with_conn(
        request, reconciliation.import_stock, rows, by=by, now=datetime.now(UTC),
        operator_id=operator))


@router.get("/goods", response_model=list[GoodsThreeWays], responses=responses(401, 403, 422))
def goods(conn: ConnDep, _officer: BankUser,
          facility_id: Annotated[Slug | None, Query()] = None) -> list[dict[str, Any]]:
    """Per lot: pledged, sensor-verified and the operator's quantity, with the differences."""
    return [asdict(g) for g in reconciliation.goods(conn, facility_id)]
