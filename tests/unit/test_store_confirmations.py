"""Store confirmations: the contract's encoding and a device outbox that keeps a message until the
store has it, not only the broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.outbox import Outbox
from telemetry.contract.confirm import (
    MAX_RANGES,
    Confirmation,
    decode_confirmation,
    encode_confirmations,
    stored_topic,
    to_ranges,
)


def test_topic_is_per_device() -> None:
    assert stored_topic("acme", "wh-1") == "pw/v1/acme/wh-1/stored"


def test_ranges_merge_runs_and_ignore_duplicates() -> None:
    assert to_ranges([5, 3, 4, 9, 4, 11, 10]) == [(3, 5), (9, 11)]
    assert to_ranges([]) == []


@given(st.sets(st.integers(0, 10_000), max_size=300), st.integers(0, 2**31 - 1))
def test_encoding_round_trips(seqs: set[int], boot: int) -> None:
    covered = set()
    for payload in encode_confirmations(boot, seqs):
        decoded = decode_confirmation(payload)
        assert decoded is not None and decoded.boot == boot
        for lo, hi in decoded.ranges:
            covered |= set(range(lo, hi + 1))
    assert covered == seqs


def test_large_confirmations_are_split() -> None:
    payloads = encode_confirmations(1, range(0, 4 * MAX_RANGES + 2, 2))  # no runs at all
    assert len(payloads) == 3
    assert all(decode_confirmation(p) is not None for p in payloads)


@pytest.mark.parametrize(
    "payload",
    [
        b"", b"null", b"[]", b"{", b"\xff\xfe", b'{"boot":1}', b'{"ranges":[]}',
        b'{"boot":1,"ranges":[],"x":1}', b'{"boot":-1,"ranges":[]}', b'{"boot":true,"ranges":[]}',
        b'{"boot":1.0,"ranges":[]}', b'{"boot":1,"ranges":{}}', b'{"boot":1,"ranges":[[1]]}',
        b'{"boot":1,"ranges":[[5,4]]}', b'{"boot":1,"ranges":[[1,"2"]]}',
        b'{"boot":1,"ranges":[[0,99999999999999999999]]}', b'{"boot":1,"ranges":[[1,2,3]]}',
        json.dumps({"boot": 1, "ranges": [[i, i] for i in range(MAX_RANGES + 1)]}).encode(),
        b"[" * 100_000, b" " * 70_000,
    ],
)
def test_hostile_confirmations_are_ignored(payload: bytes) -> None:
    assert decode_confirmation(payload) is None


def _box(timeout: float | None = 30.0) -> Outbox:
    box = Outbox(100, boot=7, confirm_timeout_s=timeout)
    for seq in range(5):
        box.put("t", f"m{seq}".encode(), seq)
    return box


def _send_all(box: Outbox, now: float) -> list[int]:
    sent = []
    while (message := box.next_unsent()) is not None:
        box.ack(message.key, now)
        sent.append(message.key)
    return sent


def test_a_pubacked_message_stays_until_the_store_confirms_it() -> None:
    box = _box()
    _send_all(box, now=0.0)
    assert box.acked == 5 and len(box) == 5 and box.unconfirmed == 5
    assert box.confirm(Confirmation(7, ((0, 1), (3, 3)))) == 3
    assert [m.seq for m in box] == [2, 4]
    assert box.confirmed == 3 and box.confirming
    assert not box.settled  # 2 and 4 are with the broker only


def test_a_confirmation_of_another_boot_confirms_nothing() -> None:
    box = _box()
    _send_all(box, now=0.0)
    assert box.confirm(Confirmation(6, ((0, 4),))) == 0
    assert len(box) == 5


def test_unconfirmed_messages_are_sent_again_after_the_timeout() -> None:
    box = _box(timeout=10)
    _send_all(box, now=0.0)
    box.confirm(Confirmation(7, ((0, 2),)))
    assert box.overdue(now=5.0) == 0 and box.next_unsent() is None
    assert box.overdue(now=10.5) == 2
    resent = _send_all(box, now=11.0)
    assert resent == [3, 4] and box.resent == 2 and box.resent_unconfirmed == 2
    box.confirm(Confirmation(7, ((3, 4),)))
    assert len(box) == 0 and box.settled


def test_a_reconnect_resends_unconfirmed_messages_at_once() -> None:
    box = _box()
    _send_all(box, now=0.0)
    box.confirm(Confirmation(7, ((0, 0),)))
    assert box.rewind() == 4
    assert _send_all(box, now=1.0) == [1, 2, 3, 4]


def test_without_a_confirming_gateway_a_puback_still_ends_the_wait() -> None:
    box = _box(timeout=10)
    _send_all(box, now=0.0)
    assert box.settled  # nothing waits for the broker; no store has ever confirmed
    assert box.rewind() == 0  # PUBACKed messages are not resent to a gateway that never confirms
    assert box.overdue(now=11.0) == 5
    assert len(box) == 0 and box.released_unconfirmed == 5 and box.resent_unconfirmed == 0


def test_confirmation_off_keeps_the_puback_contract() -> None:
    box = _box(timeout=None)
    _send_all(box, now=0.0)
    assert len(box) == 0 and box.unconfirmed == 0


def test_a_full_outbox_drops_unconfirmed_messages_first_in_order() -> None:
    box = Outbox(3, boot=1, confirm_timeout_s=30)
    for seq in range(3):
        box.put("t", b"x", seq)
    _send_all(box, now=0.0)
    box.put("t", b"x", 3)
    assert [m.seq for m in box] == [1, 2, 3] and box.dropped == 1
    assert box.confirm(Confirmation(1, ((0, 3),))) == 3  # seq 0 was dropped already


def test_a_huge_range_does_not_iterate_over_it() -> None:
    box = _box()
    _send_all(box, now=0.0)
    assert box.confirm(Confirmation(7, ((0, 2**62),))) == 5
