"""Webhooks: bank users register receivers of signed alert events and read their delivery log.

Enterprises get 403 on every route: a webhook can cover the whole portfolio."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request

from api.deps import ApiConfig, BankUser, ConnDep, Page, PageDep
from api.problems import ApiProblem, found, responses
from api.schemas import (
    Slug,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookPublic,
)
from notifier import webhook_store
from notifier.signing import new_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1, description="webhook id")]


@router.post("", response_model=WebhookCreated, status_code=201,
             responses=responses(401, 403, 422))
def create_webhook(request: Request, conn: ConnDep, officer: BankUser,
                   body: WebhookCreate) -> dict[str, Any]:
    """Register an http(s) receiver of alert events, for one borrower or (no `borrower_id`) the
    whole portfolio. Without a `secret` one is generated and returned in this answer only. The
    host must resolve to public addresses only (no loopback, private, link-local, CGNAT,
    multicast or cloud-metadata address) unless it is on the allow-list
    (`PLEDGEWATCH_WEBHOOK_ALLOW`); it is checked again before every delivery."""
    config: ApiConfig = request.app.state.api_config
    if body.borrower_id is not None and not webhook_store.borrower_exists(conn, body.borrower_id):
        raise ApiProblem(422, f"borrower_id: no borrower {body.borrower_id!r}")
    secret = body.secret or new_secret()
    try:
        row = webhook_store.create_webhook(conn, body.url, secret, body.borrower_id,
                                           body.description, officer.subject,
                                           policy=config.webhook_policy,
                                           ledger_heads=body.ledger_heads)
    except ValueError as exc:
        raise ApiProblem(422, f"url: {exc}") from None
    return {**row, "secret": None if body.secret else secret}


@router.get("", response_model=Page[WebhookPublic], responses=responses(401, 403, 422))
def list_webhooks(conn: ConnDep, _officer: BankUser, page: PageDep, active: bool | None = None,
                  borrower_id: Slug | None = None) -> Page[Any]:
    return page.page(webhook_store.webhooks(conn, page.limit + 1, page.offset, active=active,
                                            borrower_id=borrower_id))


def _webhook(conn: ConnDep, webhook_id: int) -> dict[str, Any]:
    return found(webhook_store.webhook(conn, webhook_id), "webhook", webhook_id)


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=responses(401, 403, 404, 422))
def get_webhook(conn: ConnDep, _officer: BankUser, webhook_id: WebhookId) -> dict[str, Any]:
    return _webhook(conn, webhook_id)


@router.delete("/{webhook_id}", response_model=WebhookPublic,
               responses=responses(401, 403, 404, 422))
def deactivate_webhook(conn: ConnDep, _officer: BankUser, webhook_id: WebhookId) -> dict[str, Any]:
    """Deactivate: nothing more is sent, pending deliveries are cancelled, the log is kept."""
    return found(webhook_store.deactivate_webhook(conn, webhook_id), "webhook", webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=Page[WebhookDeliveryPublic],
            responses=responses(401, 403, 404, 422))
def list_deliveries(
    conn: ConnDep, _officer: BankUser, webhook_id: WebhookId, page: PageDep,
    status: Literal["pending", "delivered", "failed", "cancelled"] | None = None,
) -> Page[Any]:
    """The delivery log, newest first: one entry per event, with every attempt."""
    _webhook(conn, webhook_id)
    return page.page(webhook_store.deliveries(conn, webhook_id, page.limit + 1, page.offset,
                                              status=status))


@router.post("/{webhook_id}/test", response_model=WebhookDeliveryPublic, status_code=202,
             responses=responses(401, 403, 404, 409, 422))
def test_webhook(conn: ConnDep, officer: BankUser, webhook_id: WebhookId) -> dict[str, Any]:
    """Queue a signed `ping` to this webhook; follow it in the delivery log."""
    if not _webhook(conn, webhook_id)["active"]:
        raise ApiProblem(409, f"webhook {webhook_id} is deactivated")
    return webhook_store.enqueue_ping(conn, webhook_id, officer.subject)
