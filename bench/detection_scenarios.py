"""The seeded scenario library of ``pledgewatch bench detection``: what each incident's devices
report, what the operators do, and the truth the engine is judged against.

Pure: numpy and the standard library, no database. A scenario is a set of device streams (device
time, receive time and readings of every message, with realistic noise on every sensor), status
changes (last will, reconnect), operations at given times (releases, price ticks, sales, portfolio
loads), the portfolio loaded at its start, and its truth: per lot, how many units had left and how
many of them executed releases explain at every instant, which alert types are expected from
when, and which are forbidden. :mod:`bench.detection` runs them through the real engine.

Times are epoch seconds (floats). The sites keep UTC+8 and business hours 07:00–19:00 (site time).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lending.domain.alerts import AlertType

FloatArray = NDArray[np.float64]

TENANT = "detect"
SITE_UTC_OFFSET_H = 8.0
BUSINESS_HOURS = (7, 19)
HOUR = 3600.0
MINUTE = 60.0
DAY = 86_400.0
THEFT_SHARE = 0.02  # a theft is "on" once this share of the lot has left unexplained
EARTH_RADIUS_M = 6_371_000.0
M_PER_DEG_LAT = 111_320.0

LOT_UNITS = 2000  # units in a single-lot scenario's lot
UNIT_KG = 25.0
STEEL_PRICE = 4000.0  # per tonne
FROZEN_PRICE = 20_000.0
TARGET_LTV = 0.3  # outstanding set to this share of the lots' estimated value


@dataclass(frozen=True, slots=True)
class Noise:
    """The sensors' noise: what a quiet warehouse or truck looks like."""

    load_cell_sigma: float = 0.001  # relative standard deviation of a weight reading
    load_cell_band: float = 0.002  # |relative error| never exceeds this (±0.2 %)
    load_cell_temp_coeff: float = 0.0001  # relative span drift per °C away from 20 °C
    rfid_miss_probability: float = 0.2  # one read in five misses tags ...
    rfid_miss_share: tuple[float, float] = (0.01, 0.02)  # ... 1–2 % of them
    gps_jitter_m: tuple[float, float] = (10.0, 30.0)  # every fix this far from the truth
    temp_mean_c: float = 18.0  # warehouse air, a daily cycle peaking at 15:00 site time
    temp_amplitude_c: float = 6.0
    temp_sigma_c: float = 0.2
    reefer_setpoint_c: float = -18.0
    reefer_amplitude_c: float = 1.0
    humidity_mean_pct: float = 55.0
    humidity_amplitude_pct: float = 10.0  # humidity falls as the air warms
    humidity_sigma_pct: float = 1.0
    speed_sigma_kmh: float = 2.0
    send_jitter_s: float = 0.3  # a message leaves up to this long after its slot
    latency_s: tuple[float, float] = (0.02, 0.4)  # device → gateway


NOISE = Noise()


# --- what a scenario is -----------------------------------------------------------------------

@dataclass(slots=True)
class Stream:
    """Every telemetry message one device sends, in sending order."""

    device_id: str
    kind: str  # "warehouse" | "vehicle"
    sent: FloatArray  # the device's own timestamp (its clock may be wrong)
    received: FloatArray  # when the gateway receives it
    seq: NDArray[np.int64]
    metrics: dict[str, FloatArray]  # NaN: not in that message; booleans as 0/1
    boot: int = 1

    def __len__(self) -> int:
        return int(self.sent.size)

    def readings(self, i: int) -> dict[str, float | int | bool]:
        """Message ``i``'s readings as a device puts them in its JSON payload."""
        out: dict[str, float | int | bool] = {}
        for metric, values in self.metrics.items():
            value = float(values[i])
            if math.isnan(value):
                continue
            if metric in ("door_open", "tamper"):
                out[metric] = value >= 0.5
            elif metric == "rfid_count":
                out[metric] = int(value)
            else:
                out[metric] = round(value, 6 if metric in ("lat", "lon") else 2)
        return out


@dataclass(frozen=True, slots=True)
class StatusEvent:
    at: float  # received
    device_id: str
    online: bool


@dataclass(frozen=True, slots=True)
class Release:
    """A release order requested, approved and executed at ``at``."""

    at: float
    release_id: str
    lot_id: str
    quantity: float


@dataclass(frozen=True, slots=True)
class PriceTick:
    at: float
    commodity: str
    price: float


@dataclass(frozen=True, slots=True)
class Sale:
    at: float
    facility_id: str
    amount: float


@dataclass(frozen=True, slots=True)
class PledgeAttempt:
    """A portfolio load that must be refused (the goods are pledged already)."""

    at: float
    portfolio: dict[str, Any]
    registration_no: str


Operation = Release | PriceTick | Sale | PledgeAttempt


@dataclass(slots=True)
class LotTruth:
    """What really happened to a lot: step functions of time (value from each time on)."""

    lot_id: str
    declared: float  # units pledged at the start
    removed_t: FloatArray = field(default_factory=lambda: np.empty(0))
    removed: FloatArray = field(default_factory=lambda: np.empty(0))  # cumulative units gone
    released_t: FloatArray = field(default_factory=lambda: np.empty(0))
    released: FloatArray = field(default_factory=lambda: np.empty(0))  # cumulative executed

    @staticmethod
    def _at(times: FloatArray, values: FloatArray, t: float | FloatArray) -> FloatArray:
        idx = np.searchsorted(times, np.asarray(t, dtype=float), side="right") - 1
        out = np.where(idx >= 0, values[np.clip(idx, 0, None)] if values.size else 0.0, 0.0)
        return np.asarray(out, dtype=float)

    def units_removed(self, t: float | FloatArray) -> FloatArray:
        return self._at(self.removed_t, self.removed, t)

    def units_released(self, t: float | FloatArray) -> FloatArray:
        return self._at(self.released_t, self.released, t)

    def present(self, t: float | FloatArray) -> FloatArray:
        """Units of the pledged goods physically in the lot."""
        return self.declared - self.units_removed(t)

    def shortfall(self, t: float | FloatArray) -> FloatArray:
        """Units gone that no executed release explains (never negative)."""
        return np.maximum(0.0, self.units_removed(t) - self.units_released(t))

    def crossing(self, share: float = THEFT_SHARE) -> float | None:
        """The first instant the shortfall reaches ``share`` of the lot, or None."""
        changes = np.union1d(self.removed_t, self.released_t)
        if changes.size == 0:
            return None
        over = np.flatnonzero(self.shortfall(changes) >= share * self.declared - 1e-9)
        return float(changes[over[0]]) if over.size else None


