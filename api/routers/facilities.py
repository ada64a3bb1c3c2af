"""Facilities: the portfolio sorted by risk, the current limit, its history and explanations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from api import scoped_reads
from api.deps import ConnDep, CurrentPrincipal, Page, PageDep, with_conn
from api.problems import found, not_found, responses
from api.schemas import (
    FacilityLimit,
    FacilitySummary,
    LimitPoint,
    Slug,
    SnapshotExplained,
)
from lending.domain.limits import explain_change
from lending.store import snapshot_from_inputs

router = APIRouter(prefix="/facilities", tags=["facilities"])

FacilityId = Annotated[Slug, Path(description="facility id")]


@router.get("", response_model=Page[FacilitySummary], responses=responses(401, 422))
def list_facilities(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                    borrower_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    """Facilities with limit, drawn, available, LTV against its lines and open alerts, riskiest
    first. Enterprises see their own."""
    return page.page(scoped_reads.facilities(conn, principal.scope, page.limit + 1, page.offset,
                                        borrower_id))


@router.get("/{facility_id}", response_model=FacilityLimit, responses=responses(401, 404, 422))
@router.get("/{facility_id}/limit", response_model=FacilityLimit,
            responses=responses(401, 404, 422))
async def facility_limit(request: Request, principal: CurrentPrincipal,
                         facility_id: FacilityId) -> dict[str, Any]:
    """The current limit, available to draw, outstanding and LTV against the warning and
    liquidation lines."""
    row = await with_conn(request, scoped_reads.facility_limit, principal.scope, facility_id)
    return found(row, "facility", facility_id)


@router.get("/{facility_id}/limits", response_model=Page[LimitPoint],
            responses=responses(401, 404, 422))
def limit_history(conn: ConnDep, principal: CurrentPrincipal, facility_id: FacilityId,
                  page: PageDep) -> Page[Any]:
    """Limit snapshots newest first, each with the verified quantity and prices behind it."""
    if not scoped_reads.facility_exists(conn, principal.scope, facility_id):
        raise not_found("facility", facility_id)
    return page.page(scoped_reads.limit_history(conn, principal.scope, facility_id, page.limit + 1,
                                           page.offset))


@router.get("/{facility_id}/limits/{snapshot_id}", response_model=SnapshotExplained,
            responses=responses(401, 404, 422))
def explain_snapshot(conn: ConnDep, principal: CurrentPrincipal, facility_id: FacilityId,
                     snapshot_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> dict[str, Any]:
    """Why the limit was what it was: every input, the formula and what moved since before."""
    row = found(scoped_reads.snapshot(conn, principal.scope, facility_id, snapshot_id), "snapshot",
                snapshot_id)
    snap = snapshot_from_inputs(row["inputs"])
    previous = conn.execute(
        "SELECT inputs FROM limit_snapshots WHERE facility_id = %s AND (time, id) < (%s, %s)"
        " ORDER BY time DESC, id DESC LIMIT 1", (facility_id, row["time"], row["id"])).fetchone()
    changes = explain_change(snapshot_from_inputs(previous[0]), snap) if previous else []
    return {"id": row["id"], "facility_id": facility_id, "time": row["time"],
            "reasons": row["reasons"], "explanation": snap.explain(), "changes": changes,
            "inputs": row["inputs"]}
