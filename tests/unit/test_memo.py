"""The one-entry identity memo answers only the very same inputs again."""

from __future__ import annotations

from datetime import UTC, datetime

from lending.domain.memo import LastCall
from lending.domain.model import Lot
from lending.domain.quantity import LotObservation, TrustPolicy, channels, compute_channels


def test_only_the_very_same_inputs_are_answered_again() -> None:
    memo: LastCall[str] = LastCall()
    a, b = ["x"], ["x"]  # equal, not the same object
    assert memo.get(a) is None
    memo.put("answer", a)
    assert memo.get(a) == "answer"
    assert memo.get(b) is None and memo.get(a, a) is None and memo.get() is None


def test_channels_asked_twice_reuse_the_answer_and_a_new_observation_does_not() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    lot = Lot("L1", "F1", "wheat", 100.0, 20.0, "REG-1")
    obs = LotObservation(now=now, rfid_times=(now,), rfid_count=(100.0,))
    policy = TrustPolicy()
    first = channels(lot, obs, policy)
    assert channels(lot, obs, policy) is first
    other = LotObservation(now=now, rfid_times=(now,), rfid_count=(40.0,))
    fresh = channels(lot, other, policy)
    assert fresh is not first and fresh.by_count == compute_channels(lot, other, policy).by_count
    assert fresh.by_count != first.by_count
