"""Pure device models (no I/O) and the deterministic fleet builder.

A model is stepped forward by ``dt_s`` simulated seconds and returns one readings dict whose
metric names and ranges come from :data:`telemetry.contract.catalogue.CATALOGUE`. All randomness comes
from a seeded :class:`numpy.random.Generator`, so a device with the same spec replays the same
series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from telemetry.contract.catalogue import CATALOGUE

DeviceKind = Literal["warehouse", "line", "vehicle"]
KINDS: tuple[DeviceKind, ...] = ("warehouse", "line", "vehicle")
ID_PREFIX: dict[DeviceKind, str] = {"warehouse": "wh", "line": "line", "vehicle": "veh"}
Reading = float | int | bool
Readings = dict[str, Reading]
LatLon = tuple[float, float]

DAY_S = 86_400.0
EARTH_RADIUS_KM = 6371.0
CITIES: tuple[LatLon, ...] = (
    (31.2304, 121.4737),  # Shanghai
    (22.5431, 114.0579),  # Shenzhen
    (39.3434, 117.3616),  # Tianjin
    (30.5928, 114.3055),  # Wuhan
    (29.5630, 106.5516),  # Chongqing
)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Who a simulated device is and how its model is parameterised."""

    tenant: str
    device_id: str
    kind: DeviceKind
    seed: int
    parameters: Mapping[str, Any] = field(default_factory=dict)


class DeviceModel(Protocol):
    def step(self, dt_s: float) -> Readings: ...


def clip(metric: str, value: float) -> float:
    """``value`` limited to the catalogue range of ``metric``."""
    spec = CATALOGUE[metric]
    return float(min(max(value, spec.low), spec.high))


def switch_prob(dt_s: float, mean_s: float) -> float:
    """Probability that a state with mean duration ``mean_s`` ends within ``dt_s``."""
    return 1.0 - math.exp(-dt_s / mean_s)


class OrnsteinUhlenbeck:
    """A mean-reverting random walk around 0 with stationary std ``sigma`` (exact steps)."""

    def __init__(self, rng: np.random.Generator, sigma: float, tau_s: float) -> None:
        self._rng = rng
        self.sigma = sigma
        self.tau_s = tau_s
        self.value = 0.0

    def step(self, dt_s: float) -> float:
        decay = math.exp(-dt_s / self.tau_s)
        shock = self.sigma * math.sqrt(1.0 - decay * decay) * float(self._rng.standard_normal())
        self.value = self.value * decay + shock
        return self.value


class Warehouse:
    """A pledged lot on load cells in a warehouse bay, with RFID, door, climate and camera."""

    def __init__(self, parameters: Mapping[str, Any], rng: np.random.Generator) -> None:
        self._rng = rng
        self.units = int(parameters.get("units", 800))
        self.unit_weight_kg = float(parameters.get("unit_weight_kg", 25.0))
        self.noise_kg = float(parameters.get("noise_kg", 2.0))
        self.base_temp_c = float(parameters.get("base_temp_c", 18.0))
        self.base_humidity_pct = float(parameters.get("base_humidity_pct", 55.0))
        self.nominal_v = float(parameters.get("nominal_v", 230.0))
        drift_kg = float(parameters.get("drift_kg", 0.0005 * self.units * self.unit_weight_kg))
        self._drift = OrnsteinUhlenbeck(rng, sigma=drift_kg, tau_s=6 * 3600.0)
        self._t_s = float(parameters.get("day_phase_s", 0.0))
        self._door_open = False

    def _door(self, dt_s: float) -> bool:
        mean_s = 180.0 if self._door_open else 4 * 3600.0
        if self._rng.random() < switch_prob(dt_s, mean_s):
            self._door_open = not self._door_open
        return self._door_open

    def _temp(self) -> float:
        cycle = 3.0 * math.sin(2 * math.pi * self._t_s / DAY_S)
        return self.base_temp_c + cycle + 0.1 * float(self._rng.standard_normal())

    def step(self, dt_s: float) -> Readings:
        self._t_s += dt_s
        true_kg = self.units * self.unit_weight_kg
        weight = true_kg + self._drift.step(dt_s) + self.noise_kg * self._rng.standard_normal()
        temp = self._temp()
        humidity = self.base_humidity_pct - 2.0 * (temp - self.base_temp_c)
        humidity += 0.5 * float(self._rng.standard_normal())
        return {
            "weight_kg": round(clip("weight_kg", float(weight)), 2),
            "rfid_count": self.units,
            "door_open": self._door(dt_s),
            "temp_c": round(clip("temp_c", temp), 2),
            "humidity_pct": round(clip("humidity_pct", humidity), 1),
            "tamper": False,
            "power_v": round(clip("power_v", self.nominal_v + self._rng.normal(0, 1.0)), 1),
            "camera_ok": True,
        }


