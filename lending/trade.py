"""The trade behind a receivable, judged from telemetry: the shipment a receivable names (stored as
JSON by the API) is assessed by :func:`lending.delivery.assess_delivery`, in the shape the
financing sweep records (:func:`lending.financing.check_trades`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from lending.delivery import assess_delivery
from lending.domain.delivery import Shipment
from lending.domain.model import DomainError

DEADLINE_HOURS = 48.0


def shipment_of(raw: dict[str, Any]) -> Shipment:
    """A stored shipment as the domain's :class:`Shipment` (DomainError when it is not one)."""
    try:
        return Shipment(vehicle=str(raw["vehicle"]), seller_lot_id=str(raw["seller_lot_id"]),
                        quantity=float(raw["quantity"]), buyer_lot_id=str(raw["buyer_lot_id"]),
                        shipped_at=datetime.fromisoformat(str(raw["shipped_at"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise DomainError(f"not a shipment: {exc}") from None


def judge_shipment(conn: psycopg.Connection, receivable: dict[str, Any], now: datetime, *,
                   deadline_hours: float = DEADLINE_HOURS) -> dict[str, Any] | None:
    """{status, reasons, evidence} for a receivable's shipment; None when it names none.
    ``deadline_hours`` after shipping, a delivery the sensors do not show is contradicted."""
    if not receivable.get("shipment"):
        return None
    verdict = assess_delivery(conn, shipment_of(receivable["shipment"]), now,
                              deadline_hours=deadline_hours)
    status, reasons = verdict.status, list(verdict.reasons)
    used = [str(r) for r in verdict.evidence.get("matched_releases") or []]
    if status == "verified" and used:
        # one release proves one shipment: a second receivable citing it is not proven by it
        earlier = conn.execute(
            "SELECT receivable_id FROM receivables WHERE receivable_id <> %s AND trade_status ="
            " 'verified' AND trade_evidence -> 'matched_releases' ?| %s::text[] LIMIT 1",
            (receivable["receivable_id"], used)).fetchone()
        if earlier is not None:
            status = "pending"
            reasons = [f"release_reused: {', '.join(used)} already proves receivable {earlier[0]}"]
    return {"status": status, "reasons": reasons, "evidence": verdict.evidence}