@dataclass(frozen=True, slots=True)
class Expected:
    """An alert type the scenario must raise: not before ``onset`` (earlier is a false alert),
    and its delay is counted from ``reference`` (the 2 % crossing, or the incident's start)."""

    type: str
    onset: float
    reference: float


@dataclass(slots=True)
class Scenario:
    name: str
    seed: int
    start: float
    end: float
    step_s: float  # the engine recomputes every step_s of simulated time
    portfolio: dict[str, Any]  # loaded at ``start``
    streams: list[Stream]
    statuses: list[StatusEvent] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    truths: dict[str, LotTruth] = field(default_factory=dict)
    theft_lot: str | None = None  # the lot whose shortfall the alert's magnitude is judged by
    expected: tuple[Expected, ...] = ()
    forbidden: frozenset[str] = frozenset()
    extra_steps: tuple[float, ...] = ()  # additional recomputes (e.g. right after a live reading)
    refusals_expected: int = 0  # portfolio loads that must be refused
    lot_days: float = 0.0  # for the normal run: lots × days watched

    @property
    def facility_ids(self) -> list[str]:
        return [f["id"] for f in self.portfolio["facilities"]]

    def steps(self) -> list[float]:
        """The simulated instants at which the engine recomputes, in order."""
        n = math.floor((self.end - self.start) / self.step_s + 1e-9)
        regular = [self.start + self.step_s * (i + 1) for i in range(n)]
        return sorted(set(regular) | {t for t in self.extra_steps if self.start < t <= self.end})


# --- building blocks ---------------------------------------------------------------------------

def site_midnight(now: datetime, days_back: int = 3) -> float:
    """Epoch seconds of the site's midnight (UTC+8) ``days_back`` days before ``now``'s site day."""
    offset = SITE_UTC_OFFSET_H * HOUR
    local_day = math.floor((now.timestamp() + offset) / DAY)
    return (local_day - days_back) * DAY - offset


def local_hour(t: FloatArray | float) -> FloatArray:
    return np.asarray((np.asarray(t, dtype=float) / HOUR + SITE_UTC_OFFSET_H) % 24.0, dtype=float)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _rng(seed: int, name: str, part: str = "") -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{name}/{part}".encode())])


def message_times(rng: np.random.Generator, start: float, end: float, interval: float,
                  noise: Noise = NOISE) -> tuple[FloatArray, FloatArray]:
    """(sent, received) of a device reporting every ``interval`` seconds in [start, end)."""
    n = max(0, math.ceil((end - start) / interval))
    sent = start + interval * np.arange(n, dtype=float) + rng.uniform(0.0, noise.send_jitter_s, n)
    received = sent + rng.uniform(*noise.latency_s, n)
    return sent, received


def lumps(rng: np.random.Generator, total: int, t0: float, t1: float,
          count: int) -> tuple[FloatArray, FloatArray]:
    """``total`` units leaving in ``count`` loads spread over [t0, t1): (times, units per load)."""
    count = max(1, min(count, total)) if total > 0 else 0
    if count == 0:
        return np.empty(0), np.empty(0)
    span = (t1 - t0) / count
    times = t0 + span * (np.arange(count) + rng.uniform(0.2, 0.8, count))
    sizes = np.full(count, total // count, dtype=float)
    sizes[: total % count] += 1
    return np.asarray(times, dtype=float), sizes


def cumulative(times: Sequence[FloatArray], sizes: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray]:
    t = np.concatenate([np.asarray(x, dtype=float) for x in times]) if times else np.empty(0)
    s = np.concatenate([np.asarray(x, dtype=float) for x in sizes]) if sizes else np.empty(0)
    order = np.argsort(t, kind="stable")
    return t[order], np.cumsum(s[order])


def within(t: FloatArray, intervals: Sequence[tuple[float, float]]) -> FloatArray:
    """1.0 where ``t`` falls in any [a, b), else 0.0."""
    out = np.zeros(t.size)
    for a, b in intervals:
        out[(t >= a) & (t < b)] = 1.0
    return out


def daily_cycle(t: FloatArray, mean: float, amplitude: float, peak_hour: float = 15.0) -> FloatArray:
    return mean + amplitude * np.cos(2 * np.pi * (local_hour(t) - peak_hour) / 24.0)


def load_cell(rng: np.random.Generator, true_kg: FloatArray, temp_c: FloatArray,
              noise: Noise = NOISE) -> FloatArray:
    """Weights with a relative error inside ±band: Gaussian noise plus a thermal span drift."""
    error = noise.load_cell_temp_coeff * (temp_c - 20.0) + rng.normal(0.0, noise.load_cell_sigma,
                                                                      true_kg.size)
    return true_kg * (1.0 + np.clip(error, -noise.load_cell_band, noise.load_cell_band))


def rfid(rng: np.random.Generator, true_count: FloatArray, noise: Noise = NOISE) -> FloatArray:
    """RFID counts: a read misses 1–2 % of the tags one time in five, and never over-counts."""
    misses = rng.random(true_count.size) < noise.rfid_miss_probability
    share = rng.uniform(*noise.rfid_miss_share, true_count.size)
    missed = np.where(misses, np.round(true_count * share), 0.0)
    return np.maximum(0.0, true_count - missed)


def gps(rng: np.random.Generator, lat: FloatArray, lon: FloatArray,
        noise: Noise = NOISE) -> tuple[FloatArray, FloatArray]:
    """Fixes 10–30 m from the true position, in a random direction."""
    dist = rng.uniform(*noise.gps_jitter_m, lat.size)
    bearing = rng.uniform(0.0, 2 * np.pi, lat.size)
    dlat = dist * np.cos(bearing) / M_PER_DEG_LAT
    dlon = dist * np.sin(bearing) / (M_PER_DEG_LAT * np.cos(np.radians(lat)))
    return lat + dlat, lon + dlon


def haversine_m(lat1: FloatArray | float, lon1: FloatArray | float, lat2: FloatArray | float,
                lon2: FloatArray | float) -> FloatArray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a)), dtype=float)