class ProductionLine:
    """A production line whose output counter only moves forward while it runs."""

    def __init__(self, parameters: Mapping[str, Any], rng: np.random.Generator) -> None:
        self._rng = rng
        self.count = int(parameters.get("start_count", 0))
        self.items_per_s = float(parameters.get("items_per_s", 2.0))
        self.mean_run_s = float(parameters.get("mean_run_s", 3 * 3600.0))
        self.mean_stop_s = float(parameters.get("mean_stop_s", 15 * 60.0))
        self.nominal_v = float(parameters.get("nominal_v", 400.0))
        self.running = True

    def step(self, dt_s: float) -> Readings:
        mean_s = self.mean_run_s if self.running else self.mean_stop_s
        if self._rng.random() < switch_prob(dt_s, mean_s):
            self.running = not self.running
        if self.running:
            self.count += int(self._rng.poisson(self.items_per_s * dt_s))
        sag = 3.0 if self.running else 0.0
        volts = self.nominal_v - sag + float(self._rng.normal(0, 1.0))
        return {
            "line_count": int(clip("line_count", self.count)),
            "line_running": self.running,
            "power_v": round(clip("power_v", volts), 1),
        }


def haversine_km(a: LatLon, b: LatLon) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2
    h += math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class Route:
    """A closed loop through waypoints; a position is a distance (km) along it."""

    def __init__(self, waypoints: Sequence[Sequence[float]]) -> None:
        points = [(float(p[0]), float(p[1])) for p in waypoints] or [CITIES[0]]
        self.points: list[LatLon] = points
        nxt = points[1:] + points[:1]
        self.legs_km = [haversine_km(a, b) for a, b in zip(points, nxt, strict=True)]
        self.length_km = sum(self.legs_km)

    def locate(self, distance_km: float) -> LatLon:
        if self.length_km <= 0:
            return self.points[0]
        remaining = distance_km % self.length_km
        for i, leg in enumerate(self.legs_km):
            if remaining <= leg and leg > 0:
                a, b = self.points[i], self.points[(i + 1) % len(self.points)]
                f = remaining / leg
                return (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]))
            remaining -= leg
        return self.points[0]


class Vehicle:
    """A truck with a reefer container driving a loop of waypoints, stopping now and then."""

    def __init__(self, parameters: Mapping[str, Any], rng: np.random.Generator) -> None:
        self._rng = rng
        self.route = Route(parameters.get("route", [CITIES[0]]))
        self.cruise_kmh = float(parameters.get("cruise_kmh", 60.0))
        self.setpoint_c = float(parameters.get("setpoint_c", 4.0))
        self.mean_drive_s = float(parameters.get("mean_drive_s", 20 * 60.0))
        self.mean_stop_s = float(parameters.get("mean_stop_s", 2 * 60.0))
        self._speed_noise = OrnsteinUhlenbeck(rng, sigma=8.0, tau_s=60.0)
        self._temp_noise = OrnsteinUhlenbeck(rng, sigma=0.4, tau_s=600.0)
        self.distance_km = 0.0
        self.driving = True

    def _speed(self, dt_s: float) -> float:
        mean_s = self.mean_drive_s if self.driving else self.mean_stop_s
        if self._rng.random() < switch_prob(dt_s, mean_s):
            self.driving = not self.driving
        noise = self._speed_noise.step(dt_s)
        if not self.driving:
            return 0.0
        return min(max(self.cruise_kmh + noise, 5.0), 120.0)

    def step(self, dt_s: float) -> Readings:
        speed = self._speed(dt_s)
        self.distance_km += speed * dt_s / 3600.0
        lat, lon = self.route.locate(self.distance_km)
        return {
            "lat": round(clip("lat", lat), 6),
            "lon": round(clip("lon", lon), 6),
            "speed_kmh": round(clip("speed_kmh", speed), 1),
            "tamper": False,
            "temp_c": round(clip("temp_c", self.setpoint_c + self._temp_noise.step(dt_s)), 2),
        }


