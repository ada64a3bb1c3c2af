"""The demo portfolio: a core steelworks, its suppliers and distributors, and one pledged lot per
simulated warehouse or vehicle, sized from the fleet so the numbers on screen add up.

Commodities: steel coil, copper cathode and wheat in warehouses; frozen and chilled food in
reefer trucks (cold chain) with a geofenced corridor around each truck's route.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from firmware_sim.device_models import DeviceSpec
from firmware_sim.market import PriceTick, scenario_series
from lending.domain.model import PricePoint
from lending.portfolio_file import PortfolioIn

COMMODITIES: dict[str, dict[str, Any]] = {
    "steel-coil": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 15, "humidity_pct": (0, 90),
                   "price": 3_800.0},
    "copper-cathode": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 5, "price": 70_000.0},
    "wheat": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 20, "temp_c": (0, 32),
              "humidity_pct": (0, 85), "price": 2_800.0},
    "frozen-food": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 7, "temp_c": (-25, -12),
                    "price": 25_000.0},
    "chilled-food": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 4, "temp_c": (0, 8),
                     "price": 18_000.0},
    "ambient-goods": {"unit": "t", "unit_kg": 1000.0, "liquidation_days": 10, "temp_c": (5, 30),
                      "price": 9_000.0},
}
WAREHOUSE_COMMODITIES = ("steel-coil", "copper-cathode", "wheat")
REEFER_COMMODITY = {-18.0: "frozen-food", 4.0: "chilled-food", 15.0: "ambient-goods"}
CORE = "core-steelworks"
SUPPLIERS = ("sup-ore-trading", "sup-scrap-metals", "sup-grain-coop")
DISTRIBUTORS = ("dist-east-metals", "dist-coldchain-logistics")
TIGHT_FACILITY = "fac-sup-ore-trading"  # drawn close to its warning line: a price crash tips it
FENCE_MARGIN_DEG = 0.15


def price_points(ticks: Iterable[PriceTick], at: datetime | None = None) -> list[PricePoint]:
    """The simulator's price ticks as the lending domain's prices (all at ``at`` if given)."""
    return [PricePoint(t.commodity, t.time if at is None else at, t.price, t.currency) for t in ticks]


def _corridor(route: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    lats = [float(p[0]) for p in route]
    lons = [float(p[1]) for p in route]
    lo_lat, hi_lat = min(lats) - FENCE_MARGIN_DEG, max(lats) + FENCE_MARGIN_DEG
    lo_lon, hi_lon = min(lons) - FENCE_MARGIN_DEG, max(lons) + FENCE_MARGIN_DEG
    return [(lo_lat, lo_lon), (lo_lat, hi_lon), (hi_lat, hi_lon), (hi_lat, lo_lon)]


def _lot_for(spec: DeviceSpec, index: int) -> dict[str, Any] | None:
    p = spec.parameters
    if spec.kind == "warehouse":
        facility = f"fac-{SUPPLIERS[index % len(SUPPLIERS)]}"
        return {"id": f"lot-{spec.device_id}", "facility": facility,
                "commodity": WAREHOUSE_COMMODITIES[index % len(WAREHOUSE_COMMODITIES)],
                "declared_quantity": float(p.get("units", 800)),
                "unit_weight_kg": float(p.get("unit_weight_kg", 25.0)),
                "registration_no": f"ZDW-2026-{spec.device_id}", "sensors": [spec.device_id],
                "site": f"bonded warehouse, bay {spec.device_id}", "business_hours": (0, 24)}
    if spec.kind == "vehicle":
        facility = f"fac-{DISTRIBUTORS[index % len(DISTRIBUTORS)]}"
        commodity = REEFER_COMMODITY.get(float(p.get("setpoint_c", 4.0)), "chilled-food")
        return {"id": f"lot-{spec.device_id}", "facility": facility, "commodity": commodity,
                "declared_quantity": 20.0, "unit_weight_kg": 1000.0,
                "registration_no": f"ZDV-2026-{spec.device_id}", "sensors": [spec.device_id],
                "vehicle": spec.device_id, "geofence": _corridor(p.get("route", [])),
                "business_hours": (0, 24)}
    return None


def _value(lot: dict[str, Any]) -> float:
    quote = COMMODITIES[lot["commodity"]]["price"]
    return float(lot["declared_quantity"] * lot["unit_weight_kg"] / 1000.0 * quote)


def demo_portfolio(fleet: Sequence[DeviceSpec], now: datetime, tenant: str = "demo") -> PortfolioIn:
    """The demo portfolio for ``fleet``, with 60 days of steady prices up to ``now``."""
    lots = [lot for i, spec in enumerate(fleet) if (lot := _lot_for(spec, i)) is not None]
    borrowers = [{"id": CORE, "name": "Yangtze Steelworks Group", "tenant": tenant, "role": "core"}]
    borrowers += [{"id": s, "name": s.replace("-", " ").title(), "tenant": tenant,
                   "role": "supplier", "core": CORE} for s in SUPPLIERS]
    borrowers += [{"id": d, "name": d.replace("-", " ").title(), "tenant": tenant,
                   "role": "distributor", "core": CORE} for d in DISTRIBUTORS]
    facilities = []
    for borrower in (*SUPPLIERS, *DISTRIBUTORS):
        fid = f"fac-{borrower}"
        collateral = sum(_value(lot) for lot in lots if lot["facility"] == fid)
        drawn = 0.5 if fid == TIGHT_FACILITY else 0.35
        facilities.append({
            "id": fid, "borrower": borrower, "currency": "CNY",
            "line": round(max(collateral * 0.7, 1_000_000.0), -3),
            "outstanding": round(collateral * drawn, -3),
            "value_floor": round(collateral * 0.5, -3),
            "terms": {"advance_rate": 0.65, "warning_ltv": 0.7, "liquidation_ltv": 0.85,
                      "cure_period": 3 * 86_400.0},
        })
    commodities = [{"name": name, **{k: v for k, v in spec.items() if k != "price"}}
                   for name, spec in COMMODITIES.items()]
    prices = []
    for i, (name, spec) in enumerate(COMMODITIES.items()):
        series = scenario_series("steady", name, spec["price"], start=now - timedelta(days=60),
                                 points=61, step_s=86_400.0, seed=i)
        prices += [{"commodity": p.commodity, "time": p.time, "price": round(p.price, 2),
                    "currency": p.currency} for p in series]
    receivables = [{"id": "ar-east-metals-001", "facility": "fac-dist-east-metals",
                    "debtor": CORE, "amount": 400_000.0, "due": now + timedelta(days=45)}]
    return PortfolioIn.model_validate({
        "commodities": commodities, "borrowers": borrowers, "facilities": facilities,
        "lots": lots, "receivables": receivables, "prices": prices})
