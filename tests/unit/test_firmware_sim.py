"""Unit tests of the device simulator's pure parts: models, fleet, payload, outbox, boot counter."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from firmware_sim.boot import BOOT_FILE, BootStore
from firmware_sim.device_models import (
    DeviceSpec,
    Readings,
    Route,
    build_model,
    fleet_mix,
    make_fleet,
)
from firmware_sim.messages import Sequencer, encode_telemetry, online_payload
from firmware_sim.outbox import Outbox
from firmware_sim.scenarios import SCENARIOS, make_scenario
from telemetry.contract.catalogue import CATALOGUE

STEPS = 2_000
KINDS = ("warehouse", "line", "vehicle")


def run_model(spec: DeviceSpec, steps: int = STEPS, dt_s: float = 1.0) -> list[Readings]:
    model = build_model(spec)
    return [model.step(dt_s) for _ in range(steps)]


def assert_in_catalogue(readings: Readings) -> None:
    for name, value in readings.items():
        metric = CATALOGUE[name]
        if metric.kind == "bool":
            assert isinstance(value, bool), name
        elif metric.kind == "count":
            assert isinstance(value, int) and not isinstance(value, bool), name
        else:
            assert isinstance(value, float), name
        assert metric.low <= value <= metric.high, (name, value)


@pytest.fixture(scope="module")
def fleet() -> list[DeviceSpec]:
    return make_fleet(30, tenant="acme", seed=11)


@pytest.mark.parametrize("dt_s", [0.05, 1.0, 60.0])
def test_readings_stay_within_catalogue_ranges(fleet: list[DeviceSpec], dt_s: float) -> None:
    assert {spec.kind for spec in fleet} == set(KINDS)
    for spec in fleet:
        for readings in run_model(spec, steps=500, dt_s=dt_s):
            assert_in_catalogue(readings)


def test_each_kind_reports_its_metrics(fleet: list[DeviceSpec]) -> None:
    expected = {
        "warehouse": {
            "weight_kg", "rfid_count", "door_open", "temp_c", "humidity_pct", "tamper",
            "power_v", "camera_ok",
        },
        "line": {"line_count", "line_running", "power_v"},
        "vehicle": {"lat", "lon", "speed_kmh", "tamper", "temp_c"},
    }  # fmt: skip
    for spec in fleet:
        assert set(build_model(spec).step(1.0)) == expected[spec.kind]


def test_warehouse_weight_agrees_with_rfid_count(fleet: list[DeviceSpec]) -> None:
    for spec in (s for s in fleet if s.kind == "warehouse"):
        unit_kg = spec.parameters["unit_weight_kg"]
        for r in run_model(spec, steps=500, dt_s=60.0):
            expected_kg = float(r["rfid_count"]) * unit_kg
            assert abs(float(r["weight_kg"]) - expected_kg) <= 0.01 * expected_kg + 20
            assert r["tamper"] is False and r["camera_ok"] is True


def test_line_count_never_goes_back_and_grows_while_running(fleet: list[DeviceSpec]) -> None:
    for spec in (s for s in fleet if s.kind == "line"):
        series = run_model(spec, steps=STEPS, dt_s=1.0)
        counts = [int(r["line_count"]) for r in series]
        assert all(b >= a for a, b in pairwise(counts))
        assert counts[-1] > counts[0]
        for before, now in pairwise(series):
            if not now["line_running"]:
                assert now["line_count"] == before["line_count"]


def test_vehicle_moves_along_its_route(fleet: list[DeviceSpec]) -> None:
    for spec in (s for s in fleet if s.kind == "vehicle"):
        route = spec.parameters["route"]
        lats = [p[0] for p in route]
        lons = [p[1] for p in route]
        series = run_model(spec, steps=STEPS, dt_s=5.0)
        for r in series:
            assert min(lats) - 1e-6 <= float(r["lat"]) <= max(lats) + 1e-6
            assert min(lons) - 1e-6 <= float(r["lon"]) <= max(lons) + 1e-6
        assert len({(r["lat"], r["lon"]) for r in series}) > 10
        assert any(float(r["speed_kmh"]) > 0 for r in series)


def test_route_wraps_around_and_tolerates_a_single_point() -> None:
    route = Route([[0.0, 0.0], [0.0, 1.0]])
    assert route.locate(0.0) == (0.0, 0.0)
    assert route.locate(route.length_km) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert route.locate(route.length_km / 4)[1] == pytest.approx(0.5)
    assert Route([[1.0, 2.0]]).locate(123.0) == (1.0, 2.0)


def test_models_replay_from_their_seed(fleet: list[DeviceSpec]) -> None:
    for spec in fleet[::7]:
        assert run_model(spec, steps=50) == run_model(spec, steps=50)


def test_make_fleet_is_deterministic_with_ids_and_mix() -> None:
    fleet = make_fleet(10, tenant="t1", seed=3)
    assert fleet == make_fleet(10, tenant="t1", seed=3)
    assert make_fleet(10, tenant="t1", seed=4) != fleet
    assert [s.device_id for s in fleet] == [
        *(f"wh-{i:04d}" for i in range(1, 7)),
        "line-0001", "line-0002", "veh-0001", "veh-0002",
    ]  # fmt: skip
    assert all(s.tenant == "t1" for s in fleet)
    assert len({s.seed for s in fleet}) == len(fleet)


def test_fleet_mix_is_mostly_warehouses() -> None:
    assert make_fleet(1)[0].kind == "warehouse"
    assert make_fleet(1)[0].device_id == "wh-0001"
    assert make_fleet(0) == []
    assert fleet_mix(1000) == {"warehouse": 600, "line": 200, "vehicle": 200}
    for n in range(1, 60):
        mix = fleet_mix(n)
        assert sum(mix.values()) == n
        assert mix["warehouse"] >= max(mix["line"], mix["vehicle"])


def test_a_device_keeps_its_spec_when_the_fleet_grows() -> None:
    small, big = make_fleet(5, seed=9), make_fleet(50, seed=9)
    assert small[0] == big[0]


def test_sequencer_counts_from_zero_within_a_boot() -> None:
    seq = Sequencer(boot=4)
    docs = [json.loads(seq.next_payload(1_700_000_000_000 + i, {"temp_c": 1.5})) for i in range(3)]
    assert [(d["boot"], d["seq"]) for d in docs] == [(4, 0), (4, 1), (4, 2)]
    assert docs[0] == {"boot": 4, "seq": 0, "ts": 1_700_000_000_000, "readings": {"temp_c": 1.5}}


def test_payload_is_compact_utf8_json_and_refuses_non_finite() -> None:
    raw = encode_telemetry(1, 2, 3, {"door_open": True, "rfid_count": 5})
    assert raw == b'{"boot":1,"seq":2,"ts":3,"readings":{"door_open":true,"rfid_count":5}}'
    assert json.loads(online_payload(7)) == {"state": "online", "boot": 7}
    with pytest.raises(ValueError):
        encode_telemetry(1, 2, 3, {"temp_c": float("nan")})


def test_outbox_keeps_unacknowledged_messages_in_order() -> None:
    box = Outbox(max_messages=10)
    keys = [box.put("t", f"m{i}".encode()).key for i in range(5)]
    sent = [box.next_unsent() for _ in range(5)]
    assert [m.key for m in sent if m] == keys
    assert box.next_unsent() is None
    assert box.ack(keys[1]) and box.ack(keys[3])
    assert [m.payload for m in box] == [b"m0", b"m2", b"m4"]
    assert len(box) == 3 and box.acked == 2


def test_outbox_resends_identical_bytes_after_rewind() -> None:
    box = Outbox()
    payloads = [Sequencer(boot=1).next_payload(i, {"temp_c": float(i)}) for i in range(3)]
    for payload in payloads:
        box.put("pw/v1/t/d/telemetry", payload)
    first = [box.next_unsent() for _ in range(3)]
    assert box.ack(first[0].key)  # type: ignore[union-attr]
    assert box.rewind() == 2
    again = [box.next_unsent() for _ in range(2)]
    assert again == first[1:]
    assert [m.payload for m in again if m] == payloads[1:]
    assert box.resent == 2 and box.next_unsent() is None


def test_outbox_new_messages_after_rewind_are_not_counted_as_resent() -> None:
    box = Outbox()
    box.put("t", b"a")
    assert box.next_unsent() is not None
    box.put("t", b"b")  # produced while disconnected, never sent
    box.rewind()
    assert [m.payload for m in (box.next_unsent(), box.next_unsent()) if m] == [b"a", b"b"]
    assert box.resent == 1
    assert box.unsent == 0


def test_outbox_drops_oldest_when_full_and_counts() -> None:
    box = Outbox(max_messages=3)
    keys = [box.put("t", bytes([i])).key for i in range(5)]
    assert box.dropped == 2 and len(box) == 3
    assert [m.payload for m in box] == [bytes([2]), bytes([3]), bytes([4])]
    assert box.ack(keys[0]) is False
    assert box.next_unsent().payload == bytes([2])  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        Outbox(max_messages=0)


def test_boot_counter_increments_and_persists(tmp_path: Path) -> None:
    store = BootStore(tmp_path / "state")
    assert store.next_boot("wh-0001") == 1
    assert store.next_boot("wh-0001") == 2
    assert store.next_boots(["wh-0001", "veh-0001"]) == {"wh-0001": 3, "veh-0001": 1}
    reopened = BootStore(tmp_path / "state")
    assert reopened.read() == {"wh-0001": 3, "veh-0001": 1}
    assert reopened.next_boot("veh-0001") == 2
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        BOOT_FILE,
        BOOT_FILE + ".lock",
    ]


def test_boot_counter_refuses_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / BOOT_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt"):
        BootStore(tmp_path).next_boot("wh-0001")


def test_normal_scenario_changes_nothing_and_unknown_names_fail() -> None:
    spec = make_fleet(1)[0]
    readings: Readings = {"weight_kg": 10.0}
    assert "normal" in SCENARIOS
    assert make_scenario("normal", spec).apply(0, 0.0, dict(readings)) == readings
    with pytest.raises(ValueError, match="unknown scenario"):
        make_scenario("no-such-scenario", spec)
