"""Trade proven by sensors, over the wire: simulated trucks and warehouses (firmware_sim.delivery)
publish over a real broker in compressed time, the real gateway stores their telemetry in a real
PostgreSQL, and :func:`lending.delivery.assess_delivery` reads it back.

One run plays two shipments at once: a truck drives from the seller's site into the buyer's
delivery geofence and stops there while the seller's load cell falls (against an executed release)
and the buyer's rises — ``verified``, with the evidence; and a truck that never leaves the seller's
site while no goods move — ``pending`` before the deadline, ``contradicted`` after it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from firmware_sim.delivery import DeliveryPlan, delivery_clock, delivery_specs, run_delivery
from lending.delivery import assess_delivery, gather_delivery_facts
from lending.domain.delivery import Shipment, reason_codes
from lending.domain.detectors import point_in_polygon
from lending.domain.model import ReleaseStatus
from lending.financing import sweep
from lending.operations import (
    LendingError,
    advance_release,
    insert_receivable,
    load_portfolio,
    request_release,
)
from lending.portfolio_file import PortfolioIn
from lending.trade import judge_shipment
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import register_devices
from tests.support import Stack, running_gateway, unique

pytestmark = pytest.mark.integration

SELLER_SITE = (31.2000, 121.4000)
BUYER_DOCK = (31.2500, 121.4700)
UNITS = 100
SELLER_UNITS = 800
BUYER_UNITS = 200
UNIT_KG = 25.0
STEP_S = 7.5  # simulated seconds between two readings of a device
RATE_HZ = 40.0  # readings a real second per device: 300 simulated seconds a real second


def square(center: tuple[float, float], half_deg: float = 0.005) -> list[tuple[float, float]]:
    lat, lon = center
    return [(lat - half_deg, lon - half_deg), (lat - half_deg, lon + half_deg),
            (lat + half_deg, lon + half_deg), (lat + half_deg, lon - half_deg)]


def lot(lot_id: str, facility: str, quantity: float, sensors: list[str],
        center: tuple[float, float] | None = None, vehicle: str | None = None) -> dict[str, Any]:
    return {"id": lot_id, "facility": facility, "commodity": "steel-coil",
            "declared_quantity": quantity, "unit_weight_kg": UNIT_KG,
            "registration_no": f"REG-{lot_id}", "sensors": sensors, "business_hours": (0, 24),
            "vehicle": vehicle, "geofence": square(center) if center else None}


def portfolio(tenant: str, ids: dict[str, str]) -> PortfolioIn:
    return PortfolioIn.model_validate({
        "commodities": [{"name": "steel-coil", "unit": "t", "unit_kg": 1000.0}],
        "borrowers": [
            {"id": "core", "name": "Core Steelworks", "tenant": tenant, "role": "core"},
            {"id": "sup", "name": "Tier-1 Supplier", "tenant": tenant, "role": "supplier",
             "core": "core"}],
        "facilities": [{"id": "fac-sup", "borrower": "sup", "line": 1e6},
                       {"id": "fac-core", "borrower": "core", "line": 1e6}],
        "lots": [
            # the real shipment: its truck carries a lot of its own (the tracker is bound to it)
            lot("seller-1", "fac-sup", SELLER_UNITS, [ids["wh-s1"]], SELLER_SITE),
            lot("buyer-1", "fac-core", BUYER_UNITS, [ids["wh-b1"]], BUYER_DOCK),
            lot("truck-1", "fac-sup", UNITS, [ids["veh-1"]], vehicle=ids["veh-1"]),
            # the fictitious one: the tracker's device id is the vehicle id, no lot on it
            lot("seller-2", "fac-sup", SELLER_UNITS, [ids["wh-s2"]], SELLER_SITE),
            lot("buyer-2", "fac-core", BUYER_UNITS, [ids["wh-b2"]], BUYER_DOCK),
        ],
    })


def test_a_delivery_is_verified_and_a_truck_that_never_leaves_is_contradicted(
        stack: Stack, tmp_path: Path) -> None:
    ids = {name: unique(name) for name in ("veh-1", "wh-s1", "wh-b1", "veh-2", "wh-s2", "wh-b2")}
    plan = DeliveryPlan(origin=SELLER_SITE, destination=BUYER_DOCK, units=UNITS)
    phantom = replace(plan, never_leaves=True)
    specs = (delivery_specs(stack.tenant, plan, truck=ids["veh-1"], seller=ids["wh-s1"],
                            buyer=ids["wh-b1"], seller_units=SELLER_UNITS,
                            buyer_units=BUYER_UNITS, unit_weight_kg=UNIT_KG, seed=1)
             + delivery_specs(stack.tenant, phantom, truck=ids["veh-2"], seller=ids["wh-s2"],
                              buyer=ids["wh-b2"], seller_units=SELLER_UNITS,
                              buyer_units=BUYER_UNITS, unit_weight_kg=UNIT_KG, seed=2))
    for spec in specs:
        stack.register(spec.device_id, kind=spec.kind)
    clock = delivery_clock(plan, speed=STEP_S * RATE_HZ)
    times = plan.timeline(clock)
    with psycopg.connect(stack.database_url) as conn:
        load_portfolio(conn, portfolio(stack.tenant, ids), times.start)
        request_release(conn, "rel-1", "seller-1", UNITS, times.start)
        advance_release(conn, "rel-1", ReleaseStatus.APPROVED, times.start + timedelta(minutes=1))
        advance_release(conn, "rel-1", ReleaseStatus.EXECUTED,
                        times.departure - timedelta(minutes=2))

    target = stack.broker.target
    with running_gateway(stack):
        stats = asyncio.run(run_delivery(specs, clock, host=target.host, port=target.port,
                                         state_dir=tmp_path, protocol=target.protocol,
                                         rate_hz=RATE_HZ))
    assert stats.published >= 6 * plan.span_s / STEP_S * 0.99, stats
    assert stats.confirmed == stats.published and stats.pending == 0, stats

    now = datetime.now(UTC)
    assert times.end <= now
    with psycopg.connect(stack.database_url) as conn:
        real = Shipment(ids["veh-1"], "seller-1", UNITS, "buyer-1", times.departure)
        verdict = assess_delivery(conn, real, now)
        facts = gather_delivery_facts(conn, real, now)

        fake = Shipment(ids["veh-2"], "seller-2", UNITS, "buyer-2", times.departure)
        waiting = assess_delivery(conn, fake, now)
        flagged = assess_delivery(conn, fake, now, deadline_hours=0.25)

        with pytest.raises(LendingError, match="no lot"):
            assess_delivery(conn, replace(real, buyer_lot_id="nowhere"), now)
        # Another tenant's truck that really made the trip proves nothing for these parties.
        other = unique("trk")
        register_devices(conn, [DeviceInfo(other, unique("other"), "vehicle")])
        conn.execute("INSERT INTO readings SELECT time, %s, metric, value, boot, seq, received_at"
                     " FROM readings WHERE device_id = %s", (other, ids["veh-1"]))
        conn.commit()
        borrowed = assess_delivery(conn, replace(real, vehicle=other), now)

    assert facts.devices == (ids["veh-1"],)
    assert len(facts.track) >= plan.span_s / STEP_S * 0.9
    assert verdict.status == "verified", (verdict.reasons, verdict.evidence)
    ev = verdict.evidence
    arrival = ev["arrival"]
    entered = datetime.fromisoformat(arrival["entered_at"])
    assert times.departure < entered <= times.arrival + timedelta(seconds=2 * STEP_S)
    assert point_in_polygon(arrival["lat"], arrival["lon"], square(BUYER_DOCK))
    assert arrival["stop_minutes"] >= 5.0
    assert ev["departure"] is not None
    assert ev["matched_releases"] == ["rel-1"] and ev["released_quantity"] == UNITS
    assert ev["seller"]["drop"] == pytest.approx(UNITS, rel=0.05)
    assert ev["buyer"]["rise"] == pytest.approx(UNITS, rel=0.05)
    assert ev["tolerances"]["quantity_share"] == 0.05

    assert waiting.status == "pending", waiting.reasons
    assert {"not_arrived", "no_executed_release"} <= set(reason_codes(waiting))
    assert flagged.status == "contradicted", (flagged.reasons, flagged.evidence)
    assert {"never_left", "goods_never_moved"} <= set(reason_codes(flagged))
    assert flagged.evidence["never_left"] is True
    assert flagged.evidence["seller"]["drop"] == pytest.approx(0.0, abs=UNITS * 0.05)

    assert borrowed.status == "pending" and "no_track" in reason_codes(borrowed)

    # The financing sweep judges receivables that name these shipments: the real one is verified
    # by the sensors alone, a second receivable citing the same release is not, and the phantom
    # is flagged as a possible fictitious trade.
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for receivable_id, shipment in (("ar-1-real", real), ("ar-2-again", real),
                                        ("ar-3-phantom", fake)):
            insert_receivable(conn, receivable_id, "fac-sup", "Core Steelworks", 2500.0,
                              now + timedelta(days=30), verified=False, posted_by="sup ERP",
                              debtor_id="core", shipment=stored(shipment))
        judged = sweep(conn, now, partial(judge_shipment, deadline_hours=0.25))
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT receivable_id, trade_status, verified, verified_by, trade_evidence"
            " FROM receivables ORDER BY receivable_id").fetchall()}
        flags = conn.execute("SELECT facility_id, severity, evidence->>'receivable_id' FROM alerts"
                             " WHERE type = 'fictitious_trade'").fetchall()
    assert judged.trades == 2
    assert rows["ar-1-real"][:3] == ("verified", True, "telemetry")
    assert rows["ar-1-real"][3]["matched_releases"] == ["rel-1"]
    assert rows["ar-2-again"][:3] == ("pending", False, None)
    assert any(r.startswith("release_reused") for r in rows["ar-2-again"][3]["reasons"])
    assert rows["ar-3-phantom"][:2] == ("contradicted", False)
    assert flags == [("fac-sup", "critical", "ar-3-phantom")]


def stored(shipment: Shipment) -> dict[str, Any]:
    """A shipment as the API stores it (JSON)."""
    return {"vehicle": shipment.vehicle, "seller_lot_id": shipment.seller_lot_id,
            "quantity": shipment.quantity, "buyer_lot_id": shipment.buyer_lot_id,
            "shipped_at": shipment.shipped_at.isoformat()}