def offset_position(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (lat + north_m / M_PER_DEG_LAT,
            lon + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat))))


@dataclass(frozen=True, slots=True)
class WarehouseLot:
    """One warehouse lot's physical story, from which its device stream is made."""

    device_id: str
    declared: int
    unit_kg: float
    interval: float
    removals: tuple[FloatArray, FloatArray]  # (times, units per load): goods physically leaving
    swaps: tuple[FloatArray, FloatArray] = (np.empty(0), np.empty(0))  # pledged units replaced
    doors: tuple[tuple[float, float], ...] = ()  # door open intervals
    tamper: tuple[tuple[float, float], ...] = ()
    clock_offset_s: float = 0.0  # the device clock minus true time


def warehouse_stream(rng: np.random.Generator, lot: WarehouseLot, start: float, end: float,
                     noise: Noise = NOISE) -> Stream:
    sent, received = message_times(rng, start, end, lot.interval, noise)
    removed_t, removed = cumulative([lot.removals[0]], [lot.removals[1]])
    swapped_t, swapped = cumulative([lot.swaps[0]], [lot.swaps[1]])
    present = lot.declared - LotTruth._at(removed_t, removed, sent)
    tagged = present - LotTruth._at(swapped_t, swapped, sent)  # swapped-in goods carry no tag
    temp = daily_cycle(sent, noise.temp_mean_c, noise.temp_amplitude_c) + rng.normal(
        0.0, noise.temp_sigma_c, sent.size)
    humidity = np.clip(daily_cycle(sent, noise.humidity_mean_pct, -noise.humidity_amplitude_pct)
                       + rng.normal(0.0, noise.humidity_sigma_pct, sent.size), 0.0, 100.0)
    metrics = {
        "weight_kg": load_cell(rng, present * lot.unit_kg, temp, noise),
        "rfid_count": rfid(rng, tagged, noise),
        "door_open": within(sent, lot.doors),
        "tamper": within(sent, lot.tamper),
        "temp_c": temp,
        "humidity_pct": humidity,
    }
    return Stream(lot.device_id, "warehouse", sent + lot.clock_offset_s, received,
                  np.arange(sent.size, dtype=np.int64), metrics)


Track = Callable[[FloatArray], tuple[FloatArray, FloatArray, FloatArray]]  # t -> lat, lon, km/h


