"""telemetry.writer pure helpers: the rows a batch stages and the per-device last-seen rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telemetry.contract.payload import Accepted, Reading, StatusChange
from telemetry.writer import (
    _READING_COLUMNS,
    _READING_TYPES,
    Batch,
    DeadLetter,
    WriteResult,
    _last_seen,
    _reading_rows,
)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def msg(device: str, seq: int, *, boot: int = 1, tenant: str = "acme", received_s: float = 0,
        device_s: float = 0, readings: tuple[Reading, ...] = (Reading("temp_c", 20.0),)
        ) -> Accepted:
    return Accepted(device, tenant, boot, seq, T0 + timedelta(seconds=device_s),
                    T0 + timedelta(seconds=received_s), readings)


def test_reading_rows_one_row_per_reading_with_the_message_identity() -> None:
    a = msg("wh-1", 7, boot=2, device_s=-1, received_s=0.5,
            readings=(Reading("weight_kg", 100.0), Reading("door_open", 1.0)))
    b = msg("veh-1", 9, boot=5, device_s=-2, received_s=0.7,
            readings=(Reading("lat", 31.2),))
    rows = list(_reading_rows([a, b]))
    assert rows == [
        (a.device_time, "wh-1", "weight_kg", 100.0, 2, 7, a.received_at),
        (a.device_time, "wh-1", "door_open", 1.0, 2, 7, a.received_at),
        (b.device_time, "veh-1", "lat", 31.2, 5, 9, b.received_at),
    ]
    # the time column is the device's clock, not the gateway's
    assert rows[0][0] == T0 - timedelta(seconds=1)
    assert rows[0][6] == T0 + timedelta(seconds=0.5)


def test_reading_rows_match_the_staging_columns() -> None:
    row = next(iter(_reading_rows([msg("d", 1)])))
    assert len(row) == len(_READING_TYPES) == len(_READING_COLUMNS.strip("()").split(","))


def test_reading_rows_of_nothing() -> None:
    assert list(_reading_rows([])) == []
    assert list(_reading_rows([msg("d", 1, readings=())])) == []


def test_reading_rows_is_lazy_over_an_iterator() -> None:
    rows = _reading_rows(iter([msg("d", 1), msg("d", 2)]))
    assert [r[5] for r in rows] == [1, 2]


def test_last_seen_keeps_the_latest_message_per_device() -> None:
    batch = [
        msg("wh-1", 1, received_s=1),
        msg("veh-1", 10, boot=4, tenant="globex", received_s=2),
        msg("wh-1", 3, received_s=5),
        msg("wh-1", 2, received_s=3),  # a redelivered older message does not move seq back
        msg("veh-1", 11, boot=4, tenant="globex", received_s=1),  # newer seq, received earlier
    ]
    devices, tenants, seen, boots, seqs = _last_seen(batch)
    latest = dict(zip(devices, zip(tenants, seen, boots, seqs, strict=True), strict=True))
    assert len(devices) == 2
    assert latest == {
        "wh-1": ("acme", T0 + timedelta(seconds=5), 1, 3),
        "veh-1": ("globex", T0 + timedelta(seconds=2), 4, 11),
    }


def test_last_seen_a_new_boot_outranks_any_seq_of_the_old_one() -> None:
    devices, _, _, boots, seqs = _last_seen([msg("d", 5, boot=2), msg("d", 900, boot=1)])
    assert devices == ["d"]
    assert (boots, seqs) == ([2], [5])


def test_last_seen_columns_are_parallel_arrays() -> None:
    cols = _last_seen([msg(f"d{i}", i, received_s=i) for i in range(5)])
    assert len(cols) == 5
    assert all(len(c) == 5 for c in cols)
    assert cols[0] == [f"d{i}" for i in range(5)]
    assert cols[4] == list(range(5))


def test_last_seen_of_nothing() -> None:
    assert _last_seen([]) == [[], [], [], [], []]


def test_write_result_duplicates() -> None:
    assert WriteResult(staged=10, inserted=7, dead_letters=2, status_changes=1).duplicates == 3
    assert WriteResult(staged=5, inserted=5, dead_letters=0, status_changes=0).duplicates == 0
    assert WriteResult(0, 0, 0, 0).duplicates == 0


def test_batch_length_counts_every_kind_of_message() -> None:
    batch = Batch()
    assert len(batch) == 0
    assert not batch
    batch.accepted.append(msg("d", 1))
    batch.dead.append(DeadLetter(T0, "pw/v1/a/d/telemetry", b"{", "malformed_json", "x", "d"))
    batch.status.append(StatusChange("d", "acme", False, T0))
    batch.status.append(StatusChange("d", "acme", True, T0))
    assert len(batch) == 4


def test_batches_do_not_share_lists() -> None:
    a, b = Batch(), Batch()
    a.accepted.append(msg("d", 1))
    assert b.accepted == []
