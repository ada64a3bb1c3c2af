"""Properties of the goods ledger, over random removals, releases, noise and reporting intervals:
the shortfall never exceeds what actually left (beyond the sensors' noise), a release never
explains more than its quantity, and so no release hides more than its quantity of a theft."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lending.domain.ledger import Account, account
from lending.domain.model import Lot, ReleaseOrder, ReleaseStatus
from lending.domain.quantity import LotObservation, TrustPolicy
from lending.domain.rules import RulePolicy

START = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
POLICY = RulePolicy()
TRUST = TrustPolicy()
LOAD_CELL_BAND = 0.002  # a weight reading is never further than this from the truth
RFID_MISS = 0.02  # a read misses at most this share of the tags, and never over-counts
CASES = settings(max_examples=80, deadline=None)


@dataclass(frozen=True)
class Case:
    declared: float  # units pledged at the start
    unit_kg: float
    step_s: float
    n: int
    removals: tuple[tuple[int, float], ...]  # (sample index, units) that physically left
    releases: tuple[tuple[int, float], ...]  # (sample index of execution, units)
    seed: int

    @property
    def removed(self) -> float:
        return sum(u for _, u in self.removals)

    @property
    def released(self) -> float:
        return sum(q for _, q in self.releases)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    declared = float(draw(st.integers(50, 20_000)))
    step_s = draw(st.sampled_from([1.0, 5.0, 60.0]))
    quiet = max(3, math.ceil(60.0 / step_s)) + 3  # the last minute (≥ 3 samples): no removal
    n = draw(st.integers(quiet + 20, quiet + 400))
    last = n - quiet
    removals = draw(st.lists(st.tuples(st.integers(0, last), st.floats(0.0, 1.0)), max_size=6))
    budget = 0.6 * declared  # goods that leave: at most 60 % of the lot
    total = sum(f for _, f in removals) or 1.0
    scaled = tuple((i, round(f / total * budget * draw(st.floats(0.0, 1.0)))) for i, f in removals)
    releases = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, int(0.3 * declared))),
                             max_size=3))
    return Case(declared, draw(st.sampled_from([1.0, 20.0, 25.0])), step_s, n, scaled,
                tuple((i, float(q)) for i, q in releases), draw(st.integers(0, 2**32 - 1)))


def observe(case: Case, *, weight: bool) -> tuple[Lot, LotObservation, list[ReleaseOrder]]:
    rng = np.random.default_rng(case.seed)
    times = [START + timedelta(seconds=case.step_s * i) for i in range(case.n)]
    left = np.zeros(case.n)
    for i, units in case.removals:
        left[i:] += units
    true = np.maximum(case.declared - left, 0.0)
    error = np.clip(rng.normal(0.0, 0.001, case.n), -LOAD_CELL_BAND, LOAD_CELL_BAND)
    weights = true * case.unit_kg * (1.0 + error)
    missed = rng.random(case.n) < 0.2
    counts = true - np.where(missed, np.floor(true * rng.uniform(0.0, RFID_MISS, case.n)), 0.0)
    releases = [ReleaseOrder(f"rel-{k}", "lot-1", q, requested_at=times[i])
                .advance(ReleaseStatus.APPROVED, times[i]).advance(ReleaseStatus.EXECUTED, times[i])
                for k, (i, q) in enumerate(case.releases)]
    # executing a release took its quantity off the declared quantity (never below zero)
    declared = max(0.0, case.declared - case.released)
    lot = Lot("lot-1", "fac-1", "steel", declared, case.unit_kg, "REG-1", ("lc-1", "rfid-1"))
    obs = LotObservation(
        now=times[-1] + timedelta(seconds=1),
        weight_times=tuple(times) if weight else (), weight_kg=tuple(weights) if weight else (),
        rfid_times=tuple(times), rfid_count=tuple(counts))
    return lot, obs, releases


def ledger_of(case: Case, *, weight: bool) -> tuple[Account, Lot]:
    lot, obs, releases = observe(case, weight=weight)
    ledger = account(lot, obs, releases, POLICY, TRUST)
    assert ledger is not None
    return ledger, lot


def tolerance(case: Case, *, weight: bool) -> float:
    """How far the sensors may misstate the goods: the load cell's band, or what RFID misses."""
    return (LOAD_CELL_BAND if weight else RFID_MISS) * case.declared + 1e-6


@CASES
@given(cases(), st.booleans())
def test_the_shortfall_never_exceeds_what_actually_left(case: Case, weight: bool) -> None:
    ledger, lot = ledger_of(case, weight=weight)
    assert ledger.metric == ("weight_kg" if weight else "rfid_count")
    actually_left = max(0.0, case.removed - min(case.released, case.declared))
    assert 0.0 <= ledger.shortfall <= actually_left + tolerance(case, weight=weight)
    assert ledger.expected == lot.declared_quantity


@CASES
@given(cases(), st.booleans())
def test_a_release_never_explains_more_than_its_quantity(case: Case, weight: bool) -> None:
    ledger, _ = ledger_of(case, weight=weight)
    for use in ledger.releases:
        assert 0.0 <= use.explained <= use.quantity
    explained = sum(u.explained for u in ledger.releases)
    assert explained <= max(0.0, ledger.gross_drop) + 1e-9
    # whatever the releases, the goods that left beyond their quantities stay short
    assert ledger.shortfall >= (case.removed - case.released - tolerance(case, weight=weight))
    # and what they do not explain is the shortfall: expected − current
    assert math.isclose(ledger.shortfall, max(0.0, ledger.expected - ledger.current), abs_tol=1e-9)


@CASES
@given(cases())
def test_a_theft_past_the_raise_line_is_never_cleared(case: Case) -> None:
    ledger, _ = ledger_of(case, weight=True)
    short = case.removed - min(case.released, case.declared) - tolerance(case, weight=True)
    if short > ledger.threshold:
        assert ledger.signal.value != "clear"
