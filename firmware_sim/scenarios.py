"""Scenarios: what happens to the goods, told by modifying a device's readings step by step.

One scenario instance is made per device (so it may keep per-device state, e.g. how much has
been stolen so far) and is asked to transform every readings dict the device model produces.
A scenario only changes devices of the kinds it concerns; readings of any other device pass
through unchanged. Every value it writes stays inside the catalogue range of its metric.
Add a scenario by subclassing :class:`Scenario` and registering it in :data:`SCENARIOS`.

Scenarios (names in :data:`SCENARIOS`):

``normal``
    Normal trading: sensors report what the models say.
``theft`` (warehouses)
    Goods leave without a release: from ``incident_at_s`` a fraction ``theft_fraction`` of the
    units is removed linearly over ``theft_duration_s``; the door reads open meanwhile, then
    weight and RFID count stay at the reduced level.
``release`` (warehouses)
    A legitimate redemption, physically the same as a theft: ``release_fraction`` of the units
    leave over ``release_duration_s`` with the door open. (Only a release order tells them apart.)
``leak`` (warehouses)
    Slow loss of weight only, RFID count unchanged (grain leaking from sacks): the weight falls
    by ``leak_rate_per_s`` of the lot's true weight per simulated second, at most
    ``leak_max_fraction`` of it; the door reads closed from the incident on.
``tamper`` (warehouses)
    Load cell unplugged, then flat-lined: for ``tamper_unplugged_s`` the tamper switch is set
    and ``power_v`` reads ``tamper_power_v``; from the incident on ``weight_kg`` repeats exactly
    the last value read before it, while ``rfid_count`` keeps reporting the truth.
``swap`` (warehouses)
    Goods swapped for heavier, cheaper ones: the weight stays as the model reports, the RFID
    count falls by ``swap_fraction`` of the units at ``incident_at_s``.
``geofence`` (vehicles)
    The vehicle leaves its corridor: lat/lon move away from the route position in a fixed
    direction (``geofence_bearing_deg``, drawn from the device seed when absent) at
    ``geofence_speed_deg_per_s`` up to ``geofence_max_offset_deg``; the reported speed is the
    model's.
``coldchain`` (warehouses and vehicles)
    Temperature excursion: ``temp_c`` rises by ``coldchain_excursion_c`` over
    ``coldchain_ramp_s``, stays there for ``coldchain_duration_s``, then falls back over
    ``coldchain_ramp_s``.

Parameters come from ``DeviceSpec.parameters`` (defaults in brackets):

- ``incident_at_s`` [5.0]: simulated seconds after start when the incident begins (all but
  ``normal``); ``t_s`` as passed to :meth:`Scenario.apply` is compared with it.
- ``units`` [800], ``unit_weight_kg`` [25.0]: the lot's true units and unit weight, the same
  keys and defaults as :class:`firmware_sim.device_models.Warehouse`.
- ``theft_fraction`` [0.3], ``theft_duration_s`` [3.0]
- ``release_fraction`` [0.25], ``release_duration_s`` [3.0]
- ``leak_rate_per_s`` [0.01], ``leak_max_fraction`` [0.4]
- ``tamper_unplugged_s`` [2.0], ``tamper_power_v`` [5.0]
- ``swap_fraction`` [0.3]
- ``geofence_speed_deg_per_s`` [0.02], ``geofence_max_offset_deg`` [1.0],
  ``geofence_bearing_deg`` [seeded uniform in [0, 360)]
- ``coldchain_excursion_c`` [12.0], ``coldchain_duration_s`` [60.0], ``coldchain_ramp_s`` [3.0]

A parameter that is not a finite number in its allowed range raises ``ValueError`` naming it
when the scenario is made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from firmware_sim.device_models import DeviceKind, DeviceSpec, Readings, clip

WAREHOUSE: frozenset[DeviceKind] = frozenset({"warehouse"})
VEHICLE: frozenset[DeviceKind] = frozenset({"vehicle"})


def float_param(
    parameters: Mapping[str, Any],
    name: str,
    default: float,
    low: float = -math.inf,
    high: float = math.inf,
) -> float:
    """``parameters[name]`` (or ``default``) as a finite float in ``[low, high]``, else ``ValueError``."""
    raw = parameters.get(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"scenario parameter {name!r} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"scenario parameter {name!r} must be finite in [{low}, {high}], got {raw!r}")
    return value


def ramp(t_s: float, start_s: float, duration_s: float) -> float:
    """0 before ``start_s``, rising linearly to 1 over ``duration_s``, 1 afterwards."""
    if t_s < start_s:
        return 0.0
    if duration_s <= 0:
        return 1.0
    return min(1.0, (t_s - start_s) / duration_s)


def set_weight(readings: Readings, weight_kg: float) -> None:
    """Write ``weight_kg`` (clipped, rounded like the model) when the device reports weight."""
    if "weight_kg" in readings:
        readings["weight_kg"] = round(clip("weight_kg", weight_kg), 2)


def shift_weight(readings: Readings, delta_kg: float) -> None:
    """Add ``delta_kg`` to the reported weight, if any."""
    if "weight_kg" in readings:
        set_weight(readings, float(readings["weight_kg"]) + delta_kg)


def shift_count(readings: Readings, delta_units: int) -> None:
    """Add ``delta_units`` to the reported RFID count, if any (kept a non-negative int)."""
    if "rfid_count" in readings:
        readings["rfid_count"] = int(clip("rfid_count", int(readings["rfid_count"]) + delta_units))


class Scenario:
    """Base scenario: sees every reading of one device; the base changes nothing.

    Subclasses name the device ``kinds`` they concern and override :meth:`change`, which gets a
    copy of the readings of those devices only.
    """

    name: ClassVar[str] = "base"
    kinds: ClassVar[frozenset[DeviceKind]] = frozenset()

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, 2])
        self.incident_at_s = float_param(spec.parameters, "incident_at_s", 5.0, low=0.0)

    def concerns(self) -> bool:
        """Whether this scenario changes the readings of its device."""
        return self.spec.kind in self.kinds

    def apply(self, step: int, t_s: float, readings: Readings) -> Readings:
        """The readings of ``step`` (``t_s`` simulated seconds since start), possibly changed."""
        if not self.concerns():
            return readings
        return self.change(t_s, dict(readings))

    def change(self, t_s: float, readings: Readings) -> Readings:
        """Change (a copy of) the readings of a concerned device at ``t_s``."""
        return readings


class Normal(Scenario):
    """Normal trading: sensors report what the models say."""

    name = "normal"


class WarehouseScenario(Scenario):
    """A scenario on a pledged lot: knows the lot's true units and unit weight."""

    kinds = WAREHOUSE

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.units = int(float_param(spec.parameters, "units", 800, low=0.0))
        self.unit_weight_kg = float_param(spec.parameters, "unit_weight_kg", 25.0, low=0.0)

    @property
    def true_weight_kg(self) -> float:
        """The lot's true weight before the incident."""
        return self.units * self.unit_weight_kg


