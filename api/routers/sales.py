"""Sales signals and receivables in from the borrower's systems (ERP/POS/invoices) or the bank,
for a facility the caller may see; lists are scoped the same way."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api import scoped_reads
from api.deps import BankUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import ApiProblem, not_found, responses
from api.schemas import (
    ReceivableCreate,
    ReceivablePublic,
    SaleCreate,
    SalePublic,
    Slug,
    TradeState,
)
from lending import operations

router = APIRouter(tags=["sales"])

FUTURE_SLACK = timedelta(minutes=5)


def _facility(conn: ConnDep, scope: str | None, facility_id: str) -> None:
    if not scoped_reads.facility_exists(conn, scope, facility_id):
        raise not_found("facility", facility_id)


@router.get("/sales", response_model=Page[SalePublic], responses=responses(401, 422))
def list_sales(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
               facility_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    return page.page(scoped_reads.sales(conn, principal.scope, page.limit + 1, page.offset,
                                   facility_id=facility_id))


@router.post("/sales", response_model=SalePublic, status_code=201,
             responses=responses(401, 404, 422))
def post_sale(conn: ConnDep, principal: CurrentPrincipal, body: SaleCreate) -> dict[str, Any]:
    """A sales signal for one of the caller's facilities (feeds sales velocity and collapse
    detection)."""
    _facility(conn, principal.scope, body.facility_id)
    now = datetime.now(UTC)
    if body.time is not None and body.time > now + FUTURE_SLACK:
        raise ApiProblem(422, "a sale cannot be in the future")
    return operations.record_sale(conn, body.facility_id, body.amount, body.time or now)


@router.get("/receivables", response_model=Page[ReceivablePublic], responses=responses(401, 422))
def list_receivables(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                     facility_id: Annotated[Slug | None, Query()] = None,
                     verified: Annotated[bool | None, Query(
                         description="false = awaiting an officer's check")] = None,
                     trade_status: Annotated[TradeState | None, Query(
                         description="receivables naming a shipment: pending, verified or "
                                     "contradicted by telemetry; none: no shipment")] = None,
                     ) -> Page[Any]:
    return page.page(scoped_reads.receivables(conn, principal.scope, page.limit + 1, page.offset,
                                         facility_id=facility_id, verified=verified,
                                         trade_status=trade_status))


@router.post("/receivables", response_model=ReceivablePublic, status_code=201,
             responses=responses(401, 404, 409, 422))
def post_receivable(conn: ConnDep, principal: CurrentPrincipal,
                    body: ReceivableCreate) -> dict[str, Any]:
    """An invoice owed to the borrower. Eligible ones (not past due too long, not disputed or
    related-party) add to the borrowing base; one an enterprise posts counts only once an officer
    has verified it, so a fake invoice cannot raise a limit."""
    _facility(conn, principal.scope, body.facility_id)
    return operations.insert_receivable(conn, f"ar-{secrets.token_hex(8)}", body.facility_id,
                                     body.debtor, body.amount, body.due, body.related_party,
                                     body.disputed, verified=principal.is_bank,
                                     posted_by=principal.subject, debtor_id=body.debtor_id,
                                     shipment=None if body.shipment is None
                                     else body.shipment.model_dump(mode="json"))


@router.post("/receivables/{receivable_id}/verify", response_model=ReceivablePublic,
             responses=responses(401, 403, 404, 422))
def verify_receivable(conn: ConnDep, officer: BankUser, receivable_id: Slug) -> dict[str, Any]:
    """An officer has checked the invoice against the debtor: it becomes eligible."""
    if not scoped_reads.receivable_exists(conn, officer.scope, receivable_id):
        raise not_found("receivable", receivable_id)
    return operations.verify_receivable(conn, receivable_id, officer.subject, datetime.now(UTC))
