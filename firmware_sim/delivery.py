"""A delivery told by three devices: the shipment behind a receivable, as sensors see it.

A :class:`DeliveryPlan` is one shipment: the seller's site (``origin``), the buyer's dock inside its
delivery geofence (``destination``), optional ``via`` points, the units shipped. Three simulated
devices play it, each with the delivery scenario (:func:`delivery_scenario`) in its part:

- the **truck** (a vehicle tracker) waits parked at the seller's site, leaves at ``depart_s``,
  drives the path at ``cruise_kmh`` (the reported speed wobbles a little around it; the position
  follows the nominal speed), arrives, and stays parked at the buyer's dock with the speed at 0
  and GPS jitter of a few metres;
- the **seller's warehouse** (load cell + RFID) loses the shipped units over the ``load_s`` before
  the departure, its door open meanwhile;
- the **buyer's warehouse** gains them over ``unload_s``, starting ``unload_delay_s`` after the
  truck's arrival.

With ``never_leaves`` (the fictitious trade) nothing moves: the truck stays parked at the seller's
site and both warehouses keep their goods.

The devices publish through the normal contract (:func:`firmware_sim.fleet.run_fleet`: QoS 1,
boot + sequence numbers, outbox, store confirmations). :func:`run_delivery` runs them in compressed
time: readings are stamped by the simulator, ``speed`` simulated seconds per real second, and the
story ends at the real time it finishes, so no reading is ever dated in the future
(:func:`delivery_clock`). The plan's :meth:`DeliveryPlan.timeline` tells when the truck left and
arrived, to date the release order and the receivable's shipment::

    plan = DeliveryPlan(origin=(31.20, 121.40), destination=(31.25, 121.47), units=100)
    specs = delivery_specs("demo", plan, truck="veh-dlv", seller="wh-seller", buyer="wh-buyer")
    clock = delivery_clock(plan, speed=300.0)
    stats = await run_delivery(specs, clock, host=..., port=..., state_dir=...)
    times = plan.timeline(clock)  # times.departure: shipped_at; times.arrival
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from firmware_sim.device_models import DeviceSpec, LatLon, Readings, clip, haversine_km
from firmware_sim.fleet import CONFIRM_TIMEOUT_S, FleetStats, Password, SimClock, run_fleet
from firmware_sim.scenarios import Normal, Scenario, WarehouseScenario, ramp, shift_count, shift_weight

Role = Literal["truck", "seller", "buyer"]
ROLE_KEY = "delivery_role"
PLAN_KEY = "delivery"
PARKED_JITTER_M = 3.0  # GPS noise of a parked tracker (1 σ, metres)
DRIVING_JITTER_M = 5.0
SPEED_WOBBLE_KMH = 3.0  # the reported speed's noise around the cruise speed
METRES_PER_DEG_LAT = 111_320.0
BUYER_SETTLE_S = 900.0  # the story goes on this long after unloading (the levels settle)


def _point(raw: Any, name: str) -> LatLon:
    try:
        lat, lon = float(raw[0]), float(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError(f"delivery {name} must be a (lat, lon) pair, got {raw!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"delivery {name} must be a finite (lat, lon) position, got {raw!r}")
    return (lat, lon)


@dataclass(frozen=True, slots=True)
class Timeline:
    """When the story's events happen, as device times."""

    start: datetime
    departure: datetime  # the truck leaves the seller's site (the shipment's time)
    arrival: datetime  # ... reaches the buyer's dock
    unloaded: datetime  # the buyer's lot has all the goods
    end: datetime


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """One shipment from the seller's site to the buyer's dock; times in simulated seconds from
    the start of the story."""

    origin: LatLon
    destination: LatLon
    units: int = 100
    via: tuple[LatLon, ...] = ()
    depart_s: float = 600.0
    cruise_kmh: float = 50.0
    load_s: float = 300.0
    unload_delay_s: float = 60.0
    unload_s: float = 300.0
    dwell_s: float = 1200.0  # the truck stays parked at the buyer's at least this long
    never_leaves: bool = False
    legs_km: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", _point(self.origin, "origin"))
        object.__setattr__(self, "destination", _point(self.destination, "destination"))
        object.__setattr__(self, "via", tuple(_point(p, "via point") for p in self.via))
        if not (isinstance(self.units, int) and self.units > 0):
            raise ValueError(f"delivery units must be a whole number > 0, got {self.units!r}")
        if not (math.isfinite(self.cruise_kmh) and 5.0 <= self.cruise_kmh <= 120.0):
            raise ValueError(f"delivery cruise_kmh must be 5-120 km/h, got {self.cruise_kmh!r}")
        for name in ("depart_s", "load_s", "unload_delay_s", "unload_s", "dwell_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"delivery {name} must be a finite number >= 0, got {value!r}")
        if self.load_s > self.depart_s:
            raise ValueError("delivery load_s must not be longer than depart_s (loading starts "
                             "at the story's start at the earliest)")
        points = self.path
        object.__setattr__(self, "legs_km", tuple(
            haversine_km(a, b) for a, b in itertools.pairwise(points)))

    @property
    def path(self) -> tuple[LatLon, ...]:
        return (self.origin, *self.via, self.destination)

    @property
    def distance_km(self) -> float:
        return sum(self.legs_km)

    @property
    def arrival_s(self) -> float:
        return self.depart_s + self.distance_km / self.cruise_kmh * 3600.0

    @property
    def unloaded_s(self) -> float:
        return self.arrival_s + self.unload_delay_s + self.unload_s

    @property
    def span_s(self) -> float:
        """How long the story lasts: the truck's stay, and the buyer's levels settled."""
        return max(self.arrival_s + self.dwell_s, self.unloaded_s + BUYER_SETTLE_S)

    def driving(self, t_s: float) -> bool:
        return not self.never_leaves and self.depart_s <= t_s < self.arrival_s

    def position(self, t_s: float) -> LatLon:
        """Where the truck is at ``t_s`` (no jitter)."""
        if self.never_leaves or t_s <= self.depart_s:
            return self.origin
        remaining = (t_s - self.depart_s) * self.cruise_kmh / 3600.0
        points = self.path
        for i, leg in enumerate(self.legs_km):
            if remaining <= leg and leg > 0:
                a, b = points[i], points[i + 1]
                f = remaining / leg
                return (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]))
            remaining -= leg
        return self.destination

    def loaded_units(self, t_s: float) -> int:
        """Units taken out of the seller's lot by ``t_s``."""
        if self.never_leaves:
            return 0
        return round(self.units * ramp(t_s, self.depart_s - self.load_s, self.load_s))

    def unloaded_units(self, t_s: float) -> int:
        """Units put into the buyer's lot by ``t_s``."""
        if self.never_leaves:
            return 0
        return round(self.units * ramp(t_s, self.arrival_s + self.unload_delay_s, self.unload_s))

    def timeline(self, clock: SimClock) -> Timeline:
        def at(t_s: float) -> datetime:
            return datetime.fromtimestamp(clock.start_ms / 1000.0 + t_s, UTC)

        return Timeline(at(0.0), at(self.depart_s), at(self.arrival_s), at(self.unloaded_s),
                        at(self.span_s))

    def parameters(self) -> dict[str, Any]:
        """The plan as JSON-friendly device parameters (:meth:`from_parameters` reads them)."""
        data = asdict(self)
        data.pop("legs_km")
        data["origin"], data["destination"] = list(self.origin), list(self.destination)
        data["via"] = [list(p) for p in self.via]
        return data

    @classmethod
    def from_parameters(cls, data: Mapping[str, Any]) -> DeliveryPlan:
        values = dict(data)
        values["via"] = tuple(values.get("via", ()))
        return cls(**values)


