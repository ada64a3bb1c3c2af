"""Observing a lot from its bound sensors' readings and status: which series counts, which latest
reading wins, which devices are tampered with or offline. An in-memory source, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from lending.domain.model import Lot
from lending.domain.observation import DeviceStatus, SeriesSource, observe
from lending.domain.quantity import LotObservation

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=2)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


class FakeSource:
    """Readings by (device, metric), oldest first."""

    def __init__(self, readings: Mapping[tuple[str, str], Sequence[tuple[datetime, float]]]) -> None:
        self.readings = dict(readings)

    def get(self, device_id: str, metric: str) -> Sequence[tuple[datetime, float]]:
        return self.readings.get((device_id, metric), ())


def lot(*sensors: str) -> Lot:
    return Lot("L1", "F1", "coffee", 100.0, 60.0, "REG-1", sensors=sensors)


def run(sensors: Sequence[str], readings: Mapping[tuple[str, str], Sequence[tuple[datetime, float]]],
        status: Mapping[str, DeviceStatus] | None = None) -> LotObservation:
    source: SeriesSource = FakeSource(readings)
    return observe(lot(*sensors), source, status or {}, NOW, WINDOW)


def test_weight_from_the_first_sensor_in_lot_order_that_has_one() -> None:
    first = [(ago(10), 500.0), (ago(5), 490.0)]
    later = [(ago(1), 999.0)]
    obs = run(["a", "b", "c"], {("b", "weight_kg"): first, ("c", "weight_kg"): later})
    assert obs.weight_times == (ago(10), ago(5))
    assert obs.weight_kg == (500.0, 490.0)
    assert obs.latest_weight == 490.0


def test_rfid_may_come_from_another_sensor_than_the_weight() -> None:
    obs = run(["a", "b"], {("a", "weight_kg"): [(ago(3), 600.0)],
                           ("b", "rfid_count"): [(ago(4), 9.0), (ago(2), 10.0)]})
    assert obs.weight_kg == (600.0,)
    assert obs.rfid_times == (ago(4), ago(2))
    assert obs.rfid_count == (9.0, 10.0)
    assert obs.latest_count == 10.0


def test_door_openings_inside_the_window_and_truthy_only_sorted() -> None:
    obs = run(["a", "b"], {
        ("a", "door_open"): [(ago(180), 1.0), (ago(90), 1.0), (ago(30), 0.0), (ago(10), 1.0)],
        ("b", "door_open"): [(ago(120), 1.0), (ago(45), 1.0), (ago(121), 1.0)],
    })
    # 180 and 121 minutes ago are outside the 2 h window, 120 is on its edge; 30 minutes ago is closed
    assert obs.door_open_at == (ago(120), ago(90), ago(45), ago(10))


def test_latest_condition_and_position_across_two_sensors_by_time() -> None:
    obs = run(["a", "b"], {
        ("a", "temp_c"): [(ago(20), 30.0), (ago(2), 21.0)],
        ("b", "temp_c"): [(ago(5), 25.0)],
        ("a", "humidity_pct"): [(ago(8), 60.0)],
        ("b", "humidity_pct"): [(ago(1), 65.0)],
        ("a", "lat"): [(ago(3), 10.5)],
        ("b", "lat"): [(ago(6), 11.0)],
        ("a", "lon"): [(ago(9), 20.0)],
        ("b", "lon"): [(ago(4), 20.5)],
    })
    assert obs.temp_c == 21.0
    assert obs.humidity_pct == 65.0
    assert obs.position == (10.5, 20.5)
    assert obs.position_at == ago(3)  # the later of the latest latitude (3 min) and longitude (4 min)


def test_a_tie_in_time_keeps_the_earlier_sensors_reading() -> None:
    obs = run(["a", "b"], {("a", "temp_c"): [(ago(2), 21.0)], ("b", "temp_c"): [(ago(2), 35.0)]})
    assert obs.temp_c == 21.0


def test_position_only_when_both_latitude_and_longitude_exist() -> None:
    only_lat = run(["a", "b"], {("a", "lat"): [(ago(1), 10.0)], ("b", "temp_c"): [(ago(1), 5.0)]})
    assert only_lat.position is None
    assert only_lat.position_at is None
    split = run(["a", "b"], {("a", "lat"): [(ago(7), 10.0)], ("b", "lon"): [(ago(9), 20.0)]})
    assert split.position == (10.0, 20.0)
    assert split.position_at == ago(7)


def test_tampered_only_when_the_latest_tamper_reading_is_set() -> None:
    obs = run(["a", "b", "c", "d"], {
        ("a", "tamper"): [(ago(10), 0.0), (ago(1), 1.0)],  # set now
        ("b", "tamper"): [(ago(10), 1.0), (ago(1), 0.0)],  # was set, cleared since
        ("c", "tamper"): [(ago(1), 0.0)],
    })
    assert obs.tampered == frozenset({"a"})


def test_offline_and_last_seen_only_for_the_lots_own_sensors() -> None:
    status: dict[str, DeviceStatus] = {
        "a": (True, ago(1)),
        "b": (False, ago(40)),
        "c": (False, None),  # offline, never seen
        "other": (False, ago(2)),  # another lot's device
    }
    obs = run(["a", "b", "c", "d"], {}, status)
    assert obs.last_seen == {"a": ago(1), "b": ago(40)}
    assert obs.offline == frozenset({"b", "c"})


def test_a_lot_with_no_readings() -> None:
    obs = run(["a", "b"], {("other", "weight_kg"): [(ago(1), 100.0)]}, {"other": (False, ago(1))})
    assert obs == LotObservation(now=NOW)
    assert obs.latest_weight is None
    assert obs.latest_count is None


def test_a_lot_with_no_sensors() -> None:
    assert run([], {("a", "weight_kg"): [(ago(1), 100.0)]}, {"a": (True, ago(1))}) == LotObservation(now=NOW)
