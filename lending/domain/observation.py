"""A lot's observation from its bound devices' readings and status: the rule that says which
sensor's series counts and which latest reading wins.

- weight and RFID count: the series of the first bound sensor, in ``lot.sensors`` order, that has
  one (the two channels may come from different sensors);
- door openings: every truthy ``door_open`` reading of any bound sensor no older than the window,
  oldest first;
- temperature, humidity, latitude and longitude: each the latest reading across the bound sensors
  (on a tie the earlier sensor keeps it); a position only when both latitude and longitude are
  known, as of the later of the two;
- tampered: the bound sensors whose latest ``tamper`` reading is set; tamper seen at: when each
  bound sensor's flag was last seen set in its whole cached series (set and cleared in a backlog);
- last seen and offline: from the device status, for the lot's own sensors only;
- when readings arrived (receive times, a device's recent arrivals), the GPS track of the device
  giving the position, and the messages the gateway refused: only where the source knows them
  (:class:`ArrivalSource`; ``refused`` from the caller).

Where the readings come from is the caller's business: anything with the :class:`SeriesSource`
shape (``lending.store.SeriesCache`` in the engine, an in-memory fake in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeGuard, runtime_checkable

from lending.domain.model import Lot
from lending.domain.quantity import Fix, History, LotObservation, Refusal

Series = Sequence[tuple[datetime, float]]  # (time, value), oldest first
DeviceStatus = tuple[bool, datetime | None]  # (online, last seen)

_NEWEST_WINS = ("temp_c", "humidity_pct", "lat", "lon")  # only the newest reading across sensors counts


class SeriesSource(Protocol):
    """Recent readings of one device's metric, oldest first; empty when there are none."""

    def get(self, device: str, metric: str, /) -> Series: ...


@runtime_checkable
class ArrivalSource(Protocol):
    """A source that also knows when readings arrived: ``received`` is aligned with ``get``;
    ``arrivals`` are a device's most recent (device time, receive time) pairs, in arrival order."""

    def get(self, device: str, metric: str, /) -> Series: ...

    def received(self, device: str, metric: str, /) -> Sequence[datetime]: ...

    def arrivals(self, device: str, /) -> Sequence[tuple[datetime, datetime]]: ...


@runtime_checkable
class HistorySource(Protocol):
    """A source that also keeps a longer, compact record of a series (weights, counts)."""

    def get(self, device: str, metric: str, /) -> Series: ...

    def history(self, device: str, metric: str, /) -> History | None: ...


_SUPPORTS: dict[tuple[type, type], bool] = {}


def _supports(source: object, protocol: Any) -> bool:
    """``isinstance(source, protocol)`` for a runtime-checkable protocol, answered once per class
    (the protocol check walks every member on each call: a tenth of an assessment's time)."""
    key = (type(source), protocol)
    known = _SUPPORTS.get(key)
    if known is None:
        known = _SUPPORTS[key] = isinstance(source, protocol)
    return known


def _has_history(source: SeriesSource) -> TypeGuard[HistorySource]:
    return _supports(source, HistorySource)


def _has_arrivals(source: SeriesSource) -> TypeGuard[ArrivalSource]:
    return _supports(source, ArrivalSource)


def _history(source: SeriesSource, device: str, metric: str) -> History | None:
    return source.history(device, metric) if _has_history(source) else None


def _received(source: SeriesSource, device: str, metric: str, series: Series) -> tuple[datetime, ...]:
    """Receive times aligned with ``series``; empty when the source does not know them."""
    if not _has_arrivals(source):
        return ()
    received = tuple(source.received(device, metric))
    return received if len(received) == len(series) else ()


def _track(source: SeriesSource, device: str) -> tuple[Fix, ...]:
    """The device's GPS fixes (latitude and longitude of one message), oldest first."""
    lat, lon = source.get(device, "lat"), source.get(device, "lon")
    if not lat or not lon:
        return ()
    lons = dict(lon)
    speeds = dict(source.get(device, "speed_kmh"))
    received = _received(source, device, "lat", lat) or tuple(t for t, _ in lat)
    return tuple(Fix(t, r, v, lons[t], speeds.get(t)) for (t, v), r in zip(lat, received, strict=True)
                 if t in lons)


