"""The enterprise SDK's own behaviour, against a scripted HTTP transport (httpx.MockTransport: a
fake server, no network): the API key on every request, one Idempotency-Key per drawdown reused on
the SDK's retries, no blind retry of a request that may have been acted on, problem details in
the exceptions, typed answers, pagination and refusals made before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pledgewatch_sdk import (
    Client,
    Conflict,
    Drawdown,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    Shipment,
    TransportError,
    UnexpectedResponse,
    paginate,
)

BASE = "http://pledgewatch.test"
KEY = "pwk_test_secret"
NOW = "2030-01-01T12:00:00Z"
DRAWDOWN = {
    "drawdown_id": "dd-1", "facility_id": "fac-grain", "borrower_id": "sup-grain",
    "amount": 10_000.0, "currency": "CNY", "tenor_days": 90, "purpose": "buy wheat",
    "source": "request", "status": "approved", "reasons": [], "repaid": 0.0, "owed": 10_000.0,
    "overdue": False, "requested_by": "k1", "requested_at": NOW, "decided_by": "auto",
    "decided_at": NOW, "comment": None, "maturity": "2030-04-01T12:00:00Z",
}
VOUCHER = {
    "voucher_id": "v-2", "programme_id": "mill-chain", "core_id": "core-mill",
    "receivable_id": "ar-1", "parent_id": "v-1", "root_id": "v-1", "holder_id": "sup-grain",
    "amount": 40_000.0, "maturity": NOW, "status": "active", "financed_amount": None,
    "financed_at": None, "financed_by": None, "settled_at": None, "created_by": "k2",
    "created_at": NOW, "trade_status": "none", "tier": 2,
    "path": [{"voucher_id": "v-1", "holder_id": "sup-metal", "amount": 100_000.0,
              "status": "spent", "created_at": NOW, "created_by": "k3"}],
    "confirmation": {"receivable_id": "ar-1", "debtor_id": "core-mill", "confirmed_at": NOW,
                     "confirmed_by": "k3"},
}
Reply = httpx.Response | Exception


class Script:
    """A fake API answering each request with the next scripted reply, recording what it got."""

    def __init__(self, *replies: Reply | Callable[[httpx.Request], Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.replies, f"unexpected request {request.method} {request.url}"
        reply = self.replies.pop(0)
        if callable(reply) and not isinstance(reply, httpx.Response):
            reply = reply(request)
        if isinstance(reply, Exception):
            raise reply
        return reply


def problem(status: int, title: str, detail: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/problem+json"},
                          content=json.dumps({"type": "about:blank", "title": title,
                                              "status": status, "detail": detail, **extra}))


@pytest.fixture
def connect() -> Iterator[Callable[..., tuple[Client, Script]]]:
    clients: list[Client] = []

    def make(*replies: Any, retries: int = 2) -> tuple[Client, Script]:
        script = Script(*replies)
        client = Client(BASE, KEY, transport=httpx.MockTransport(script), retries=retries,
                        backoff=0, timeout=2)
        clients.append(client)
        return client, script

    yield make
    for client in clients:
        client.close()


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_a_drawdown_carries_the_key_and_a_typed_answer(connect: Any) -> None:
    pw, api = connect(httpx.Response(201, json=DRAWDOWN), httpx.Response(201, json=DRAWDOWN))
    drawdown = pw.request_drawdown("fac-grain", 10_000, "CNY", tenor_days=90, purpose="buy wheat")
    assert isinstance(drawdown, Drawdown) and drawdown.status == "approved"
    assert drawdown.maturity == datetime(2030, 4, 1, 12, tzinfo=UTC)
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/api/v1/drawdowns")
    assert sent.headers["X-API-Key"] == KEY
    assert body(sent) == {"facility_id": "fac-grain", "amount": 10_000, "currency": "CNY",
                          "tenor_days": 90, "purpose": "buy wheat"}
    pw.request_drawdown("fac-grain", 10_000, "CNY", 90, "buy wheat", idempotency_key="order-00042")
    first, given = (r.headers["Idempotency-Key"] for r in api.requests)
    assert len(first) >= 8 and given == "order-00042"


def test_a_drawdown_retried_by_the_sdk_reuses_its_key(connect: Any) -> None:
    """The answer to the first attempt is lost (read timeout), then the API is briefly
    unavailable: every attempt carries the same key, so the API pays once."""
    pw, api = connect(httpx.ReadTimeout("lost"), problem(503, "Service unavailable", "database"),
                      httpx.Response(200, json=DRAWDOWN))
    assert pw.request_drawdown("fac-grain", 10_000, "CNY", 90, "x").drawdown_id == "dd-1"
    keys = {r.headers["Idempotency-Key"] for r in api.requests}
    assert len(api.requests) == 3 and len(keys) == 1
    # two calls are two drawdowns: two keys
    pw2, api2 = connect(httpx.Response(201, json=DRAWDOWN), httpx.Response(201, json=DRAWDOWN))
    pw2.request_drawdown("fac-grain", 1, "CNY", 1, "x")
    pw2.request_drawdown("fac-grain", 1, "CNY", 1, "x")
    assert len({r.headers["Idempotency-Key"] for r in api2.requests}) == 2


def test_when_retries_run_out_the_error_names_the_key_to_try_again_with(connect: Any) -> None:
    pw, api = connect(httpx.ReadTimeout("lost"), httpx.ReadTimeout("lost"), retries=1)
    with pytest.raises(TransportError) as caught:
        pw.request_drawdown("fac-grain", 10_000, "CNY", 90, "x")
    assert caught.value.idempotency_key == api.requests[0].headers["Idempotency-Key"]
    assert len(api.requests) == 2


def test_a_transfer_whose_answer_was_lost_is_not_sent_again(connect: Any) -> None:
    """No key protects a transfer: after a read timeout the API may have acted, so the SDK
    raises instead of spending the voucher a second time; a refused connection is retried."""
    pw, api = connect(httpx.ReadTimeout("lost"))
    with pytest.raises(TransportError, match="1 attempt"):
        pw.transfer_voucher("v-1", to="sup-grain", amount=40_000)
    assert len(api.requests) == 1
    pw, api = connect(httpx.ConnectError("refused"), httpx.Response(201, json=VOUCHER))
    moved = pw.transfer_voucher("v-1", to="sup-grain", amount=40_000)
    assert moved.tier == 2 and moved.path[0].holder_id == "sup-metal"
    assert len(api.requests) == 2 and body(api.requests[1]) == {"to": "sup-grain", "amount": 40_000}


def test_a_post_that_got_a_503_is_not_retried_but_a_read_is(connect: Any) -> None:
    pw, api = connect(problem(503, "Service unavailable", "database unavailable"))
    with pytest.raises(ServiceUnavailable):
        pw.finance_voucher("v-2")
    assert len(api.requests) == 1
    pw, api = connect(problem(503, "Service unavailable", "database unavailable"),
                      httpx.Response(200, json=VOUCHER))
    assert pw.voucher("v-2").voucher_id == "v-2" and len(api.requests) == 2


def test_refusals_carry_the_problem_details(connect: Any) -> None:
    pw, _ = connect(
        problem(409, "Conflict", "voucher v-1 was already spent: a voucher is spent only once",
                instance="/api/v1/vouchers/v-1/transfer"),
        problem(422, "Invalid request", "body.amount: Input should be greater than 0",
                errors=[{"loc": ["body", "amount"], "msg": "Input should be greater than 0",
                         "type": "greater_than"}]),
        problem(404, "Not found", "no voucher 'v-9'"),
        problem(403, "Forbidden", "only the enterprise that holds a voucher can spend it"),
        problem(503, "Service unavailable", "database unavailable"), retries=0)
    with pytest.raises(Conflict) as conflict:
        pw.transfer_voucher("v-1", to="sup-grain", amount=1)
    assert conflict.value.status == 409 and "spent only once" in (conflict.value.detail or "")
    assert conflict.value.instance == "/api/v1/vouchers/v-1/transfer"
    assert "409 Conflict" in str(conflict.value)
    with pytest.raises(InvalidRequest) as invalid:
        pw.transfer_voucher("v-1", to="sup-grain", amount=0)
    assert invalid.value.errors[0].loc == ("body", "amount")
    with pytest.raises(NotFound):
        pw.voucher("v-9")
    with pytest.raises(Forbidden):
        pw.finance_voucher("v-1")
    with pytest.raises(ServiceUnavailable):
        pw.voucher("v-1")


def test_a_problem_s_retry_after_is_kept(connect: Any) -> None:
    reply = problem(503, "Service unavailable", "database unavailable")
    reply.headers["Retry-After"] = "5"
    pw, _ = connect(reply, retries=0)
    with pytest.raises(ServiceUnavailable) as caught:
        pw.limit("fac-grain")
    assert caught.value.retry_after == 5.0


def test_an_answer_of_another_shape_is_reported_as_such(connect: Any) -> None:
    pw, _ = connect(httpx.Response(200, json={"drawdown_id": "dd-1"}),
                    httpx.Response(200, text="<html>proxy error</html>"))
    with pytest.raises(UnexpectedResponse, match="Drawdown"):
        pw.drawdown("dd-1")
    with pytest.raises(UnexpectedResponse):
        pw.drawdown("dd-1")


def test_ids_are_escaped_and_queries_encoded(connect: Any) -> None:
    page = {"items": [], "limit": 10, "offset": 0, "next_offset": None}
    pw, api = connect(httpx.Response(200, json=DRAWDOWN), httpx.Response(200, json=page),
                      httpx.Response(201, json=VOUCHER))
    pw.drawdown("dd/../../admin")
    pw.drawdowns(status="pending", overdue=False, limit=10)
    pw.confirm_receivable("ar-1", programme_id="mill-chain")
    assert api.requests[0].url.raw_path == b"/api/v1/drawdowns/dd%2F..%2F..%2Fadmin"
    assert dict(api.requests[1].url.params) == {"status": "pending", "overdue": "false",
                                                "limit": "10", "offset": "0"}
    assert api.requests[2].url.path == "/api/v1/receivables/ar-1/confirm"
    assert dict(api.requests[2].url.params) == {"programme_id": "mill-chain"}
    assert api.requests[2].content == b""


def test_a_receivable_with_its_shipment(connect: Any) -> None:
    receivable = {"receivable_id": "ar-1", "facility_id": "fac-metal", "debtor": "Mill",
                  "amount": 100.0, "due": NOW, "related_party": False, "disputed": False,
                  "paid": False, "verified": False, "verified_at": None, "verified_by": None,
                  "posted_by": "k1"}  # the fields the API may leave out are left out
    pw, api = connect(httpx.Response(201, json=receivable))
    shipped = datetime(2030, 1, 1, 8, tzinfo=UTC)
    posted = pw.post_receivable(
        "fac-metal", "Mill", 100, due=datetime(2030, 3, 1, tzinfo=UTC), debtor_id="core-mill",
        shipment=Shipment(vehicle="trk-1", seller_lot_id="lot-a", quantity=5,
                          buyer_lot_id="lot-b", shipped_at=shipped))
    assert posted.trade_status == "none" and posted.debtor_id is None
    assert body(api.requests[0]) == {
        "facility_id": "fac-metal", "debtor": "Mill", "amount": 100,
        "due": "2030-03-01T00:00:00+00:00", "related_party": False, "disputed": False,
        "debtor_id": "core-mill", "shipment": {"vehicle": "trk-1", "seller_lot_id": "lot-a",
                                               "quantity": 5.0, "buyer_lot_id": "lot-b",
                                               "shipped_at": "2030-01-01T08:00:00Z"}}


def test_a_naive_time_is_refused_before_anything_is_sent(connect: Any) -> None:
    pw, api = connect()
    with pytest.raises(ValueError, match="timezone-aware"):
        pw.post_receivable("fac-metal", "Mill", 100, due=datetime(2030, 3, 1))  # noqa: DTZ001
    assert api.requests == []


def test_paginate_follows_next_offset(connect: Any) -> None:
    def page(offset: int, next_offset: int | None) -> httpx.Response:
        return httpx.Response(200, json={"items": [{**VOUCHER, "voucher_id": f"v-{offset}"}],
                                         "limit": 1, "offset": offset, "next_offset": next_offset})

    pw, api = connect(page(0, 1), page(1, 2), page(2, None))
    ids = [v.voucher_id for v in paginate(pw.vouchers, status="active", limit=1)]
    assert ids == ["v-0", "v-1", "v-2"]
    assert [r.url.params["offset"] for r in api.requests] == ["0", "1", "2"]
    assert {r.url.params["status"] for r in api.requests} == {"active"}


def test_an_api_key_is_required() -> None:
    with pytest.raises(ValueError, match="API key"):
        Client(BASE, "")