def _plan(spec: DeviceSpec) -> DeliveryPlan:
    raw = spec.parameters.get(PLAN_KEY)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{spec.device_id}: the delivery scenario needs a {PLAN_KEY!r} plan")
    return DeliveryPlan.from_parameters(raw)


class TruckOnDelivery(Scenario):
    """The truck: parked at the seller's, driving the path, parked at the buyer's dock."""

    name = "delivery"
    kinds = frozenset({"vehicle"})

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.plan = _plan(spec)

    def _jitter(self, metres: float, lat: float) -> LatLon:
        dy, dx = (float(v) * metres for v in self.rng.standard_normal(2))
        scale = max(0.01, math.cos(math.radians(lat)))
        return dy / METRES_PER_DEG_LAT, dx / (METRES_PER_DEG_LAT * scale)

    def change(self, t_s: float, readings: Readings) -> Readings:
        lat, lon = self.plan.position(t_s)
        driving = self.plan.driving(t_s)
        dlat, dlon = self._jitter(DRIVING_JITTER_M if driving else PARKED_JITTER_M, lat)
        readings["lat"] = round(clip("lat", lat + dlat), 6)
        readings["lon"] = round(clip("lon", lon + dlon), 6)
        speed = 0.0
        if driving:
            wobble = SPEED_WOBBLE_KMH * float(self.rng.standard_normal())
            speed = max(5.0, self.plan.cruise_kmh + wobble)
        readings["speed_kmh"] = round(clip("speed_kmh", speed), 1)
        return readings


