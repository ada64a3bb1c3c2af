"""The enterprise client: one method per operation of the API an enterprise may call.

Each method says in one line which HTTP operation it is (``@operation(method, path, answer)``)
and builds the request's parts (a :class:`Call`); the decorator sends it, retries what is safe to
retry, turns a refusal into an :class:`~pledgewatch_sdk.errors.ApiError` and the answer into
typed models. ``OPERATIONS`` lists them all (tests/unit/test_sdk_schema.py checks it against
the API's OpenAPI document)."""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from pledgewatch_sdk.errors import (
    PledgeWatchError,
    TransportError,
    UnexpectedResponse,
    api_error,
    retry_after,
)
from pledgewatch_sdk.models import (
    Alert,
    AlertFilter,
    Borrower,
    BorrowerRating,
    Chain,
    Device,
    DeviceLatest,
    DeviceSeries,
    Drawdown,
    DrawdownState,
    Facility,
    FacilityLimit,
    Inspection,
    LedgerConsistency,
    LedgerEntry,
    LedgerEntryProof,
    LedgerHead,
    LimitExplained,
    LimitPoint,
    Lot,
    LotSeries,
    Me,
    Model,
    Page,
    Payment,
    Price,
    Programme,
    Receivable,
    Release,
    ReleaseState,
    Repayment,
    Sale,
    Severity,
    Shipment,
    TradeState,
    Voucher,
    VoucherDetail,
    VoucherState,
)

VERSION = "0.1.0"
API = "/api/v1"
# Answers worth asking again for, when asking again is safe: the API's database is unavailable
# (503, with Retry-After), a proxy in front of it failed or timed out.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Failures that happen before a request is sent: safe to retry whatever the request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=Model)


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key. Keep it with the payment order before calling
    :meth:`Client.request_drawdown` if the order must survive a crash of your own process."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Call:
    """The parts of one request a method builds: path parameters, query, JSON body, headers."""

    path: Mapping[str, str | int] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One operation of the API: the SDK method calling it, its method and path (as in the
    OpenAPI document), the type of its answer, and whether a request whose answer was lost may be
    sent again (reads, and drawdowns thanks to their Idempotency-Key)."""

    name: str
    method: str
    path: str
    response: Any
    replayable: bool
    build: Callable[..., Call]


OPERATIONS: dict[str, Operation] = {}


def operation(method: str, path: str, response: type[R], *, replayable: bool | None = None
              ) -> Callable[[Callable[Concatenate[Client, P], Call]],
                            Callable[Concatenate[Client, P], R]]:
    """Make a method that builds a :class:`Call` into one that sends it and returns ``response``."""

    def decorate(build: Callable[Concatenate[Client, P], Call]) -> Callable[Concatenate[Client, P], R]:
        op = Operation(build.__name__, method, API + path, response,
                       method == "GET" if replayable is None else replayable, build)
        OPERATIONS[op.name] = op
        adapter: TypeAdapter[R] = TypeAdapter(response)

        def send(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return self._send(op, adapter, build(self, *args, **kwargs))

        # what help() and notebooks show: the method's own name, arguments, answer and doc
        send.__name__, send.__qualname__, send.__doc__ = (build.__name__, build.__qualname__,
                                                          build.__doc__)
        send.__module__ = build.__module__
        send.__signature__ = inspect.signature(build).replace(  # type: ignore[attr-defined]
            return_annotation=response)
        return send

    return decorate


def _instant(value: datetime, name: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return value.isoformat()


def _query_value(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _instant(value, name)
    return value


def _body(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields given: an optional one left as None is not sent."""
    return {k: _instant(v, k) if isinstance(v, datetime) else v
            for k, v in fields.items() if v is not None}


def paginate(list_method: Callable[..., Page[M]], /, **params: Any) -> Iterator[M]:
    """Every item of a list, page after page: ``for v in paginate(client.vouchers, status="active")``."""
    offset = params.pop("offset", 0)
    while True:
        page = list_method(**params, offset=offset)
        yield from page.items
        if page.next_offset is None:
            return
        offset = page.next_offset


