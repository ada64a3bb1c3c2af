"""Alerts: list and filter; officers acknowledge and resolve with a comment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from api import scoped_reads
from api.deps import BankUser, ConnDep, CurrentPrincipal, Page, PageDep, with_conn
from api.problems import found, responses
from api.schemas import AlertPublic, AlertResolve, Slug
from lending import operations
from lending.domain.alerts import AlertType

router = APIRouter(prefix="/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="alert id")]


@router.get("", response_model=Page[AlertPublic], responses=responses(401, 422))
async def list_alerts(
    request: Request, principal: CurrentPrincipal, page: PageDep,
    status: Annotated[Literal["open", "acknowledged", "resolved", "active"] | None,
                      Query(description="`active` = open or acknowledged")] = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    type: Annotated[AlertType | None, Query(description="alert type")] = None,
    facility_id: Slug | None = None,
    lot_id: Slug | None = None,
) -> Page[Any]:
    """Alerts newest first. Enterprises see their own facilities' alerts."""
    return page.page(await with_conn(
        request, scoped_reads.alerts, principal.scope, page.limit + 1, page.offset,
        facility_id=facility_id, status=status, severity=severity,
        alert_type=type.value if type else None, lot_id=lot_id))


def _visible(conn: ConnDep, principal: CurrentPrincipal, alert_id: int) -> dict[str, Any]:
    return found(scoped_reads.alert(conn, principal.scope, alert_id), "alert", alert_id)


@router.get("/{alert_id}", response_model=AlertPublic, responses=responses(401, 404, 422))
def get_alert(conn: ConnDep, principal: CurrentPrincipal, alert_id: AlertId) -> dict[str, Any]:
    return _visible(conn, principal, alert_id)


@router.post("/{alert_id}/acknowledge", response_model=AlertPublic,
             responses=responses(401, 403, 404, 409, 422))
def acknowledge(conn: ConnDep, officer: BankUser, alert_id: AlertId) -> dict[str, Any]:
    _visible(conn, officer, alert_id)
    operations.acknowledge_alert(conn, alert_id, officer.subject, datetime.now(UTC))
    return _visible(conn, officer, alert_id)


@router.post("/{alert_id}/resolve", response_model=AlertPublic,
             responses=responses(401, 403, 404, 409, 422))
def resolve(conn: ConnDep, officer: BankUser, alert_id: AlertId,
            body: AlertResolve | None = None) -> dict[str, Any]:
    _visible(conn, officer, alert_id)
    operations.resolve_alert(conn, alert_id, officer.subject, body.comment if body else None,
                          datetime.now(UTC))
    return _visible(conn, officer, alert_id)