ModelFactory = Callable[[Mapping[str, Any], np.random.Generator], DeviceModel]
MODELS: dict[DeviceKind, ModelFactory] = {
    "warehouse": Warehouse,
    "line": ProductionLine,
    "vehicle": Vehicle,
}


def build_model(spec: DeviceSpec) -> DeviceModel:
    """The model of ``spec``, seeded from ``spec.seed``."""
    return MODELS[spec.kind](spec.parameters, np.random.default_rng(spec.seed))


def fleet_mix(n: int) -> dict[DeviceKind, int]:
    """How many devices of each kind a fleet of ``n`` has: ~60 % / 20 % / 20 %."""
    if n < 0:
        raise ValueError("fleet size must be >= 0")
    lines = int(n * 0.2 + 0.5)
    vehicles = int(n * 0.2 + 0.5)
    return {"warehouse": n - lines - vehicles, "line": lines, "vehicle": vehicles}


def device_seed(fleet_seed: int, kind: DeviceKind, index: int) -> int:
    """A per-device seed that does not depend on the fleet size."""
    entropy = [fleet_seed, KINDS.index(kind), index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _warehouse_parameters(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "units": int(rng.integers(100, 2000)),
        "unit_weight_kg": float(rng.choice([20.0, 25.0, 50.0, 500.0, 1000.0])),
        "noise_kg": 2.0,
        "base_temp_c": round(float(rng.uniform(10.0, 25.0)), 1),
        "base_humidity_pct": round(float(rng.uniform(40.0, 70.0)), 1),
        "day_phase_s": round(float(rng.uniform(0.0, DAY_S)), 1),
    }


def _line_parameters(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "start_count": int(rng.integers(0, 1_000_000)),
        "items_per_s": round(float(rng.uniform(0.5, 5.0)), 2),
    }


def _vehicle_parameters(rng: np.random.Generator) -> dict[str, Any]:
    base = CITIES[int(rng.integers(len(CITIES)))]
    stops = int(rng.integers(3, 7))
    offsets = rng.uniform(-0.3, 0.3, size=(stops, 2))
    route = [[round(base[0] + dy, 5), round(base[1] + dx, 5)] for dy, dx in offsets]
    return {
        "route": route,
        "cruise_kmh": round(float(rng.uniform(40.0, 80.0)), 1),
        "setpoint_c": float(rng.choice([-18.0, 4.0, 15.0])),
    }


PARAMETERS: dict[DeviceKind, Callable[[np.random.Generator], dict[str, Any]]] = {
    "warehouse": _warehouse_parameters,
    "line": _line_parameters,
    "vehicle": _vehicle_parameters,
}


def make_device(tenant: str, kind: DeviceKind, index: int, fleet_seed: int) -> DeviceSpec:
    seed = device_seed(fleet_seed, kind, index)
    parameters = PARAMETERS[kind](np.random.default_rng([seed, 1]))
    device_id = f"{ID_PREFIX[kind]}-{index:04d}"
    return DeviceSpec(tenant, device_id, kind, seed, parameters)


def make_fleet(n: int, tenant: str = "demo", seed: int = 7) -> list[DeviceSpec]:
    """``n`` devices (warehouses, then lines, then vehicles), ids like ``wh-0001``."""
    return [
        make_device(tenant, kind, index, seed)
        for kind, count in fleet_mix(n).items()
        for index in range(1, count + 1)
    ]
