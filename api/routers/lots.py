"""Pledged lots and their pledge status: declared vs verified quantity, trust and why, value and
price (from the facility's latest limit snapshot), sensor health, last position and geofence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api import scoped_reads
from api.deps import ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import found, responses
from api.schemas import LotPublic, Slug

router = APIRouter(prefix="/lots", tags=["lots"])


@router.get("", response_model=Page[LotPublic], responses=responses(401, 422))
def list_lots(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
              facility_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    return page.page(scoped_reads.lots(conn, principal.scope, page.limit + 1, page.offset,
                                  facility_id=facility_id))


@router.get("/{lot_id}", response_model=LotPublic, responses=responses(401, 404, 422))
def get_lot(conn: ConnDep, principal: CurrentPrincipal,
            lot_id: Annotated[Slug, Path(description="lot id")]) -> dict[str, Any]:
    return found(scoped_reads.lot(conn, principal.scope, lot_id), "lot", lot_id)
