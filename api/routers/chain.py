"""Core-enterprise payables that flow down the chain: programme lines, a debtor's confirmation of a
receivable (it becomes a voucher), transfers of parts down the chain, financing, and the core
enterprise's payment at maturity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

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
from api.problems import ApiProblem, responses
from api.schemas import (
    ChainPublic,
    PayablePayment,
    PaymentPublic,
    ProgrammeCreate,
    ProgrammePublic,
    Slug,
    VoucherDetail,
    VoucherPublic,
    VoucherState,
    VoucherTransfer,
)
from api.security import Principal
from lending import financing

router = APIRouter(tags=["supply chain"])

ProgrammeId = Annotated[Slug, Path(description="programme id")]
VoucherId = Annotated[Slug, Path(description="voucher id")]


def _holder(principal: Principal) -> str:
    """Only the enterprise holding a voucher spends it (with its own API key)."""
    if principal.borrower_id is None:
        raise ApiProblem(403, "only the enterprise that holds a voucher can spend it")
    return principal.borrower_id


@router.post("/programmes", response_model=ProgrammePublic, status_code=201,
             responses=responses(401, 403, 404, 409, 422))
def create_programme(conn: ConnDep, officer: BankUser, body: ProgrammeCreate) -> dict[str, Any]:
    """A programme line for a core enterprise's chain: confirmed payables (vouchers) up to the
    line, financed at the advance rate."""
    return financing.create_programme(conn, body.programme_id, body.core_id, body.currency,
                                      body.line, body.advance_rate, officer.subject,
                                      datetime.now(UTC))


@router.get("/programmes", response_model=list[ProgrammePublic], responses=responses(401))
def list_programmes(conn: ConnDep, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """Programmes; an enterprise sees those of its own chain."""
    return financing.list_programmes(conn, principal.scope)


@router.get("/programmes/{programme_id}", response_model=ProgrammePublic,
            responses=responses(401, 404, 422))
def get_programme(conn: ConnDep, principal: CurrentPrincipal,
                  programme_id: ProgrammeId) -> dict[str, Any]:
    return financing.get_programme(conn, programme_id, principal.scope)


@router.get("/programmes/{programme_id}/chain", response_model=ChainPublic,
            responses=responses(401, 404, 422))
def get_chain(conn: ConnDep, principal: CurrentPrincipal,
              programme_id: ProgrammeId) -> dict[str, Any]:
    """The chain from the core enterprise down with its vouchers (a supplier sees its own)."""
    return financing.chain(conn, programme_id, principal.scope)


@router.post("/receivables/{receivable_id}/confirm", response_model=VoucherDetail,
             status_code=201, responses=responses(401, 404, 409, 422))
def confirm_receivable(conn: ConnDep, principal: CurrentPrincipal, receivable_id: Slug,
                       programme_id: Annotated[Slug | None, Query()] = None) -> dict[str, Any]:
    """The debtor confirms a receivable owed by it, with its own credentials (a bank user may
    confirm on its written confirmation): the supplier gets a voucher maturing on the due date."""
    return financing.confirm_receivable(conn, receivable_id, debtor_scope=principal.scope,
                                        by=principal.subject, now=datetime.now(UTC),
                                        programme_id=programme_id)


@router.get("/vouchers", response_model=Page[VoucherPublic], responses=responses(401, 422))
def list_vouchers(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                  programme_id: Annotated[Slug | None, Query()] = None,
                  holder_id: Annotated[Slug | None, Query()] = None,
                  status: VoucherState | None = None) -> Page[Any]:
    """Vouchers newest first: an enterprise sees those it holds or held, a core enterprise all of
    its programmes'."""
    return page.page(financing.list_vouchers(conn, principal.scope, page.limit + 1, page.offset,
                                             programme_id=programme_id, holder_id=holder_id,
                                             status=status))


@router.get("/vouchers/{voucher_id}", response_model=VoucherDetail,
            responses=responses(401, 404, 422))
def get_voucher(conn: ConnDep, principal: CurrentPrincipal, voucher_id: VoucherId) -> dict[str, Any]:
    """A voucher with its path back to the core enterprise's confirmation."""
    return financing.get_voucher(conn, voucher_id, principal.scope)


@router.post("/vouchers/{voucher_id}/transfer", response_model=VoucherDetail, status_code=201,
             responses=responses(401, 403, 404, 409, 422), openapi_extra=CALLER_SECURITY)
async def transfer_voucher(request: Request, principal: Caller, voucher_id: VoucherId,
                           body: VoucherTransfer) -> dict[str, Any]:
    """Transfer part (or all) of a voucher you hold to a member of the same chain; the rest stays
    yours as a new voucher. A voucher is spent once."""
    holder = _holder(principal)
    # async with one worker-thread hop for the whole transfer (api.deps.with_conn): the hot path
    return await with_conn(request, financing.transfer_voucher, voucher_id, body.to, body.amount,
                           holder=holder, by=principal.subject, now=datetime.now(UTC))


@router.post("/vouchers/{voucher_id}/finance", response_model=VoucherDetail,
             responses=responses(401, 403, 404, 409, 422))
def finance_voucher(conn: ConnDep, principal: CurrentPrincipal,
                    voucher_id: VoucherId) -> dict[str, Any]:
    """Sell a voucher you hold to the bank at the programme's advance rate."""
    return financing.finance_voucher(conn, voucher_id, holder=_holder(principal),
                                     by=principal.subject, now=datetime.now(UTC))


@router.post("/vouchers/{voucher_id}/pay", response_model=PaymentPublic, status_code=201,
             responses=responses(401, 404, 409, 422))
def pay_payable(conn: ConnDep, principal: CurrentPrincipal, voucher_id: VoucherId,
                body: PayablePayment) -> dict[str, Any]:
    """The core enterprise pays a confirmed payable (a root voucher) in full, or an officer
    records its payment: the bank is repaid what it financed, holders the rest."""
    return financing.pay_payable(conn, voucher_id, body.amount, payer_scope=principal.scope,
                                 by=principal.subject, now=datetime.now(UTC))