class SellerLoading(WarehouseScenario):
    """The seller's lot: the shipped units leave over ``load_s`` before the departure."""

    name = "delivery"

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.plan = _plan(spec)

    def change(self, t_s: float, readings: Readings) -> Readings:
        moved = self.plan.loaded_units(t_s)
        shift_weight(readings, -moved * self.unit_weight_kg)
        shift_count(readings, -moved)
        plan = self.plan
        loading = not plan.never_leaves and plan.depart_s - plan.load_s <= t_s < plan.depart_s
        if loading and "door_open" in readings:
            readings["door_open"] = True
        return readings


class BuyerUnloading(WarehouseScenario):
    """The buyer's lot: the shipped units arrive over ``unload_s`` after the truck."""

    name = "delivery"

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.plan = _plan(spec)

    def change(self, t_s: float, readings: Readings) -> Readings:
        moved = self.plan.unloaded_units(t_s)
        shift_weight(readings, moved * self.unit_weight_kg)
        shift_count(readings, moved)
        start = self.plan.arrival_s + self.plan.unload_delay_s
        unloading = not self.plan.never_leaves and start <= t_s < start + self.plan.unload_s
        if unloading and "door_open" in readings:
            readings["door_open"] = True
        return readings


PARTS: dict[Role, type[Scenario]] = {
    "truck": TruckOnDelivery, "seller": SellerLoading, "buyer": BuyerUnloading,
}


def delivery_scenario(spec: DeviceSpec) -> Scenario:
    """The scenario of ``spec``'s part in its delivery (``parameters["delivery_role"]``); a device
    with no part trades normally. A function to pass as ``run_fleet(scenario=...)``."""
    role = spec.parameters.get(ROLE_KEY)
    if role is None:
        return Normal(spec)
    if role not in PARTS:
        raise ValueError(f"{spec.device_id}: unknown delivery role {role!r} "
                         f"(known: {', '.join(PARTS)})")
    return PARTS[role](spec)