class Removal(WarehouseScenario):
    """Units leave through the door: ``<prefix>_fraction`` of them over ``<prefix>_duration_s``."""

    prefix: ClassVar[str] = ""
    default_fraction: ClassVar[float] = 0.0

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        p = spec.parameters
        self.fraction = float_param(p, f"{self.prefix}_fraction", self.default_fraction, 0.0, 1.0)
        self.duration_s = float_param(p, f"{self.prefix}_duration_s", 3.0, low=0.0)
        self._previous_t_s = -math.inf

    @property
    def end_s(self) -> float:
        """When the last unit has left."""
        return self.incident_at_s + self.duration_s

    def removed_units(self, t_s: float) -> int:
        """How many units have left by ``t_s``."""
        return round(self.fraction * self.units * ramp(t_s, self.incident_at_s, self.duration_s))

    def door_open(self, t_s: float) -> bool:
        """Whether the door reads open: while units leave, and on the first sample of the incident.

        The first sample at or after ``incident_at_s`` always sees the door open, so a removal
        that fell entirely between two coarse samples still shows it.
        """
        started = t_s >= self.incident_at_s
        return started and (t_s < self.end_s or self._previous_t_s < self.incident_at_s)

    def change(self, t_s: float, readings: Readings) -> Readings:
        removed = self.removed_units(t_s)
        shift_weight(readings, -removed * self.unit_weight_kg)
        shift_count(readings, -removed)
        if self.door_open(t_s) and "door_open" in readings:
            readings["door_open"] = True
        self._previous_t_s = t_s
        return readings


class Theft(Removal):
    """Goods leave without a release order."""

    name = "theft"
    prefix = "theft"
    default_fraction = 0.3


class Release(Removal):
    """A legitimate redemption: physically the same as a theft, but against a release order."""

    name = "release"
    prefix = "release"
    default_fraction = 0.25


class Leak(WarehouseScenario):
    """Slow loss of weight only (grain leaking from sacks): RFID count unchanged, door closed."""

    name = "leak"

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.rate_per_s = float_param(spec.parameters, "leak_rate_per_s", 0.01, low=0.0)
        self.max_fraction = float_param(spec.parameters, "leak_max_fraction", 0.4, 0.0, 1.0)

    def lost_fraction(self, t_s: float) -> float:
        """The fraction of the true weight lost by ``t_s``."""
        elapsed = max(0.0, t_s - self.incident_at_s)
        return min(self.rate_per_s * elapsed, self.max_fraction)

    def change(self, t_s: float, readings: Readings) -> Readings:
        if t_s < self.incident_at_s:
            return readings
        shift_weight(readings, -self.lost_fraction(t_s) * self.true_weight_kg)
        if "door_open" in readings:
            readings["door_open"] = False
        return readings


