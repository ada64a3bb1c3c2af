"""The demo's delivery: a tier-1 supplier ships steel coil to the steelworks' dock by truck, and a
second "shipment" whose truck never leaves. Both are played by simulated devices over MQTT in
compressed time (:mod:`firmware_sim.delivery`); when the stories end the supplier invoices both on
the steelworks, naming the shipments. The financing sweep proves the first from telemetry (and the
steelworks confirms it: a voucher) and flags the second as a possible fictitious trade.

After the stories the six devices go offline (a truck and docks leaving the network), so their lots
show as offline from then on."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from firmware_sim.delivery import (
    DeliveryPlan,
    Timeline,
    delivery_clock,
    delivery_specs,
    run_delivery,
    square_fence,
)
from firmware_sim.device_models import DeviceSpec
from lending import financing
from lending.domain.model import ReleaseStatus
from lending.operations import advance_release, insert_receivable, load_portfolio, request_release
from lending.portfolio_file import PortfolioIn
from pledgewatch.demo_portfolio import CORE
from telemetry.contract.payload import DeviceInfo
from telemetry.queries import register_devices

log = logging.getLogger(__name__)

SELLER = "sup-ore-trading"
SELLER_SITE = (31.2000, 121.4000)
DOCK = (31.2500, 121.4700)
UNITS, SELLER_UNITS, DOCK_UNITS, UNIT_KG = 100, 800, 200, 25.0
SPEED = 120.0  # simulated seconds per real second: the hour-long story in about half a minute
STEP_S = 7.5  # simulated seconds between two readings of a device
DEADLINE_HOURS = 0.25  # the demo's stories are over when judged: a quarter hour is enough
CORE_FACILITY = f"fac-{CORE}"


@dataclass(frozen=True)
class Shipment:
    name: str  # "real" or "phantom"
    truck: str
    seller: str
    buyer: str
    plan: DeliveryPlan

    @property
    def seller_lot(self) -> str:
        return f"lot-{self.seller}"

    @property
    def buyer_lot(self) -> str:
        return f"lot-{self.buyer}"

    def specs(self, tenant: str, seed: int) -> list[DeviceSpec]:
        return delivery_specs(tenant, self.plan, truck=self.truck, seller=self.seller,
                              buyer=self.buyer, seller_units=SELLER_UNITS, buyer_units=DOCK_UNITS,
                              unit_weight_kg=UNIT_KG, seed=seed)


PLAN = DeliveryPlan(origin=SELLER_SITE, destination=DOCK, units=UNITS)
SHIPMENTS = (Shipment("real", "veh-dlv-01", "wh-dlv-ore", "wh-dlv-dock", PLAN),
             Shipment("phantom", "veh-dlv-02", "wh-dlv-ore2", "wh-dlv-dock2",
                      replace(PLAN, never_leaves=True)))


def _lot(lot_id: str, facility: str, units: int, device: str,
         fence: list[tuple[float, float]]) -> dict[str, Any]:
    return {"id": lot_id, "facility": facility, "commodity": "steel-coil",
            "declared_quantity": float(units), "unit_weight_kg": UNIT_KG,
            "registration_no": f"ZDW-2026-{device}", "sensors": [device],
            "site": "steelworks dock" if facility == CORE_FACILITY else "supplier yard",
            "geofence": fence, "business_hours": (0, 24)}


def prepare(conn: psycopg.Connection, tenant: str, now: datetime) -> list[DeviceSpec]:
    """Register the six devices and pledge their warehouses' lots: the suppliers' yards to the
    supplier's facility, the docks to a facility of the steelworks."""
    specs = [spec for i, s in enumerate(SHIPMENTS) for spec in s.specs(tenant, 11 + 10 * i)]
    register_devices(conn, [DeviceInfo(s.device_id, s.tenant, s.kind) for s in specs])
    lots = []
    for s in SHIPMENTS:
        lots.append(_lot(s.seller_lot, f"fac-{SELLER}", SELLER_UNITS, s.seller,
                         square_fence(SELLER_SITE)))
        lots.append(_lot(s.buyer_lot, CORE_FACILITY, DOCK_UNITS, s.buyer, square_fence(DOCK)))
    load_portfolio(conn, PortfolioIn.model_validate({
        "commodities": [{"name": "steel-coil", "unit": "t", "unit_kg": 1000.0,
                         "liquidation_days": 15, "humidity_pct": (0, 90)}],
        "borrowers": [{"id": CORE, "name": "Yangtze Steelworks Group", "tenant": tenant,
                       "role": "core"}],
        "facilities": [{"id": CORE_FACILITY, "borrower": CORE, "currency": "CNY",
                        "line": 2_000_000.0}],
        "lots": lots,
    }), now)
    return specs