def observe(lot: Lot, source: SeriesSource, status: Mapping[str, DeviceStatus],
            now: datetime, door_window: timedelta,
            refused: Mapping[str, Sequence[Refusal]] | None = None) -> LotObservation:
    """The lot's observation as of ``now`` from its bound devices' readings and status. A door
    opening counts while its device time or its arrival is inside ``door_window`` (a device
    clock hours behind, or a backlog, must not hide it)."""
    weight: Series = ()
    rfid: Series = ()
    weight_received: tuple[datetime, ...] = ()
    rfid_received: tuple[datetime, ...] = ()
    weight_history: History | None = None
    rfid_history: History | None = None
    doors: list[tuple[datetime, datetime | None, str]] = []
    latest_device: dict[str, str] = {}
    position_received: dict[str, datetime] = {}
    arrivals: dict[str, tuple[tuple[datetime, datetime], ...]] = {}
    latest: dict[str, tuple[datetime, float]] = {}
    tampered: set[str] = set()
    tamper_seen_at: dict[str, datetime] = {}
    last_seen: dict[str, datetime] = {}
    offline: set[str] = set()
    for device in lot.sensors:
        if not weight:
            weight = source.get(device, "weight_kg")
            weight_received = _received(source, device, "weight_kg", weight)
            weight_history = _history(source, device, "weight_kg")
        if not rfid:
            rfid = source.get(device, "rfid_count")
            rfid_received = _received(source, device, "rfid_count", rfid)
            rfid_history = _history(source, device, "rfid_count")
        door_series = source.get(device, "door_open")
        door_received = _received(source, device, "door_open", door_series)
        for i, (t, v) in enumerate(door_series):
            arrived = door_received[i] if door_received else None
            if v and (now - t <= door_window or (arrived is not None and now - arrived <= door_window)):
                doors.append((t, arrived, device))
        for metric in _NEWEST_WINS:
            values = source.get(device, metric)
            if values and (metric not in latest or values[-1][0] > latest[metric][0]):
                latest[metric] = values[-1]
                latest_device[metric] = device
        if _has_arrivals(source):
            arrivals[device] = tuple(source.arrivals(device))
            lat = source.get(device, "lat")
            lat_received = _received(source, device, "lat", lat)
            if lat_received:
                position_received[device] = lat_received[-1]
        tamper = source.get(device, "tamper")
        if tamper and tamper[-1][1]:
            tampered.add(device)
        set_at = [t for t, v in tamper if v]  # every reading, not only the latest (backlogs)
        if set_at:
            tamper_seen_at[device] = max(set_at)
        state = status.get(device)
        if state is not None:
            online, seen = state
            if seen is not None:
                last_seen[device] = seen
            if not online:
                offline.add(device)
    position = None
    position_at = None
    track: tuple[Fix, ...] = ()
    if "lat" in latest and "lon" in latest:
        position = (latest["lat"][1], latest["lon"][1])
        position_at = max(latest["lat"][0], latest["lon"][0])
        track = _track(source, latest_device["lat"])
    doors.sort(key=lambda d: d[0])
    known_arrivals = all(arrived is not None for _, arrived, _ in doors)
    return LotObservation(
        now=now,
        weight_times=tuple(t for t, _ in weight), weight_kg=tuple(v for _, v in weight),
        rfid_times=tuple(t for t, _ in rfid), rfid_count=tuple(v for _, v in rfid),
        last_seen=last_seen, offline=frozenset(offline), tampered=frozenset(tampered),
        tamper_seen_at=tamper_seen_at,
        door_open_at=tuple(t for t, _, _ in doors),
        temp_c=latest["temp_c"][1] if "temp_c" in latest else None,
        humidity_pct=latest["humidity_pct"][1] if "humidity_pct" in latest else None,
        position=position, position_at=position_at,
        weight_received=weight_received, rfid_received=rfid_received,
        weight_history=weight_history if weight else None,
        rfid_history=rfid_history if rfid else None,
        door_open_received=tuple(a for _, a, _ in doors if a is not None) if known_arrivals else (),
        door_open_devices=tuple(d for _, _, d in doors),
        arrivals=arrivals, track=track, position_received=position_received,
        refused={d: tuple(refused[d]) for d in lot.sensors if refused and refused.get(d)},
    )