def piecewise_track(knots_t: Sequence[float], knots: Sequence[tuple[float, float]]) -> Track:
    """A vehicle moving in straight lines between (lat, lon) knots reached at the given times."""
    kt = np.asarray(knots_t, dtype=float)
    klat = np.asarray([k[0] for k in knots], dtype=float)
    klon = np.asarray([k[1] for k in knots], dtype=float)
    legs_m = haversine_m(klat[:-1], klon[:-1], klat[1:], klon[1:])
    legs_kmh = legs_m / 1000.0 / np.maximum(np.diff(kt) / HOUR, 1e-9)

    def track(t: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        leg = np.clip(np.searchsorted(kt, t, side="right") - 1, 0, legs_kmh.size - 1)
        moving = (t >= kt[0]) & (t < kt[-1])
        return (np.interp(t, kt, klat), np.interp(t, kt, klon),
                np.where(moving, legs_kmh[leg], 0.0))

    return track


def truck_stream(rng: np.random.Generator, device_id: str, track: Track, start: float, end: float,
                 interval: float, doors: Sequence[tuple[float, float]] = (),
                 noise: Noise = NOISE) -> Stream:
    sent, received = message_times(rng, start, end, interval, noise)
    lat, lon, speed = track(sent)
    glat, glon = gps(rng, lat, lon, noise)
    temp = (noise.reefer_setpoint_c + noise.reefer_amplitude_c * np.cos(
        2 * np.pi * (local_hour(sent) - 15.0) / 24.0) + rng.normal(0.0, noise.temp_sigma_c, sent.size))
    metrics = {
        "lat": glat, "lon": glon,
        "speed_kmh": np.clip(speed + np.where(speed > 0, rng.normal(0.0, noise.speed_sigma_kmh,
                                                                     sent.size), 0.0), 0.0, 250.0),
        "temp_c": temp, "door_open": within(sent, doors), "tamper": np.zeros(sent.size),
    }
    return Stream(device_id, "vehicle", sent, received, np.arange(sent.size, dtype=np.int64), metrics)


def shuttle_knots(rng: np.random.Generator, start: float, end: float, a: tuple[float, float],
                  b: tuple[float, float]) -> tuple[list[float], list[tuple[float, float]],
                                                   list[tuple[float, float]]]:
    """A truck shuttling between depots a and b: knots, and its door openings at each stop."""
    distance_km = float(haversine_m(a[0], a[1], b[0], b[1])) / 1000.0
    t, here, there = start, a, b
    knots_t, knots, doors = [start], [a], []
    while t < end:
        stop = rng.uniform(20, 40) * MINUTE
        if BUSINESS_HOURS[0] <= float(local_hour(t + 5 * MINUTE)) < BUSINESS_HOURS[1] - 0.5:
            doors.append((t + 5 * MINUTE, t + 10 * MINUTE))  # unloading: in business hours only
        t += stop
        knots_t.append(t)
        knots.append(here)
        t += distance_km / rng.uniform(50, 70) * HOUR
        knots_t.append(t)
        knots.append(there)
        here, there = there, here
    return knots_t, knots, doors


def box(lat0: float, lon0: float, lat1: float, lon1: float) -> list[list[float]]:
    return [[lat0, lon0], [lat0, lon1], [lat1, lon1], [lat1, lon0]]


def price_history(rng: np.random.Generator, commodity: str, start: float, base: float,
                  days: int = 60, daily_sigma: float = 0.008) -> list[dict[str, Any]]:
    """Daily closes (at 09:00 UTC) for ``days`` days before ``start``, ending near ``base``."""
    walk = np.cumsum(rng.normal(0.0, daily_sigma, days))
    prices = base * np.exp(walk - walk[-1])
    first = math.floor(start / DAY) - days
    return [{"commodity": commodity, "time": iso((first + i) * DAY + 9 * HOUR),
             "price": round(float(p), 2)} for i, p in enumerate(prices)]


def steel(name: str) -> dict[str, Any]:
    return {"name": f"steel-{name}", "unit": "t", "unit_kg": 1000.0, "liquidation_days": 10,
            "humidity_pct": [0, 90]}


def frozen(name: str) -> dict[str, Any]:
    return {"name": f"frozen-{name}", "unit": "t", "unit_kg": 1000.0, "liquidation_days": 5,
            "temp_c": [-25, -15]}


def lot_entry(lot_id: str, facility: str, commodity: str, declared: float, unit_kg: float,
              sensors: Sequence[str], reg: str, **extra: Any) -> dict[str, Any]:
    return {"id": lot_id, "facility": facility, "commodity": commodity,
            "declared_quantity": declared, "unit_weight_kg": unit_kg, "registration_no": reg,
            "sensors": list(sensors), "business_hours": list(BUSINESS_HOURS), **extra}


def portfolio(lots: list[dict[str, Any]], commodities: list[dict[str, Any]],
              prices: list[dict[str, Any]], *, ltv: float = TARGET_LTV,
              receivables: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Borrowers and facilities for ``lots`` (one borrower per facility), outstanding set so the
    facility's LTV is about ``ltv``."""
    last_price = {p["commodity"]: p["price"] for p in prices}
    unit_kg = {c["name"]: c["unit_kg"] for c in commodities}
    value: dict[str, float] = {}
    for lot in lots:
        quoted = lot["declared_quantity"] * lot["unit_weight_kg"] / unit_kg[lot["commodity"]]
        value[lot["facility"]] = value.get(lot["facility"], 0.0) + quoted * last_price[
            lot["commodity"]] * 0.89
    facility_ids = list(dict.fromkeys(lot["facility"] for lot in lots))
    return {
        "commodities": commodities,
        "borrowers": [{"id": f"b-{fid}", "name": f"Borrower of {fid}", "tenant": TENANT}
                      for fid in facility_ids],
        "facilities": [{"id": fid, "borrower": f"b-{fid}", "line": 1e9,
                        "outstanding": round(ltv * value[fid], 2), "currency": "CNY"}
                       for fid in facility_ids],
        "lots": lots,
        "receivables": list(receivables),
        "prices": prices,
    }


# --- the scenarios -----------------------------------------------------------------------------

SENSOR_NOISE = frozenset({AlertType.CLOCK_SKEW, AlertType.SENSOR_OFFLINE, AlertType.SENSOR_STALE,
                          AlertType.GEOFENCE_EXIT, AlertType.CONDITION_OUT_OF_SPEC,
                          AlertType.DUPLICATE_PLEDGE})
THEFT_FORBIDDEN = SENSOR_NOISE | {AlertType.SENSOR_FAULT, AlertType.SENSOR_SPOOFING,
                                  AlertType.SENSOR_FLATLINE, AlertType.SENSOR_TAMPER,
                                  AlertType.QUANTITY_MISMATCH}
NOTHING: tuple[FloatArray, FloatArray] = (np.empty(0), np.empty(0))


@dataclass(frozen=True, slots=True)
class Plan:
    """Durations that ``--quick`` shortens, the engine's step and the noise."""

    quick: bool
    noise: Noise = NOISE

    @property
    def history(self) -> float:  # quiet operation before an incident
        return 1 * HOUR if self.quick else 2 * HOUR

    @property
    def tail(self) -> float:  # watched after an incident
        return 30 * MINUTE if self.quick else 1 * HOUR

    step: float = MINUTE  # the engine recomputes every simulated minute


def _single_warehouse(name: str, seed: int, plan: Plan, *, start: float, end: float,
                      interval: float = 5.0, removals: tuple[FloatArray, FloatArray] = NOTHING,
                      swaps: tuple[FloatArray, FloatArray] = NOTHING,
                      doors: Sequence[tuple[float, float]] = (),
                      tamper: Sequence[tuple[float, float]] = (), clock_offset_s: float = 0.0,
                      ltv: float = TARGET_LTV, step: float | None = None) -> Scenario:
    """One facility with one warehouse lot of 2,000 units × 25 kg and its one device."""
    rng = _rng(seed, name)
    device, lot_id, fid = f"{name}-wh", f"lot-{name}", f"fac-{name}"
    spec = WarehouseLot(device, LOT_UNITS, UNIT_KG, interval, removals, swaps, tuple(doors),
                        tuple(tamper), clock_offset_s)
    stream = warehouse_stream(rng, spec, start, end, plan.noise)
    commodity = steel(name)
    prices = price_history(rng, commodity["name"], start, STEEL_PRICE)
    book = portfolio([lot_entry(lot_id, fid, commodity["name"], LOT_UNITS, UNIT_KG, [device],
                                      f"REG-{name}-0001", site=f"warehouse of {name}")],
                     [commodity], prices, ltv=ltv)
    removed_t, removed = cumulative([removals[0], swaps[0]], [removals[1], swaps[1]])
    truth = LotTruth(lot_id, LOT_UNITS, removed_t, removed)
    return Scenario(name, seed, start, end, step or plan.step, book, [stream],
                    truths={lot_id: truth}, theft_lot=lot_id)


def _expect(scenario: Scenario, kind: str, onset: float, forbidden: frozenset[str]) -> Scenario:
    """Expect ``kind`` from ``onset`` on, its delay counted from the theft's 2 % crossing."""
    assert scenario.theft_lot is not None
    crossed = scenario.truths[scenario.theft_lot].crossing()
    assert crossed is not None, f"{scenario.name}: the theft never reaches {THEFT_SHARE:.0%}"
    scenario.expected = (Expected(kind, onset, crossed),)
    scenario.forbidden = forbidden - {kind}
    return scenario


def _no_theft(scenario: Scenario, expected: Sequence[Expected], forbidden: frozenset[str]) -> Scenario:
    scenario.theft_lot = None
    scenario.expected = tuple(expected)
    scenario.forbidden = forbidden - {e.type for e in expected}
    return scenario


def _theft(name: str, seed: int, day0: float, plan: Plan, *, interval: float, share: float,
           duration: float, loads: int) -> Scenario:
    """``share`` of the lot leaves in ``loads`` loads over ``duration`` in business hours (from
    08:00 + history), the door open around each load."""
    rng = _rng(seed, name, "theft")
    start = day0 + 8 * HOUR
    t0 = start + plan.history
    times, sizes = lumps(rng, round(share * LOT_UNITS), t0, t0 + duration, loads)
    doors = [(float(t) - MINUTE, float(t) + MINUTE) for t in times]
    scenario = _single_warehouse(name, seed, plan, start=start, end=t0 + duration + plan.tail,
                                 interval=interval, removals=(times, sizes), doors=doors)
    return _expect(scenario, AlertType.UNAUTHORISED_OUTBOUND, t0, THEFT_FORBIDDEN)


def fast_theft(seed: int, day0: float, plan: Plan, interval: float) -> Scenario:
    """30 % of the lot leaves in 5 minutes (20 forklift loads)."""
    return _theft(f"fast_theft_{interval:.0f}s", seed, day0, plan, interval=interval, share=0.30,
                  duration=5 * MINUTE, loads=20)


def slow_theft(seed: int, day0: float, plan: Plan, interval: float) -> Scenario:
    """15 % of the lot leaves over 4 hours (60 loads of 5 units)."""
    return _theft(f"slow_theft_{interval:.0f}s", seed, day0, plan, interval=interval, share=0.15,
                  duration=4 * HOUR, loads=60)


def salami(seed: int, day0: float, plan: Plan) -> Scenario:
    """0.3 % of the lot per business hour, one unit at a time, 07:00–19:00 (3.6 % in the day)."""
    name = "salami"
    rng = _rng(seed, name, "theft")
    hours = BUSINESS_HOURS[1] - BUSINESS_HOURS[0]
    per_hour = round(0.003 * LOT_UNITS)
    opens, closes = day0 + BUSINESS_HOURS[0] * HOUR, day0 + BUSINESS_HOURS[1] * HOUR
    end = day0 + 15 * HOUR if plan.quick else closes + HOUR
    times, sizes = lumps(rng, per_hour * hours, opens, closes, per_hour * hours)
    keep = times < end
    doors = [(float(t) - 1.5 * MINUTE, float(t) + 1.5 * MINUTE) for t in times[keep]]
    scenario = _single_warehouse(name, seed, plan, start=day0 + 5 * HOUR, end=end,
                                 removals=(times[keep], sizes[keep]), doors=doors)
    return _expect(scenario, AlertType.UNAUTHORISED_OUTBOUND, opens, THEFT_FORBIDDEN)


def release_laundering(seed: int, day0: float, plan: Plan) -> Scenario:
    """A release of 100 units is executed and they leave; 45 minutes later 100 more leave."""
    name = "release_laundering"
    rng = _rng(seed, name, "theft")
    start = day0 + 8 * HOUR
    executed = start + plan.history
    legit = lumps(rng, 100, executed + 30.0, executed + 10 * MINUTE, 10)
    theft = lumps(rng, 100, executed + 45 * MINUTE, executed + 55 * MINUTE, 10)
    doors = [(executed, executed + 11 * MINUTE), (executed + 44 * MINUTE, executed + 56 * MINUTE)]
    scenario = _single_warehouse(
        name, seed, plan, start=start, end=executed + 85 * MINUTE + plan.tail,
        removals=(np.concatenate([legit[0], theft[0]]), np.concatenate([legit[1], theft[1]])),
        doors=doors)
    lot_id = f"lot-{name}"
    scenario.operations = [Release(executed, f"rel-{name}-1", lot_id, 100.0)]
    truth = scenario.truths[lot_id]
    truth.released_t, truth.released = np.asarray([executed]), np.asarray([100.0])
    return _expect(scenario, AlertType.UNAUTHORISED_OUTBOUND, executed + 45 * MINUTE,
                   THEFT_FORBIDDEN)


def replay(seed: int, day0: float, plan: Plan) -> Scenario:
    """From 10:00 the load cell and the RFID reader replay their own readings of 08:30–09:30
    (looped) while 20 % of the goods leave, 10:05–10:35."""
    name = "replay"
    rng = _rng(seed, name, "theft")
    start = day0 + 8 * HOUR
    replay_from = start + 2 * HOUR
    t0 = replay_from + 5 * MINUTE
    times, sizes = lumps(rng, round(0.20 * LOT_UNITS), t0, t0 + 30 * MINUTE, 40)
    scenario = _single_warehouse(name, seed, plan, start=start,
                                 end=t0 + 55 * MINUTE + plan.tail, removals=(times, sizes),
                                 doors=[(t0 - MINUTE, t0 + 31 * MINUTE)])
    stream = scenario.streams[0]
    source = np.flatnonzero((stream.sent >= start + 30 * MINUTE) & (stream.sent < start + 90 * MINUTE))
    live = np.flatnonzero(stream.sent >= replay_from)
    recorded = source[np.arange(live.size) % source.size]
    for metric in ("weight_kg", "rfid_count"):
        stream.metrics[metric][live] = stream.metrics[metric][recorded]
    return _expect(scenario, AlertType.SENSOR_SPOOFING, replay_from,
                   SENSOR_NOISE | {AlertType.SENSOR_FAULT})


def swap(seed: int, day0: float, plan: Plan) -> Scenario:
    """30 % of the tagged goods are swapped, over 20 minutes, for untagged goods of the same
    weight: the weight holds, the RFID count falls."""
    name = "swap"
    rng = _rng(seed, name, "theft")
    start = day0 + 8 * HOUR
    t0 = start + plan.history
    times, sizes = lumps(rng, round(0.30 * LOT_UNITS), t0, t0 + 20 * MINUTE, 20)
    scenario = _single_warehouse(name, seed, plan, start=start, end=t0 + 20 * MINUTE + plan.tail,
                                 swaps=(times, sizes), doors=[(t0 - MINUTE, t0 + 21 * MINUTE)])
    return _expect(scenario, AlertType.QUANTITY_MISMATCH, t0, SENSOR_NOISE | {AlertType.SENSOR_FAULT})


def load_cell_fault(seed: int, day0: float, plan: Plan) -> Scenario:
    """The load cell's cable is cut: it reads 0 kg (±0.3 kg); the RFID count is steady."""
    name = "load_cell_fault"
    start = day0 + 8 * HOUR
    cut = start + plan.history
    scenario = _single_warehouse(name, seed, plan, start=start, end=cut + plan.tail)
    stream = scenario.streams[0]
    after = np.flatnonzero(stream.sent >= cut)
    stream.metrics["weight_kg"][after] = _rng(seed, name, "fault").uniform(-0.3, 0.3, after.size)
    return _no_theft(scenario, [Expected(AlertType.SENSOR_FAULT, cut, cut)],
                     SENSOR_NOISE | {AlertType.UNAUTHORISED_OUTBOUND})


def outage_backlog(seed: int, day0: float, plan: Plan) -> Scenario:
    """The device is offline 10:00–10:30 (its last will is published); meanwhile 10 % of the lot
    leaves (10:10–10:20) and its tamper switch is set for two minutes. Back online it sends a
    live reading first, then its 30-minute backlog; the engine recomputes in between."""
    name = "outage_backlog"
    rng = _rng(seed, name, "theft")
    start = day0 + 8 * HOUR
    down = start + plan.history
    up = down + 30 * MINUTE
    t0 = down + 10 * MINUTE
    times, sizes = lumps(rng, round(0.10 * LOT_UNITS), t0, t0 + 10 * MINUTE, 10)
    tamper = (down + 12 * MINUTE, down + 14 * MINUTE)
    scenario = _single_warehouse(name, seed, plan, start=start, end=up + plan.tail,
                                 removals=(times, sizes), doors=[(t0 - MINUTE, t0 + 11 * MINUTE)],
                                 tamper=[tamper])
    stream = scenario.streams[0]
    backlog = np.flatnonzero((stream.sent >= down) & (stream.sent < up))
    live_at = float(stream.received[np.flatnonzero(stream.sent >= up)[0]])
    stream.received[backlog] = live_at + 10.0 + 50.0 * np.arange(backlog.size) / backlog.size
    device = stream.device_id
    scenario.statuses = [StatusEvent(down + 45.0, device, False),
                         StatusEvent(live_at - 0.5, device, True)]
    scenario.extra_steps = (live_at + 1.0,)
    scenario = _expect(scenario, AlertType.UNAUTHORISED_OUTBOUND, t0,
                       frozenset({AlertType.CLOCK_SKEW, AlertType.SENSOR_FAULT}))
    scenario.expected = (*scenario.expected, Expected(AlertType.SENSOR_TAMPER, tamper[0], tamper[0]))
    return scenario


def clock_skew(seed: int, day0: float, plan: Plan) -> Scenario:
    """The device clock runs 2.5 h behind; at 20:30 site time (out of hours — the device says
    18:00) the door opens for 4 minutes and nothing leaves."""
    name = "clock_skew"
    door = day0 + 20.5 * HOUR
    start = door - 1.5 * HOUR - plan.history
    scenario = _single_warehouse(name, seed, plan, start=start, end=door + plan.tail,
                                 doors=[(door, door + 4 * MINUTE)], clock_offset_s=-2.5 * HOUR)
    return _no_theft(scenario, [Expected(AlertType.CLOCK_SKEW, start, start),
                                Expected(AlertType.UNAUTHORISED_OUTBOUND, door, door)],
                     frozenset({AlertType.SENSOR_STALE, AlertType.SENSOR_OFFLINE,
                                AlertType.SENSOR_FAULT}))


FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
PLEDGED_REGISTRATION = "ZDW-2026-0001"


def duplicate_pledge(seed: int, day0: float, plan: Plan) -> Scenario:
    """The registration number of a pledged lot is loaded for another facility in lower case, with
    a trailing space and in full-width characters: three loads a minute apart, each to be refused
    (and the facility holding the goods alerted)."""
    name = "duplicate_pledge"
    start = day0 + 9 * HOUR
    first = start + 30 * MINUTE
    scenario = _single_warehouse(name, seed, plan, start=start, end=first + 30 * MINUTE,
                                 step=MINUTE)
    scenario.portfolio["lots"][0]["registration_no"] = PLEDGED_REGISTRATION
    commodity = scenario.portfolio["commodities"][0]["name"]
    variants = [PLEDGED_REGISTRATION.lower(), PLEDGED_REGISTRATION + " ",
                PLEDGED_REGISTRATION.translate(FULL_WIDTH)]
    for i, number in enumerate(variants):
        other = f"fac-{name}-other-{i}"
        attempt = {
            "borrowers": [{"id": f"b-{other}", "name": "Second Pledge Trading", "tenant": TENANT}],
            "facilities": [{"id": other, "borrower": f"b-{other}", "line": 1e6,
                            "outstanding": 10_000.0}],
            "lots": [lot_entry(f"lot-{name}-again-{i}", other, commodity, LOT_UNITS, UNIT_KG,
                               [f"{name}-again-{i}"], number)],
        }
        scenario.operations.append(PledgeAttempt(first + i * MINUTE, attempt, number))
    scenario.refusals_expected = len(variants)
    return _no_theft(scenario, [Expected(AlertType.DUPLICATE_PLEDGE, first, first)],
                     THEFT_FORBIDDEN | {AlertType.UNAUTHORISED_OUTBOUND})


def price_fall(seed: int, day0: float, plan: Plan) -> Scenario:
    """The commodity's price falls 35 % in three ticks five minutes apart (LTV about 0.35 before)."""
    name = "price_fall"
    start = day0 + 8 * HOUR
    first = start + HOUR
    scenario = _single_warehouse(name, seed, plan, start=start, end=first + 10 * MINUTE + plan.tail,
                                 ltv=0.35, step=MINUTE)
    commodity = scenario.portfolio["commodities"][0]["name"]
    last = scenario.portfolio["prices"][-1]["price"]
    factor = 0.65 ** (1 / 3)
    scenario.operations = [PriceTick(first + i * 5 * MINUTE, commodity,
                                     round(last * factor ** (i + 1), 2)) for i in range(3)]
    return _no_theft(scenario, [Expected(AlertType.LTV_WARNING, first, first)],
                     THEFT_FORBIDDEN | {AlertType.UNAUTHORISED_OUTBOUND})


def sales_stop(seed: int, day0: float, plan: Plan) -> Scenario:
    """Daily sales (3–9 invoices in business hours, about 100,000 a day) for 30 days, then none
    for three days; the lot reports every 60 s. Sales days are UTC days, and the sites' business
    hours (09:00–18:00 site time = 01:00–10:00 UTC) fall inside one."""
    name = "sales_stop"
    rng = _rng(seed, name, "sales")
    days = 14 if plan.quick else 30
    first_day = math.floor(day0 / DAY) - days - 3
    start = first_day * DAY
    stop = (first_day + days) * DAY  # midnight UTC starting the first day without sales
    scenario = _single_warehouse(name, seed, plan, start=start, end=stop + 3 * DAY + HOUR,
                                 interval=60.0, step=3 * HOUR if plan.quick else HOUR)
    fid = scenario.facility_ids[0]
    for day in range(days):
        total = 100_000.0 * max(0.5, rng.normal(1.0, 0.1))
        count = int(rng.integers(3, 10))
        shares = rng.dirichlet(np.ones(count))
        times = np.sort((first_day + day) * DAY + rng.uniform(1 * HOUR, 10 * HOUR, count))
        scenario.operations.extend(Sale(float(t), fid, round(float(total * s), 2))
                                   for t, s in zip(times, shares, strict=True))
    return _no_theft(scenario, [Expected(AlertType.SALES_COLLAPSE, stop, stop)],
                     THEFT_FORBIDDEN | {AlertType.UNAUTHORISED_OUTBOUND})


def gps_jump(seed: int, day0: float, plan: Plan) -> Scenario:
    """A reefer truck driving east at 60 km/h: its reported position jumps 300 km north in 10 s,
    inside its very wide geofence, and goes on from there."""
    name = "gps_jump"
    rng = _rng(seed, name)
    start = day0 + 8 * HOUR
    jump = start + plan.history
    end = jump + plan.tail
    origin = (30.0, 113.0)
    track = piecewise_track([start, end], [origin, offset_position(
        *origin, 0.0, 60_000.0 * (end - start) / HOUR)])
    device, lot_id, fid = f"{name}-veh", f"lot-{name}", f"fac-{name}"
    stream = truck_stream(rng, device, track, start, end, 10.0, noise=plan.noise)
    stream.metrics["lat"][stream.sent >= jump] += 300_000.0 / M_PER_DEG_LAT
    commodity = frozen(name)
    prices = price_history(rng, commodity["name"], start, FROZEN_PRICE)
    book = portfolio([lot_entry(lot_id, fid, commodity["name"], 20, 1000.0, [device],
                                      f"REG-{name}-0001", vehicle=device,
                                      geofence=box(26.0, 110.0, 34.5, 122.0))],
                     [commodity], prices)
    return Scenario(name, seed, start, end, plan.step, book, [stream],
                    truths={lot_id: LotTruth(lot_id, 20)},
                    expected=(Expected(AlertType.SENSOR_SPOOFING, jump, jump),),
                    forbidden=SENSOR_NOISE | {AlertType.SENSOR_FAULT})


def normal(seed: int, day0: float, plan: Plan) -> Scenario:
    """A quiet day: warehouse lots reporting every 5 s, doors opening in business hours, a few
    executed releases whose goods leave right after; reefer trucks shuttling between two depots
    inside their corridors, reporting every 10 s. Every alert raised is a false alert."""
    name = "normal"
    rng = _rng(seed, name)
    warehouses, trucks, releases = (3, 1, 1) if plan.quick else (16, 4, 4)
    start = day0 + (6 * HOUR if plan.quick else 0.0)
    end = start + (6 * HOUR if plan.quick else DAY)
    opens, closes = day0 + BUSINESS_HOURS[0] * HOUR, day0 + BUSINESS_HOURS[1] * HOUR
    steel_c, frozen_c = steel(name), frozen(name)
    prices = (price_history(rng, steel_c["name"], start, STEEL_PRICE)
              + price_history(rng, frozen_c["name"], start, FROZEN_PRICE))
    lots: list[dict[str, Any]] = []
    streams: list[Stream] = []
    truths: dict[str, LotTruth] = {}
    operations: list[Operation] = []
    for i in range(warehouses):
        lot_id, device = f"lot-{name}-{i:02d}", f"{name}-wh-{i:02d}"
        declared = int(rng.integers(5, 50)) * 100
        unit_kg = float(rng.choice([10.0, 20.0, 25.0, 40.0, 50.0]))
        doors = [(t, t + rng.uniform(2, 10) * MINUTE)
                 for t in rng.uniform(opens, closes - 15 * MINUTE, int(rng.integers(2, 7)))]
        removals = NOTHING
        truth = LotTruth(lot_id, declared)
        if i < releases:
            at = float(rng.uniform(max(opens, start + 30 * MINUTE), min(closes, end) - 30 * MINUTE))
            quantity = round(0.05 * declared)
            operations.append(Release(at, f"rel-{name}-{i}", lot_id, float(quantity)))
            removals = lumps(rng, quantity, at + MINUTE, at + 10 * MINUTE, 5)
            doors.append((at, at + 11 * MINUTE))
            truth.released_t, truth.released = np.asarray([at]), np.asarray([float(quantity)])
            truth.removed_t, truth.removed = cumulative([removals[0]], [removals[1]])
        spec = WarehouseLot(device, declared, unit_kg, 5.0, removals, doors=tuple(doors))
        streams.append(warehouse_stream(rng, spec, start, end, plan.noise))
        lots.append(lot_entry(lot_id, f"fac-{name}-{i // 4}", steel_c["name"], declared, unit_kg,
                              [device], f"REG-{name}-{i:04d}",
                              site=f"bonded warehouse {i // 4}, bay {i % 4}"))
        truths[lot_id] = truth
    for j in range(trucks):
        lot_id, device = f"lot-{name}-truck-{j}", f"{name}-veh-{j}"
        a = (30.0 + 0.5 * j, 114.0)
        b = offset_position(*a, rng.uniform(-20_000, 20_000), rng.uniform(30_000, 50_000))
        knots_t, knots, doors = shuttle_knots(rng, start, end, a, b)
        fence = box(min(a[0], b[0]) - 0.05, min(a[1], b[1]) - 0.05,
                    max(a[0], b[0]) + 0.05, max(a[1], b[1]) + 0.05)
        streams.append(truck_stream(rng, device, piecewise_track(knots_t, knots), start, end, 10.0,
                                    doors, plan.noise))
        lots.append(lot_entry(lot_id, f"fac-{name}-trucks", frozen_c["name"], 20, 1000.0, [device],
                              f"REG-{name}-T{j:03d}", vehicle=device, geofence=fence))
        truths[lot_id] = LotTruth(lot_id, 20)
    return Scenario(name, seed, start, end, MINUTE, portfolio(lots, [steel_c, frozen_c], prices),
                    streams, operations=operations, truths=truths,
                    lot_days=len(lots) * (end - start) / DAY)


SCENARIOS: dict[str, Callable[[int, float, Plan], Scenario]] = {
    "normal": normal,
    "fast_theft_5s": lambda seed, day0, plan: fast_theft(seed, day0, plan, 5.0),
    "fast_theft_60s": lambda seed, day0, plan: fast_theft(seed, day0, plan, 60.0),
    "slow_theft_5s": lambda seed, day0, plan: slow_theft(seed, day0, plan, 5.0),
    "slow_theft_60s": lambda seed, day0, plan: slow_theft(seed, day0, plan, 60.0),
    "salami": salami,
    "release_laundering": release_laundering,
    "replay": replay,
    "swap": swap,
    "gps_jump": gps_jump,
    "load_cell_fault": load_cell_fault,
    "outage_backlog": outage_backlog,
    "clock_skew": clock_skew,
    "duplicate_pledge": duplicate_pledge,
    "price_fall": price_fall,
    "sales_stop": sales_stop,
}


def build(name: str, seed: int, day0: float, quick: bool = False, noise: Noise = NOISE) -> Scenario:
    """Scenario ``name`` for ``seed``; ``day0`` is the site midnight its day starts from."""
    return SCENARIOS[name](seed, day0, Plan(quick, noise))


def anchor(now: datetime | None = None) -> float:
    """The site midnight the scenarios start from: three site days before ``now`` (default: the
    present), so every simulated time lies in the recent past."""
    return site_midnight(now or datetime.now(UTC), 3)
