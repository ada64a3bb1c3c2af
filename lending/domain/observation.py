"""A lot's observation from its bound devices' readings and status: the rule that says which
sensor's series counts and which latest reading wins.

- weight and RFID count: the series of the first bound sensor, in ``lot.sensors`` order, that has
  one (the two channels may come from different sensors);
- door openings: every truthy ``door_open`` reading of any bound sensor no older than the window,
  oldest first;
- temperature, humidity, latitude and longitude: each the latest reading across the bound sensors
  (on a tie the earlier sensor keeps it); a position only when both latitude and longitude are
  known, as of the later of the two;
- tampered: the bound sensors whose latest ``tamper`` reading is set;
- last seen and offline: from the device status, for the lot's own sensors only.

Where the readings come from is the caller's business: anything with the :class:`SeriesSource`
shape (``lending.store.SeriesCache`` in the engine, an in-memory fake in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from lending.domain.model import Lot
from lending.domain.quantity import LotObservation

Series = Sequence[tuple[datetime, float]]  # (time, value), oldest first
DeviceStatus = tuple[bool, datetime | None]  # (online, last seen)

_NEWEST_WINS = ("temp_c", "humidity_pct", "lat", "lon")  # only the newest reading across sensors counts


class SeriesSource(Protocol):
    """Recent readings of one device's metric, oldest first; empty when there are none."""

    def get(self, device: str, metric: str, /) -> Series: ...


def observe(lot: Lot, source: SeriesSource, status: Mapping[str, DeviceStatus],
            now: datetime, door_window: timedelta) -> LotObservation:
    """The lot's observation as of ``now`` from its bound devices' readings and status."""
    weight: Series = ()
    rfid: Series = ()
    doors: list[datetime] = []
    latest: dict[str, tuple[datetime, float]] = {}
    tampered: set[str] = set()
    last_seen: dict[str, datetime] = {}
    offline: set[str] = set()
    for device in lot.sensors:
        weight = weight or source.get(device, "weight_kg")
        rfid = rfid or source.get(device, "rfid_count")
        doors.extend(t for t, v in source.get(device, "door_open") if v and now - t <= door_window)
        for metric in _NEWEST_WINS:
            values = source.get(device, metric)
            if values and (metric not in latest or values[-1][0] > latest[metric][0]):
                latest[metric] = values[-1]
        tamper = source.get(device, "tamper")
        if tamper and tamper[-1][1]:
            tampered.add(device)
        state = status.get(device)
        if state is not None:
            online, seen = state
            if seen is not None:
                last_seen[device] = seen
            if not online:
                offline.add(device)
    position = None
    position_at = None
    if "lat" in latest and "lon" in latest:
        position = (latest["lat"][1], latest["lon"][1])
        position_at = max(latest["lat"][0], latest["lon"][0])
    return LotObservation(
        now=now,
        weight_times=tuple(t for t, _ in weight), weight_kg=tuple(v for _, v in weight),
        rfid_times=tuple(t for t, _ in rfid), rfid_count=tuple(v for _, v in rfid),
        last_seen=last_seen, offline=frozenset(offline), tampered=frozenset(tampered),
        door_open_at=tuple(sorted(doors)),
        temp_c=latest["temp_c"][1] if "temp_c" in latest else None,
        humidity_pct=latest["humidity_pct"][1] if "humidity_pct" in latest else None,
        position=position, position_at=position_at,
    )
