"""Financing against the live limit: drawdowns (decided at once or queued for an officer, never
paid twice for one Idempotency-Key), repayments, and the blacklist officers keep."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from api.deps import (
    CALLER_SECURITY,
    BankUser,
    Caller,
    ConnDep,
    CurrentPrincipal,
    Page,
    PageDep,
    with_conn,
)
from api.problems import responses
from api.schemas import (
    BlacklistCreate,
    BlacklistEntry,
    DrawdownCreate,
    DrawdownDecision,
    DrawdownPublic,
    DrawdownState,
    RepaymentCreate,
    RepaymentPublic,
    Slug,
)
from lending import financing

router = APIRouter(tags=["financing"])

DrawdownId = Annotated[Slug, Path(description="drawdown id")]
IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=8, max_length=128, pattern=r"^[\x21-\x7e]+$",
    description="a unique key per drawdown (e.g. a UUID); a retry with the same key and body "
                "returns the first answer and never pays twice")]


@router.post("/drawdowns", response_model=DrawdownPublic, status_code=201,
             responses={**responses(401, 404, 409, 422),
                        200: {"model": DrawdownPublic,
                              "description": "a retry: the drawdown the key already made"}},
             openapi_extra=CALLER_SECURITY)
async def request_drawdown(request: Request, principal: Caller, body: DrawdownCreate,
                           response: Response, key: IdempotencyKey) -> dict[str, Any]:
    """Draw on a facility. Approved at once when the amount fits the live available limit, the
    facility has no open critical alert and the borrower is not blacklisted; otherwise `pending`
    for an officer, with the reasons."""
    # async with one worker-thread hop for the whole decision (api.deps.with_conn): the hot path
    row, created = await with_conn(
        request, financing.request_drawdown, body.facility_id, body.amount, body.currency,
        body.tenor_days, body.purpose, by=principal.subject, idempotency_key=key,
        now=datetime.now(UTC), scope=principal.scope)
    if not created:
        response.status_code = 200
    return row


@router.get("/drawdowns", response_model=Page[DrawdownPublic], responses=responses(401, 422))
def list_drawdowns(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                   facility_id: Annotated[Slug | None, Query()] = None,
                   status: DrawdownState | None = None,
                   overdue: bool | None = None) -> Page[Any]:
    """Drawdowns newest first (`status=pending`: the officers' queue); enterprises see their
    own."""
    return page.page(financing.list_drawdowns(conn, principal.scope, page.limit + 1, page.offset,
                                              facility_id=facility_id, status=status,
                                              overdue=overdue))


@router.get("/drawdowns/{drawdown_id}", response_model=DrawdownPublic,
            responses=responses(401, 404, 422))
def get_drawdown(conn: ConnDep, principal: CurrentPrincipal,
                 drawdown_id: DrawdownId) -> dict[str, Any]:
    return financing.get_drawdown(conn, drawdown_id, principal.scope)


@router.post("/drawdowns/{drawdown_id}/approve", response_model=DrawdownPublic,
             responses=responses(401, 403, 404, 409, 422))
def approve_drawdown(conn: ConnDep, officer: BankUser, drawdown_id: DrawdownId,
                     body: DrawdownDecision | None = None) -> dict[str, Any]:
    """Approve a waiting drawdown (checked again: never past the available limit or for a
    blacklisted borrower)."""
    return financing.decide_pending(conn, drawdown_id, approve=True, by=officer.subject,
                                    comment=body.comment if body else None, now=datetime.now(UTC))


@router.post("/drawdowns/{drawdown_id}/reject", response_model=DrawdownPublic,
             responses=responses(401, 403, 404, 409, 422))
def reject_drawdown(conn: ConnDep, officer: BankUser, drawdown_id: DrawdownId,
                    body: DrawdownDecision | None = None) -> dict[str, Any]:
    return financing.decide_pending(conn, drawdown_id, approve=False, by=officer.subject,
                                    comment=body.comment if body else None, now=datetime.now(UTC))


@router.post("/repayments", response_model=RepaymentPublic, status_code=201,
             responses=responses(401, 404, 422))
def post_repayment(conn: ConnDep, principal: CurrentPrincipal,
                   body: RepaymentCreate) -> dict[str, Any]:
    """A repayment pays the facility's drawdowns that mature first; outstanding falls with them."""
    return financing.repay(conn, body.facility_id, body.amount, datetime.now(UTC),
                           by=principal.subject, scope=principal.scope)


@router.get("/blacklist", response_model=list[BlacklistEntry], responses=responses(401, 403, 422))
def list_blacklist(conn: ConnDep, _officer: BankUser,
                   include_removed: bool = False) -> list[dict[str, Any]]:
    """Who may not borrow, who put them there and why."""
    return financing.blacklist(conn, include_removed=include_removed)


@router.post("/blacklist", response_model=BlacklistEntry, status_code=201,
             responses=responses(401, 403, 404, 409, 422))
def add_to_blacklist(conn: ConnDep, officer: BankUser, body: BlacklistCreate) -> dict[str, Any]:
    return financing.blacklist_add(conn, body.borrower_id, body.reason, officer.subject,
                                   datetime.now(UTC))


@router.delete("/blacklist/{borrower_id}", response_model=BlacklistEntry,
               responses=responses(401, 403, 404, 422))
def remove_from_blacklist(conn: ConnDep, officer: BankUser, borrower_id: Slug) -> dict[str, Any]:
    """The entry is kept, marked removed (by whom, when)."""
    return financing.blacklist_remove(conn, borrower_id, officer.subject, datetime.now(UTC))