def delivery_specs(tenant: str, plan: DeliveryPlan, *, truck: str, seller: str, buyer: str,
                   seller_units: int = 800, buyer_units: int = 200, unit_weight_kg: float = 25.0,
                   seed: int = 7) -> list[DeviceSpec]:
    """The three devices of ``plan``: the truck's tracker and the two warehouses' sensors (the
    seller's lot holds ``seller_units`` before the shipment, the buyer's ``buyer_units``)."""
    if seller_units < plan.units:
        raise ValueError(f"the seller's lot holds {seller_units} units; it cannot ship "
                         f"{plan.units}")
    shared = {PLAN_KEY: plan.parameters()}
    warehouse = {"unit_weight_kg": unit_weight_kg, "noise_kg": 2.0, "base_temp_c": 18.0,
                 "base_humidity_pct": 50.0}
    return [
        DeviceSpec(tenant, truck, "vehicle", seed, shared | {
            ROLE_KEY: "truck", "route": [list(plan.origin)], "cruise_kmh": plan.cruise_kmh,
            "setpoint_c": 15.0}),
        DeviceSpec(tenant, seller, "warehouse", seed + 1, shared | warehouse | {
            ROLE_KEY: "seller", "units": seller_units}),
        DeviceSpec(tenant, buyer, "warehouse", seed + 2, shared | warehouse | {
            ROLE_KEY: "buyer", "units": buyer_units}),
    ]


def square_fence(center: LatLon, half_side_m: float = 500.0) -> list[tuple[float, float]]:
    """A square geofence, (lat, lon) vertices, ``half_side_m`` either side of ``center``: the
    seller's site or the buyer's delivery fence for the lots of a delivery."""
    if not (math.isfinite(half_side_m) and half_side_m > 0):
        raise ValueError(f"a fence's half side must be > 0 metres, got {half_side_m!r}")
    lat, lon = _point(center, "fence centre")
    dlat = half_side_m / METRES_PER_DEG_LAT
    dlon = half_side_m / (METRES_PER_DEG_LAT * max(0.01, math.cos(math.radians(lat))))
    return [(round(lat - dlat, 6), round(lon - dlon, 6)), (round(lat - dlat, 6), round(lon + dlon, 6)),
            (round(lat + dlat, 6), round(lon + dlon, 6)), (round(lat + dlat, 6), round(lon - dlon, 6))]


def delivery_clock(plan: DeliveryPlan, *, speed: float = 1.0, now: datetime | None = None
                   ) -> SimClock:
    """A clock for ``plan`` run ``speed`` times faster than real time, started as far in the
    past as makes the story end when the run does: no reading is dated in the future."""
    if not (math.isfinite(speed) and speed >= 1.0):
        raise ValueError(f"a delivery runs at real time or faster (speed >= 1), got {speed!r}")
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=plan.span_s * (1.0 - 1.0 / speed))
    return SimClock(int(start.timestamp() * 1000), speed, plan.span_s)


async def run_delivery(specs: Sequence[DeviceSpec], clock: SimClock, *, host: str, port: int,
                       state_dir: Path, username: str | None = None, password: Password = None,
                       protocol: str = "3.1.1", rate_hz: float = 40.0,
                       stop: asyncio.Event | None = None, drain_timeout_s: float = 15.0,
                       confirm_timeout_s: float | None = CONFIRM_TIMEOUT_S) -> FleetStats:
    """Play the delivery of ``specs`` (from :func:`delivery_specs`) over MQTT on ``clock``:
    ``rate_hz`` messages a second per device, each ``clock.speed / rate_hz`` simulated seconds
    after the one before, until the story's end (or ``stop``). Returns the fleet's counters."""
    if clock.span_s is None:
        raise ValueError("a delivery clock needs a span (delivery_clock gives one)")
    bound_s = clock.span_s / clock.speed * 4 + 60.0  # a loaded machine lags; never forever
    return await run_fleet(
        specs, host=host, port=port, username=username, password=password, rate_hz=rate_hz,
        duration_s=bound_s, scenario=delivery_scenario, state_dir=state_dir, protocol=protocol,
        stop=stop, drain_timeout_s=drain_timeout_s, confirm_timeout_s=confirm_timeout_s,
        clock=clock)
