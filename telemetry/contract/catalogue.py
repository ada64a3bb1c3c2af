"""The metric catalogue: every metric a device may report, its unit and its valid range.

A reading outside its range is physically impossible for the sensor (or a fault) and becomes a
dead letter rather than a value the lending engine would trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["number", "count", "bool"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    kind: Kind
    low: float
    high: float
    description: str


CATALOGUE: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("weight_kg", "kg", "number", -50.0, 5_000_000.0, "load-cell weight of a lot"),
        Metric("rfid_count", "items", "count", 0, 10_000_000, "tagged items seen by an RFID reader"),
        Metric("temp_c", "°C", "number", -60.0, 120.0, "temperature"),
        Metric("humidity_pct", "%", "number", 0.0, 100.0, "relative humidity"),
        Metric("door_open", "bool", "bool", 0, 1, "warehouse or container door open"),
        Metric("tamper", "bool", "bool", 0, 1, "tamper switch / container seal broken"),
        Metric("lat", "°", "number", -90.0, 90.0, "GPS latitude (WGS 84)"),
        Metric("lon", "°", "number", -180.0, 180.0, "GPS longitude (WGS 84)"),
        Metric("speed_kmh", "km/h", "number", 0.0, 250.0, "vehicle speed"),
        Metric("line_count", "items", "count", 0, 10**12, "production-line output counter"),
        Metric("line_running", "bool", "bool", 0, 1, "production line running"),
        Metric("power_v", "V", "number", 0.0, 1000.0, "supply voltage"),
        Metric("camera_ok", "bool", "bool", 0, 1, "camera healthy and not occluded"),
    )
}