class Client:
    """PledgeWatch for an enterprise, with its API key::

        with Client("https://pledgewatch.example-bank.com", api_key="pwk_...") as pw:
            pw.request_drawdown("fac-grain", 10_000, "CNY", tenor_days=90, purpose="buy wheat")

    ``timeout`` (seconds) bounds each attempt; ``retries`` is how many times a request is sent
    again after a lost connection, a timeout or a 429/502/503/504 when that is safe: reads, a
    drawdown (with the same Idempotency-Key), and any request that failed before it was sent.
    ``transport``, ``verify`` and ``trust_env`` go to httpx (a proxy from the environment, a CA
    bundle, a test transport)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float | httpx.Timeout = 10.0,
                 retries: int = 2, backoff: float = 0.25, max_backoff: float = 5.0,
                 transport: httpx.BaseTransport | None = None, verify: Any = True,
                 trust_env: bool = True) -> None:
        if not api_key:
            raise ValueError("an API key is required (an admin issues one per enterprise)")
        self._retries, self._backoff, self._max_backoff = max(0, retries), backoff, max_backoff
        root = base_url.rstrip("/").removesuffix(API)  # the server's root: paths carry /api/v1
        self._http = httpx.Client(
            base_url=root, timeout=timeout, transport=transport, verify=verify,
            trust_env=trust_env, follow_redirects=False,
            headers={"X-API-Key": api_key, "Accept": "application/json",
                     "User-Agent": f"pledgewatch-sdk/{VERSION}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ---

    def _send(self, op: Operation, adapter: TypeAdapter[R], call: Call) -> R:
        url = op.path.format(**{k: quote(str(v), safe="") for k, v in call.path.items()})
        params = {k: _query_value(k, v) for k, v in call.query.items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self._http.request(op.method, url, params=params, json=call.json,
                                              headers=dict(call.headers))
            except httpx.TransportError as exc:
                if attempt < self._retries and (op.replayable or isinstance(exc, NOT_SENT)):
                    self._pause(attempt, None)
                    attempt += 1
                    continue
                raise self._keyed(TransportError(
                    f"{op.method} {url}: no answer after {attempt + 1} attempt(s): {exc!r}"),
                    call) from exc
            if (response.status_code in RETRY_STATUSES and op.replayable
                    and attempt < self._retries):
                self._pause(attempt, retry_after(response))
                attempt += 1
                continue
            if response.is_error:
                raise self._keyed(api_error(response), call)
            try:
                return adapter.validate_json(response.content)
            except ValidationError as exc:
                raise UnexpectedResponse(
                    f"{op.method} {url} answered {response.status_code} with a body that is not a "
                    f"{getattr(op.response, '__name__', op.response)}: {exc}",
                    response.status_code, response.text[:2000]) from exc

    def _pause(self, attempt: int, after: float | None) -> None:
        time.sleep(min(self._max_backoff, self._backoff * 2 ** attempt if after is None else after))

    @staticmethod
    def _keyed(error: PledgeWatchError, call: Call) -> PledgeWatchError:
        error.idempotency_key = call.headers.get("Idempotency-Key")
        return error

    # --- who am I ---

    @operation("GET", "/auth/me", Me)
    def me(self) -> Call:
        """The caller: role ``enterprise`` and the borrower the API key belongs to."""
        return Call()

    # --- facilities and their limits ---

    @operation("GET", "/facilities", Page[Facility])
    def facilities(self, borrower_id: str | None = None, limit: int = 50, offset: int = 0) -> Call:
        """Your facilities with limit, drawn, available, LTV and open alerts, riskiest first."""
        return Call(query={"borrower_id": borrower_id, "limit": limit, "offset": offset})

    @operation("GET", "/facilities/{facility_id}", FacilityLimit)
    def facility(self, facility_id: str) -> Call:
        """A facility's current limit (the same answer as :meth:`limit`)."""
        return Call(path={"facility_id": facility_id})

    @operation("GET", "/facilities/{facility_id}/limit", FacilityLimit)
    def limit(self, facility_id: str) -> Call:
        """The current limit, ``available`` to draw, outstanding and LTV against the lines."""
        return Call(path={"facility_id": facility_id})

    @operation("GET", "/facilities/{facility_id}/limits", Page[LimitPoint])
    def limit_history(self, facility_id: str, limit: int = 50, offset: int = 0) -> Call:
        """Limit snapshots, newest first."""
        return Call(path={"facility_id": facility_id}, query={"limit": limit, "offset": offset})

    @operation("GET", "/facilities/{facility_id}/limits/{snapshot_id}", LimitExplained)
    def explain_limit(self, facility_id: str, snapshot_id: int) -> Call:
        """Why the limit was what it was: every input, the formula and what moved."""
        return Call(path={"facility_id": facility_id, "snapshot_id": snapshot_id})

    # --- financing: drawdowns and repayments ---

    @operation("POST", "/drawdowns", Drawdown, replayable=True)
    def request_drawdown(self, facility_id: str, amount: float, currency: str, tenor_days: int,
                         purpose: str, idempotency_key: str | None = None) -> Call:
        """Draw on a facility: ``approved`` at once when it fits the available limit, else
        ``pending`` for an officer with the ``reasons``. Sent with an Idempotency-Key (a new one
        per call unless given), reused when the SDK retries, so a retry never pays twice."""
        return Call(json=_body(facility_id=facility_id, amount=amount, currency=currency,
                               tenor_days=tenor_days, purpose=purpose),
                    headers={"Idempotency-Key": idempotency_key or new_idempotency_key()})

    @operation("GET", "/drawdowns", Page[Drawdown])
    def drawdowns(self, facility_id: str | None = None, status: DrawdownState | None = None,
                  overdue: bool | None = None, limit: int = 50, offset: int = 0) -> Call:
        """Your drawdowns, newest first."""
        return Call(query={"facility_id": facility_id, "status": status, "overdue": overdue,
                           "limit": limit, "offset": offset})

    @operation("GET", "/drawdowns/{drawdown_id}", Drawdown)
    def drawdown(self, drawdown_id: str) -> Call:
        return Call(path={"drawdown_id": drawdown_id})

    @operation("POST", "/repayments", Repayment)
    def repay(self, facility_id: str, amount: float) -> Call:
        """Repay: the drawdowns maturing first are paid first; outstanding falls with them."""
        return Call(json=_body(facility_id=facility_id, amount=amount))

    # --- receivables: invoices you are owed, payables you confirm ---

    @operation("GET", "/receivables", Page[Receivable])
    def receivables(self, facility_id: str | None = None, verified: bool | None = None,
                    trade_status: TradeState | None = None, limit: int = 50,
                    offset: int = 0) -> Call:
        """Receivables of your facilities; a core enterprise also sees those it owes.
        ``trade_status``: those whose shipment telemetry proved, contradicted or not yet."""
        return Call(query={"facility_id": facility_id, "verified": verified,
                           "trade_status": trade_status, "limit": limit, "offset": offset})

    @operation("POST", "/receivables", Receivable)
    def post_receivable(self, facility_id: str, debtor: str, amount: float, due: datetime,
                        related_party: bool = False, disputed: bool = False,
                        debtor_id: str | None = None, shipment: Shipment | None = None) -> Call:
        """An invoice owed to you. Name the debtor's borrower id (``debtor_id``) for a core
        enterprise to confirm it, and the ``shipment`` behind it for telemetry to prove it."""
        return Call(json=_body(
            facility_id=facility_id, debtor=debtor, amount=amount, due=due,
            related_party=related_party, disputed=disputed, debtor_id=debtor_id,
            shipment=None if shipment is None else shipment.model_dump(mode="json")))

    @operation("POST", "/receivables/{receivable_id}/confirm", VoucherDetail)
    def confirm_receivable(self, receivable_id: str, programme_id: str | None = None) -> Call:
        """As the debtor (a core enterprise), confirm a payable you owe: the supplier gets a
        voucher on you, maturing on the due date, within your programme line."""
        return Call(path={"receivable_id": receivable_id}, query={"programme_id": programme_id})

    # --- supply chain: programmes and vouchers ---

    @operation("GET", "/programmes", list[Programme])
    def programmes(self) -> Call:
        """The programmes of your chain."""
        return Call()

    @operation("GET", "/programmes/{programme_id}", Programme)
    def programme(self, programme_id: str) -> Call:
        return Call(path={"programme_id": programme_id})

    @operation("GET", "/programmes/{programme_id}/chain", Chain)
    def chain(self, programme_id: str) -> Call:
        """The chain from the core enterprise down, with the vouchers you may see."""
        return Call(path={"programme_id": programme_id})

    @operation("GET", "/vouchers", Page[Voucher])
    def vouchers(self, programme_id: str | None = None, holder_id: str | None = None,
                 status: VoucherState | None = None, limit: int = 50, offset: int = 0) -> Call:
        """Vouchers you hold or held (a core enterprise: all of its programmes'), newest first."""
        return Call(query={"programme_id": programme_id, "holder_id": holder_id,
                           "status": status, "limit": limit, "offset": offset})

    @operation("GET", "/vouchers/{voucher_id}", VoucherDetail)
    def voucher(self, voucher_id: str) -> Call:
        """A voucher with its ``path`` back to the core enterprise's confirmation."""
        return Call(path={"voucher_id": voucher_id})

    @operation("POST", "/vouchers/{voucher_id}/transfer", VoucherDetail)
    def transfer_voucher(self, voucher_id: str, to: str, amount: float) -> Call:
        """Pass ``amount`` of a voucher you hold to a member of the same chain; the rest stays
        yours as a new voucher. Returns the receiver's voucher."""
        return Call(path={"voucher_id": voucher_id}, json=_body(to=to, amount=amount))

    @operation("POST", "/vouchers/{voucher_id}/finance", VoucherDetail)
    def finance_voucher(self, voucher_id: str) -> Call:
        """Sell a voucher you hold to the bank at the programme's advance rate."""
        return Call(path={"voucher_id": voucher_id})

    @operation("POST", "/vouchers/{voucher_id}/pay", Payment)
    def pay_payable(self, voucher_id: str, amount: float) -> Call:
        """As the core enterprise, pay a confirmed payable (a root voucher) in full: the bank is
        repaid what it financed, holders the rest."""
        return Call(path={"voucher_id": voucher_id}, json=_body(amount=amount))

    # --- the verifiable ledger ---

    @operation("GET", "/ledger/head", LedgerHead)
    def ledger_head(self) -> Call:
        """The latest signed tree head: keep it, to check later that the log only grew."""
        return Call()

    @operation("GET", "/ledger/heads", Page[LedgerHead])
    def ledger_heads(self, limit: int = 50, offset: int = 0) -> Call:
        """Signed tree heads, newest first."""
        return Call(query={"limit": limit, "offset": offset})

    @operation("GET", "/ledger/entries", Page[LedgerEntry])
    def ledger_entries(self, table: str | None = None, key: str | None = None, limit: int = 50,
                       offset: int = 0) -> Call:
        """Ledger entries that concern you, newest first (of one table and row key if given)."""
        return Call(query={"table": table, "key": key, "limit": limit, "offset": offset})

    @operation("GET", "/ledger/entries/{leaf_index}", LedgerEntryProof)
    def ledger_entry(self, leaf_index: int, tree_size: int | None = None) -> Call:
        """An entry with its inclusion proof against the latest signed head (or the one signed
        at ``tree_size``)."""
        return Call(path={"leaf_index": leaf_index}, query={"tree_size": tree_size})

    @operation("GET", "/ledger/consistency", LedgerConsistency)
    def ledger_consistency(self, first: int, second: int | None = None) -> Call:
        """Proof that the log at ``second`` entries (default: the latest signed head's) extends
        the log at ``first`` entries."""
        return Call(query={"first": first, "second": second})

    # --- alerts ---

    @operation("GET", "/alerts", Page[Alert])
    def alerts(self, status: AlertFilter | None = None, severity: Severity | None = None,
               type: str | None = None, facility_id: str | None = None,
               lot_id: str | None = None, limit: int = 50, offset: int = 0) -> Call:
        """Your facilities' alerts, newest first (``status="active"``: open or acknowledged)."""
        return Call(query={"status": status, "severity": severity, "type": type,
                           "facility_id": facility_id, "lot_id": lot_id, "limit": limit,
                           "offset": offset})

    @operation("GET", "/alerts/{alert_id}", Alert)
    def alert(self, alert_id: int) -> Call:
        return Call(path={"alert_id": alert_id})

    # --- borrowers, lots, inspections, releases ---

    @operation("GET", "/borrowers", Page[Borrower])
    def borrowers(self, limit: int = 50, offset: int = 0) -> Call:
        """Yourself, as the bank knows you."""
        return Call(query={"limit": limit, "offset": offset})

    @operation("GET", "/borrowers/{borrower_id}", Borrower)
    def borrower(self, borrower_id: str) -> Call:
        return Call(path={"borrower_id": borrower_id})

    @operation("GET", "/borrowers/{borrower_id}/rating", BorrowerRating)
    def rating(self, borrower_id: str) -> Call:
        """Your credit rating: score, PD, grade and reason codes, with the grade history."""
        return Call(path={"borrower_id": borrower_id})

    @operation("GET", "/lots", Page[Lot])
    def lots(self, facility_id: str | None = None, limit: int = 50, offset: int = 0) -> Call:
        """Your pledged lots: declared and verified quantity, trust, value, sensors, position."""
        return Call(query={"facility_id": facility_id, "limit": limit, "offset": offset})

    @operation("GET", "/lots/{lot_id}", Lot)
    def lot(self, lot_id: str) -> Call:
        return Call(path={"lot_id": lot_id})

    @operation("GET", "/lots/{lot_id}/inspections", Page[Inspection])
    def inspections(self, lot_id: str, limit: int = 50, offset: int = 0) -> Call:
        """A lot's physical counts, newest first."""
        return Call(path={"lot_id": lot_id}, query={"limit": limit, "offset": offset})

    @operation("GET", "/releases", Page[Release])
    def releases(self, lot_id: str | None = None, facility_id: str | None = None,
                 status: ReleaseState | None = None, limit: int = 50, offset: int = 0) -> Call:
        return Call(query={"lot_id": lot_id, "facility_id": facility_id, "status": status,
                           "limit": limit, "offset": offset})

    @operation("GET", "/releases/{release_id}", Release)
    def release(self, release_id: str) -> Call:
        return Call(path={"release_id": release_id})

    @operation("POST", "/releases", Release)
    def request_release(self, lot_id: str, quantity: float) -> Call:
        """Ask to take goods out of a pledged lot; an officer approves and executes it."""
        return Call(json=_body(lot_id=lot_id, quantity=quantity))

    # --- sales and prices ---

    @operation("GET", "/sales", Page[Sale])
    def sales(self, facility_id: str | None = None, limit: int = 50, offset: int = 0) -> Call:
        return Call(query={"facility_id": facility_id, "limit": limit, "offset": offset})

    @operation("POST", "/sales", Sale)
    def post_sale(self, facility_id: str, amount: float, time: datetime | None = None) -> Call:
        """A sales signal from your ERP/POS (``time``: when it was sold; now if omitted)."""
        return Call(json=_body(facility_id=facility_id, amount=amount, time=time))

    @operation("GET", "/prices", Page[Price])
    def prices(self, commodity: str | None = None, start: datetime | None = None,
               end: datetime | None = None, limit: int = 50, offset: int = 0) -> Call:
        return Call(query={"commodity": commodity, "start": start, "end": end, "limit": limit,
                           "offset": offset})

    # --- devices and telemetry of your lots ---

    @operation("GET", "/devices", Page[Device])
    def devices(self, lot_id: str | None = None, facility_id: str | None = None,
                limit: int = 50, offset: int = 0) -> Call:
        return Call(query={"lot_id": lot_id, "facility_id": facility_id, "limit": limit,
                           "offset": offset})

    @operation("GET", "/devices/{device_id}", Device)
    def device(self, device_id: str) -> Call:
        return Call(path={"device_id": device_id})

    @operation("GET", "/telemetry/latest", Page[DeviceLatest])
    def latest_readings(self, lot_id: str | None = None, facility_id: str | None = None,
                        limit: int = 50, offset: int = 0) -> Call:
        return Call(query={"lot_id": lot_id, "facility_id": facility_id, "limit": limit,
                           "offset": offset})

    @operation("GET", "/telemetry/devices/{device_id}/latest", DeviceLatest)
    def device_latest(self, device_id: str) -> Call:
        return Call(path={"device_id": device_id})

    @operation("GET", "/telemetry/devices/{device_id}/series", DeviceSeries)
    def device_series(self, device_id: str, metric: str, start: datetime | None = None,
                      end: datetime | None = None, bucket_s: int = 300) -> Call:
        return Call(path={"device_id": device_id}, query={"metric": metric, "start": start,
                                                          "end": end, "bucket_s": bucket_s})

    @operation("GET", "/telemetry/lots/{lot_id}/series", LotSeries)
    def lot_series(self, lot_id: str, metric: str, start: datetime | None = None,
                   end: datetime | None = None, bucket_s: int = 300) -> Call:
        return Call(path={"lot_id": lot_id}, query={"metric": metric, "start": start,
                                                    "end": end, "bucket_s": bucket_s})
