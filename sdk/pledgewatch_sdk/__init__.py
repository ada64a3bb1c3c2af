"""PledgeWatch for enterprises: a typed client of the PledgeWatch API (``/api/v1``) over httpx.

    from pledgewatch_sdk import Client

    with Client("https://pledgewatch.example-bank.com", api_key="pwk_...") as pw:
        print(pw.limit("fac-grain").available)

Errors are :class:`ApiError` subclasses carrying the API's problem details; see
:mod:`pledgewatch_sdk.errors`. Answers are the models of :mod:`pledgewatch_sdk.models`."""

from pledgewatch_sdk.client import VERSION, Client, new_idempotency_key, paginate
from pledgewatch_sdk.errors import (
    ApiError,
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PledgeWatchError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
)
from pledgewatch_sdk.models import (
    Alert,
    Chain,
    Drawdown,
    Facility,
    FacilityLimit,
    Lot,
    Page,
    Payment,
    Programme,
    Receivable,
    Repayment,
    Shipment,
    Voucher,
    VoucherDetail,
)

__version__ = VERSION
__all__ = [
    "Alert", "ApiError", "BadRequest", "Chain", "Client", "Conflict", "Drawdown", "Facility",
    "FacilityLimit", "FieldError", "Forbidden", "InvalidRequest", "Lot", "NotFound", "Page",
    "PayloadTooLarge", "Payment", "PledgeWatchError", "Programme", "RateLimited", "Receivable",
    "Repayment", "ServerError", "ServiceUnavailable", "Shipment", "TransportError",
    "Unauthorized", "UnexpectedResponse", "Voucher", "VoucherDetail", "new_idempotency_key",
    "paginate",
]