def _book(conn: psycopg.Connection, times: Timeline) -> None:
    """The real shipment's goods leave against an executed release order."""
    release_id = f"rel-dlv-{int(times.start.timestamp())}"
    request_release(conn, release_id, SHIPMENTS[0].seller_lot, UNITS, times.start)
    advance_release(conn, release_id, ReleaseStatus.APPROVED, times.start + timedelta(minutes=1))
    advance_release(conn, release_id, ReleaseStatus.EXECUTED,
                    times.departure - timedelta(minutes=2))


def _invoice(conn: psycopg.Connection, times: Timeline, now: datetime) -> list[str]:
    ids = []
    for s in SHIPMENTS:
        receivable_id = f"ar-dlv-{s.name}-{int(times.start.timestamp())}"
        insert_receivable(
            conn, receivable_id, f"fac-{SELLER}", "Yangtze Steelworks Group", 95_000.0,
            now + timedelta(days=60), verified=False, posted_by=f"{SELLER} ERP", now=now,
            debtor_id=CORE, shipment={
                "vehicle": s.truck, "seller_lot_id": s.seller_lot, "quantity": float(UNITS),
                "buyer_lot_id": s.buyer_lot, "shipped_at": times.departure.isoformat()})
        ids.append(receivable_id)
    return ids


def _confirm_when_proven(conn: psycopg.Connection, receivable_id: str, wait_s: float) -> str:
    """Wait for the sweep's verdict; the steelworks confirms a proven delivery (a voucher)."""
    deadline = datetime.now(UTC) + timedelta(seconds=wait_s)
    while datetime.now(UTC) < deadline:
        row = conn.execute("SELECT trade_status FROM receivables WHERE receivable_id = %s",
                           (receivable_id,)).fetchone()
        status = row[0] if row else "none"
        if status == "verified":
            financing.confirm_receivable(conn, receivable_id, debtor_scope=CORE,
                                         by=f"{CORE} ERP", now=datetime.now(UTC))
            return "verified"
        if status == "contradicted":
            return status
        conn.execute("SELECT pg_sleep(1)")
    return "still pending"


async def play(database_url: str, specs: list[DeviceSpec], *, host: str, port: int,
               username: str | None, password: Any, protocol: str, state_dir: Path,
               stop: asyncio.Event, say: Any) -> None:
    """Run both stories, then invoice them and report the verdicts."""
    clock = delivery_clock(PLAN, speed=SPEED)
    times = PLAN.timeline(clock)
    with psycopg.connect(database_url, autocommit=True) as conn:
        await asyncio.to_thread(_book, conn, times)
    say(f"delivery: truck {SHIPMENTS[0].truck} carries {UNITS} coils to the steelworks' dock; "
        f"{SHIPMENTS[1].truck} stays in the yard (about {PLAN.span_s / SPEED:.0f}s)")
    stats = await run_delivery(specs, clock, host=host, port=port, username=username,
                               password=password, protocol=protocol, state_dir=state_dir,
                               rate_hz=SPEED / STEP_S, stop=stop)
    if stop.is_set():
        return
    with psycopg.connect(database_url, autocommit=True) as conn:
        real, phantom = _invoice(conn, times, datetime.now(UTC))
        say(f"delivery: stories told ({stats.published:,} messages); invoices {real} (the "
            f"delivery) and {phantom} (no delivery) posted on {CORE}")
        outcome = await asyncio.to_thread(_confirm_when_proven, conn, real, 60.0)
        flagged = await asyncio.to_thread(_confirm_when_proven, conn, phantom, 30.0)
    say(f"delivery: {real} {outcome} (proven by telemetry, confirmed by {CORE}: a voucher); "
        f"{phantom} {flagged} (a fictitious_trade alert)")
