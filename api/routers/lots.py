"""Pledged lots and their pledge status: declared vs verified quantity, trust and why, value and
price (from the facility's latest limit snapshot), sensor health, last position and geofence; and
their field inspections: officers record physical counts, which outrank every sensor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api import scoped_reads
from api.deps import AnyPrincipal, BankUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import found, not_found, responses
from api.schemas import InspectionCreate, InspectionPublic, LotPublic, Slug
from api.security import Principal, Role
from lending import operations

router = APIRouter(prefix="/lots", tags=["lots"])


def _for(principal: Principal, lot: dict[str, Any]) -> dict[str, Any]:
    """A warehouse operator sees the goods it stores, not the bank's valuation of the pledge."""
    return {**lot, "pledge": None} if principal.role is Role.OPERATOR else lot


@router.get("", response_model=Page[LotPublic], responses=responses(401, 422))
def list_lots(conn: ConnDep, principal: AnyPrincipal, page: PageDep,
              facility_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    """Lots the caller may see; a warehouse operator: the lots in its warehouses."""
    rows = scoped_reads.lots(conn, principal.scope, page.limit + 1, page.offset,
                             facility_id=facility_id)
    return page.page([_for(principal, r) for r in rows])


@router.get("/{lot_id}", response_model=LotPublic, responses=responses(401, 404, 422))
def get_lot(conn: ConnDep, principal: AnyPrincipal,
            lot_id: Annotated[Slug, Path(description="lot id")]) -> dict[str, Any]:
    return _for(principal, found(scoped_reads.lot(conn, principal.scope, lot_id), "lot", lot_id))


LotId = Annotated[Slug, Path(description="lot id")]


@router.get("/{lot_id}/inspections", response_model=Page[InspectionPublic],
            responses=responses(401, 404, 422))
def list_inspections(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                     lot_id: LotId) -> Page[Any]:
    """A lot's physical counts, newest first (enterprises: their own lots)."""
    rows = found(scoped_reads.inspections(conn, principal.scope, lot_id, page.limit + 1,
                                          page.offset), "lot", lot_id)
    return page.page(rows)


@router.post("/{lot_id}/inspections", response_model=InspectionPublic, status_code=201,
             responses=responses(401, 403, 404, 409, 422))
def record_inspection(conn: ConnDep, officer: BankUser, lot_id: LotId,
                      body: InspectionCreate) -> dict[str, Any]:
    """Record a physical count of the lot (officers and admins). When it disagrees with what
    the sensors said then, the lot gets an `inspection_mismatch` warning and its trust falls
    until the sensors agree with the count again; 422 for a count dated in the future."""
    if not scoped_reads.lot_exists(conn, officer.scope, lot_id):
        raise not_found("lot", lot_id)
    return operations.record_inspection(
        conn, lot_id, body.counted_quantity, counted_by=body.counted_by or officer.subject,
        recorded_by=officer.subject, now=datetime.now(UTC), counted_at=body.counted_at,
        note=body.note)