class Tamper(WarehouseScenario):
    """Load cell unplugged (tamper switch, power loss), then its weight flat-lines."""

    name = "tamper"

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.unplugged_s = float_param(spec.parameters, "tamper_unplugged_s", 2.0, low=0.0)
        self.power_v = clip("power_v", float_param(spec.parameters, "tamper_power_v", 5.0))
        self._frozen_kg: float | None = None

    def unplugged(self, t_s: float) -> bool:
        """Whether the load cell is unplugged at ``t_s``."""
        return self.incident_at_s <= t_s < self.incident_at_s + self.unplugged_s

    def change(self, t_s: float, readings: Readings) -> Readings:
        if "weight_kg" not in readings:
            return readings
        if t_s < self.incident_at_s or self._frozen_kg is None:
            self._frozen_kg = float(readings["weight_kg"])
        if t_s < self.incident_at_s:
            return readings
        readings["weight_kg"] = self._frozen_kg
        if self.unplugged(t_s):
            readings["tamper"] = True
            if "power_v" in readings:
                readings["power_v"] = self.power_v
        return readings


class Swap(WarehouseScenario):
    """Goods swapped for heavier, cheaper ones: same weight, fewer tagged items."""

    name = "swap"

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        self.fraction = float_param(spec.parameters, "swap_fraction", 0.3, 0.0, 1.0)

    def change(self, t_s: float, readings: Readings) -> Readings:
        if t_s >= self.incident_at_s:
            shift_count(readings, -round(self.fraction * self.units))
        return readings


class Geofence(Scenario):
    """The vehicle leaves its corridor, drifting steadily away from its route position."""

    name = "geofence"
    kinds = VEHICLE

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        p = spec.parameters
        self.speed_deg_per_s = float_param(p, "geofence_speed_deg_per_s", 0.02, low=0.0)
        self.max_offset_deg = float_param(p, "geofence_max_offset_deg", 1.0, low=0.0)
        bearing = float_param(p, "geofence_bearing_deg", float(self.rng.uniform(0.0, 360.0)))
        self.bearing_rad = math.radians(bearing)

    def offset_deg(self, t_s: float) -> float:
        """How far (degrees) the vehicle is off its route position at ``t_s``."""
        elapsed = max(0.0, t_s - self.incident_at_s)
        return min(self.speed_deg_per_s * elapsed, self.max_offset_deg)

    def change(self, t_s: float, readings: Readings) -> Readings:
        offset = self.offset_deg(t_s)
        if offset == 0.0:
            return readings
        if "lat" in readings:
            lat = float(readings["lat"]) + offset * math.cos(self.bearing_rad)
            readings["lat"] = round(clip("lat", lat), 6)
        if "lon" in readings:
            lon = float(readings["lon"]) + offset * math.sin(self.bearing_rad)
            readings["lon"] = round(clip("lon", lon), 6)
        return readings


class Coldchain(Scenario):
    """A temperature excursion: up by ``coldchain_excursion_c``, held, then back."""

    name = "coldchain"
    kinds = frozenset({"warehouse", "vehicle"})

    def __init__(self, spec: DeviceSpec) -> None:
        super().__init__(spec)
        p = spec.parameters
        self.excursion_c = float_param(p, "coldchain_excursion_c", 12.0)
        self.duration_s = float_param(p, "coldchain_duration_s", 60.0, low=0.0)
        self.ramp_s = float_param(p, "coldchain_ramp_s", 3.0, low=0.0)

    def excess_c(self, t_s: float) -> float:
        """Degrees above the model's temperature at ``t_s`` (a trapezoid in time)."""
        rising = ramp(t_s, self.incident_at_s, self.ramp_s)
        falling = ramp(t_s, self.incident_at_s + self.ramp_s + self.duration_s, self.ramp_s)
        return self.excursion_c * (rising - falling)

    def change(self, t_s: float, readings: Readings) -> Readings:
        excess = self.excess_c(t_s)
        if excess != 0.0 and "temp_c" in readings:
            readings["temp_c"] = round(clip("temp_c", float(readings["temp_c"]) + excess), 2)
        return readings


SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls for cls in (Normal, Theft, Release, Leak, Tamper, Swap, Geofence, Coldchain)
}


def make_scenario(name: str, spec: DeviceSpec) -> Scenario:
    """The scenario ``name`` for the device ``spec``; ``ValueError`` when it is unknown."""
    try:
        cls = SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(SCENARIOS))
        raise ValueError(f"unknown scenario {name!r} (known: {known})") from None
    return cls(spec)
