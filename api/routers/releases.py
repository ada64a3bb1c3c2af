"""Release orders: an enterprise requests goods out of its own lot; an officer approves, executes
(the lot's declared quantity falls) or rejects. Release ids are issued by the server, so a caller
cannot probe for the ids of other borrowers' orders."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api import scoped_reads
from api.deps import BankUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import found, not_found, responses
from api.schemas import ReleaseCreate, ReleasePublic, ReleaseState, Slug
from lending import operations
from lending.domain.model import ReleaseStatus

router = APIRouter(prefix="/releases", tags=["releases"])

ReleaseId = Annotated[Slug, Path(description="release order id")]


@router.get("", response_model=Page[ReleasePublic], responses=responses(401, 422))
def list_releases(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                  lot_id: Annotated[Slug | None, Query()] = None,
                  facility_id: Annotated[Slug | None, Query()] = None,
                  status: ReleaseState | None = None) -> Page[Any]:
    """Release orders newest first; enterprises see their own lots' orders."""
    return page.page(scoped_reads.releases(conn, principal.scope, page.limit + 1, page.offset,
                                      lot_id=lot_id, facility_id=facility_id, status=status))


def _visible(conn: ConnDep, scope: str | None, release_id: str) -> dict[str, Any]:
    return found(scoped_reads.release(conn, scope, release_id), "release order", release_id)


@router.get("/{release_id}", response_model=ReleasePublic, responses=responses(401, 404, 422))
def get_release(conn: ConnDep, principal: CurrentPrincipal, release_id: ReleaseId) -> dict[str, Any]:
    return _visible(conn, principal.scope, release_id)


@router.post("", response_model=ReleasePublic, status_code=201,
             responses=responses(401, 404, 409, 422))
def request_release(conn: ConnDep, principal: CurrentPrincipal,
                    body: ReleaseCreate) -> dict[str, Any]:
    """Request a release of goods from a lot the caller may see; 409 when the lot does not hold
    that much beyond what is already requested or approved."""
    if not scoped_reads.lot_exists(conn, principal.scope, body.lot_id):
        raise not_found("lot", body.lot_id)
    release_id = f"rel-{secrets.token_hex(8)}"
    operations.request_release(conn, release_id, body.lot_id, body.quantity, datetime.now(UTC))
    return _visible(conn, principal.scope, release_id)


def _advance(conn: ConnDep, officer: BankUser, release_id: str,
             to: ReleaseStatus) -> dict[str, Any]:
    _visible(conn, officer.scope, release_id)
    operations.advance_release(conn, release_id, to, datetime.now(UTC))
    return _visible(conn, officer.scope, release_id)


@router.post("/{release_id}/approve", response_model=ReleasePublic,
             responses=responses(401, 403, 404, 409, 422))
def approve(conn: ConnDep, officer: BankUser, release_id: ReleaseId) -> dict[str, Any]:
    return _advance(conn, officer, release_id, ReleaseStatus.APPROVED)


@router.post("/{release_id}/execute", response_model=ReleasePublic,
             responses=responses(401, 403, 404, 409, 422))
def execute(conn: ConnDep, officer: BankUser, release_id: ReleaseId) -> dict[str, Any]:
    """The goods left: the lot's declared quantity falls by the released quantity."""
    return _advance(conn, officer, release_id, ReleaseStatus.EXECUTED)


@router.post("/{release_id}/reject", response_model=ReleasePublic,
             responses=responses(401, 403, 404, 409, 422))
def reject(conn: ConnDep, officer: BankUser, release_id: ReleaseId) -> dict[str, Any]:
    return _advance(conn, officer, release_id, ReleaseStatus.REJECTED)
