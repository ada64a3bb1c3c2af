"""A lot's work reused from an earlier assessment (lending.domain.assess.reusable) gives what a
full assessment gives: random facilities assessed at t0, then at a later t1 with new prices and
the same readings (the observation as of t1, as lending.store.ObservationCache builds it), with
and without the earlier lot phases. Every random book mixes lots that may be reused with lots
that must not (stale readings, thefts, releases, tampering, doors, skewed clocks, inspections,
refused messages, positions, arrivals leaving the skew window)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pytest

from lending.domain.alerts import (
    Alert,
    AlertStatus,
    AlertType,
    Finding,
    Severity,
    Signal,
    alert_key,
    reconcile,
)
from lending.domain.assess import Assessment, FacilityInputs, assess, assess_many, reusable
from lending.domain.inspection import Inspection
from lending.domain.limits import LimitSnapshot, compute_limit, lot_line
from lending.domain.memo import moved
from lending.domain.model import (
    Commodity,
    Facility,
    Lot,
    PricePoint,
    ProductTerms,
    ReleaseOrder,
    ReleaseStatus,
)
from lending.domain.quantity import LotObservation, Refusal, TrustPolicy
from lending.domain.rules import RulePolicy
from lending.domain.valuation import haircut

T0 = datetime(2024, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 at the sites (UTC+8): business hours
POLICY = RulePolicy()
TRUST = TrustPolicy()
COMMODITIES = {"copper": Commodity("copper", liquidation_days=10),
               "milk": Commodity("milk", temp_c=(2.0, 8.0), humidity_pct=(30.0, 60.0))}
FEATURES = ("plain", "plain", "plain", "stale", "nearly_stale", "theft", "release", "tamper",
            "tamper_old", "door", "door_old", "skew", "inspection", "refused", "position",
            "window_edge", "no_readings", "flat", "mismatch", "arrived_later")


def _prices(rng: random.Random, end: datetime, days: int = 30) -> tuple[PricePoint, ...]:
    price = 60_000.0
    out = []
    for d in range(days):
        price *= 1.0 + rng.gauss(0.0, 0.015)
        out.append(PricePoint("copper", end - timedelta(days=days - 1 - d), price))
    return tuple(out)


def _lot(rng: random.Random, fid: str, k: int, feature: str, t0: datetime
         ) -> tuple[Lot, LotObservation, list[ReleaseOrder], Inspection | None]:
    declared = rng.choice([200.0, 400.0, 1000.0])
    unit_kg = rng.choice([20.0, 50.0])
    lc, rf = f"lc-{fid}-{k}", f"rf-{fid}-{k}"
    lot = Lot(f"{fid}-lot{k}", fid, "copper", declared, unit_kg, f"REG-{fid}-{k}", (lc, rf),
              geofence=((31.0, 121.0), (31.0, 121.1), (31.1, 121.1), (31.1, 121.0))
              if feature == "position" else None)
    spacing = timedelta(seconds=rng.choice([5, 10, 30]))
    n = rng.randint(12, 60)
    newest = t0 - timedelta(seconds=rng.uniform(1, 100))
    if feature == "stale":
        newest = t0 - timedelta(minutes=rng.uniform(4, 40))
    elif feature == "nearly_stale":
        newest = t0 - TRUST.stale_after + timedelta(seconds=rng.uniform(1, 90))
    times = tuple(newest - spacing * (n - 1 - i) for i in range(n))
    weights = [declared * unit_kg + rng.gauss(0.0, 2.0) for _ in range(n)]
    counts = [declared - rng.choice([0, 0, 0, 1]) for _ in range(n)]
    if feature == "theft":
        cut = rng.randint(n // 2, n - 3)
        weights[cut:] = [w * rng.uniform(0.5, 0.9) for w in weights[cut:]]
        counts[cut:] = [c * 0.7 for c in counts[cut:]]
    if feature == "flat":
        weights = [declared * unit_kg] * n
    if feature == "mismatch":
        counts = [declared * 0.8] * n
    lag = timedelta(minutes=rng.uniform(6, 20)) if feature == "skew" else timedelta(
        seconds=rng.uniform(0.1, 2.0))
    arrivals = tuple((t, t + lag) for t in times)
    if feature == "window_edge":  # arrivals that leave the 30-min skew window between t0 and t1
        old = tuple((t0 - timedelta(minutes=30) + timedelta(seconds=s),) * 2 for s in (5, 20, 60))
        arrivals = old + arrivals
    if feature == "arrived_later":  # received after t0 (the store's clock ahead of the engine)
        arrivals = (*arrivals, (newest, t0 + timedelta(seconds=rng.uniform(1, 120))))
    received = tuple(r for _, r in arrivals[-n:])
    if feature == "no_readings":
        return lot, LotObservation(now=t0), [], None
    obs = LotObservation(
        now=t0, weight_times=times, weight_kg=tuple(weights), rfid_times=times,
        rfid_count=tuple(counts), last_seen={lc: newest, rf: newest},
        weight_received=received, rfid_received=received,
        arrivals={lc: arrivals, rf: arrivals})
    if feature in ("tamper", "tamper_old"):
        seen = t0 - (timedelta(minutes=5) if feature == "tamper" else timedelta(days=8))
        obs = replace(obs, tamper_seen_at={lc: seen})
    if feature in ("door", "door_old"):
        at = t0 - (timedelta(minutes=rng.uniform(1, 100)) if feature == "door" else
                   timedelta(hours=3))
        obs = replace(obs, door_open_at=(at,), door_open_received=(at,), door_open_devices=(lc,))
    if feature == "refused":
        obs = replace(obs, refused={lc: (Refusal(t0 - timedelta(minutes=rng.uniform(1, 20)),
                                                 rng.choice(["out_of_range", "bad_json"])),)})
    if feature == "position":
        obs = replace(obs, position=(31.05, 121.05), position_at=newest,
                      position_received={lc: newest})
    releases = []
    if feature == "release":
        releases = [ReleaseOrder(f"R-{lot.id}", lot.id, declared * 0.2, ReleaseStatus.EXECUTED,
                                 t0 - timedelta(minutes=20), t0 - timedelta(minutes=15),
                                 t0 - timedelta(minutes=rng.uniform(1, 14)))]
    inspection = None
    if feature == "inspection":
        inspection = Inspection(lot.id, declared * rng.choice([1.0, 0.8]), t0 - timedelta(hours=1),
                                "officer", declared, 0.0)
    return lot, obs, releases, inspection


def _book(seed: int) -> tuple[FacilityInputs, FacilityInputs, datetime]:
    """A facility as of t0 and as of t1 (new prices, the same readings, a later clock)."""
    rng = random.Random(seed)
    fid = f"fac{seed}"
    terms = ProductTerms(advance_rate=rng.uniform(0.5, 0.8))
    facility = Facility(fid, "b", rng.choice([1e6, 5e6, 5e7]), rng.uniform(0, 3e6), "CNY",
                        value_floor=rng.choice([0.0, 1e6]), terms=terms)
    lots, observations, releases, inspections = [], {}, [], {}
    for k in range(rng.randint(1, 5)):
        lot, obs, rel, insp = _lot(rng, fid, k, rng.choice(FEATURES), T0)
        lots.append(lot)
        observations[lot.id] = obs
        releases += rel
        if insp is not None:
            inspections[lot.id] = insp
    latest: dict[str, Alert] = {}
    for lot in lots:  # some lots with an open (or cleared) alert a clear finding acts on
        if rng.random() < 0.3:
            kind = rng.choice([AlertType.SENSOR_STALE, AlertType.SENSOR_OFFLINE,
                               AlertType.QUANTITY_MISMATCH, AlertType.SENSOR_FLATLINE])
            key = alert_key(kind, fid, lot.id)
            latest[key] = Alert(key, kind, Severity.WARNING, fid, lot.id, "earlier", {},
                                T0 - timedelta(hours=2), AlertStatus.OPEN,
                                auto_resolve=rng.random() < 0.5, cleared=rng.random() < 0.3,
                                id=rng.randint(1, 10_000))
    prices = _prices(rng, T0)
    before = FacilityInputs(facility, lots, COMMODITIES, observations, {"copper": prices},
                            releases=releases, latest_alerts=latest, inspections=inspections)
    t1 = T0 + rng.choice([timedelta(0), timedelta(seconds=rng.uniform(0, 90)),
                          timedelta(minutes=rng.uniform(1, 40))])
    moved = (*prices[:-1], replace(prices[-1], price=prices[-1].price * rng.uniform(0.8, 1.2),
                                   time=t1))
    after = replace(before, prices={"copper": moved},
                    observations={k: replace(o, now=t1) for k, o in observations.items()})
    return before, after, t1


def _comparable(finding: Finding) -> Finding:
    """A clear finding's message is never stored (the stale one names an age): left out."""
    return replace(finding, message="") if finding.signal is Signal.CLEAR else finding


def _same(full: Assessment, fast: Assessment) -> None:
    assert fast.snapshot == full.snapshot
    assert fast.verified == full.verified
    assert fast.alert_events == full.alert_events
    assert fast.limit_changed == full.limit_changed
    assert [_comparable(f) for f in fast.findings] == [_comparable(f) for f in full.findings]


def test_reused_lot_phases_give_the_full_assessment() -> None:
    reused = recomputed = 0
    for seed in range(400):
        before, after, t1 = _book(seed)
        first = assess(before, T0, POLICY, TRUST)
        after = replace(after, previous=first.snapshot)
        full = assess(after, t1, POLICY, TRUST)
        fast = assess(after, t1, POLICY, TRUST, previous=first.lots)
        _same(full, fast)
        # quiet lots are left out of the reconciliation: the events of reconciling everything
        assert fast.alert_events == reconcile(after.latest_alerts, fast.findings, t1)
        for lot in after.lots:
            if reusable(first.lots[lot.id], lot, after.commodities[lot.commodity],
                        after.observations[lot.id], after.releases,
                        after.inspections.get(lot.id), t1, POLICY, TRUST):
                reused += 1
            else:
                recomputed += 1
    assert reused > 100 and recomputed > 100  # both paths exercised


@pytest.mark.parametrize("change", ["readings", "policy", "lot", "earlier", "release"])
def test_anything_else_changed_is_recomputed(change: str) -> None:
    for seed in range(60):
        before, after, t1 = _book(seed)
        first = assess(before, T0, POLICY, TRUST)
        lot = after.lots[0]
        obs = after.observations[lot.id]
        if not obs.weight_kg:
            continue
        policy, releases = POLICY, list(after.releases)
        if change == "readings":
            obs = replace(obs, weight_kg=tuple(w for w in obs.weight_kg))  # equal, another object
        elif change == "policy":
            policy = RulePolicy()
        elif change == "lot":
            lot = replace(lot, declared_quantity=lot.declared_quantity + 1)
        elif change == "earlier":
            obs = replace(obs, now=T0 - timedelta(seconds=1))
            t1 = obs.now
        else:
            releases.append(ReleaseOrder("R-new", lot.id, 1.0))
        assert not reusable(first.lots[lot.id], lot, after.commodities[lot.commodity], obs,
                            releases, None, t1, policy, TRUST)


def _python_snapshot(inputs: FacilityInputs, assessment: Assessment,
                     now: datetime) -> LimitSnapshot:
    """The snapshot the facility-by-facility loop built before the value phase was vectorised:
    lot_line per lot, compute_limit summing in Python."""
    facility, lines = inputs.facility, []
    for lot in inputs.lots:
        commodity = inputs.commodities.get(lot.commodity) or Commodity(lot.commodity)
        history = inputs.prices.get(lot.commodity, ())
        latest = history[-1] if history else None
        lines.append(lot_line(lot.id, lot.commodity, lot.declared_quantity,
                              assessment.verified[lot.id],
                              None if latest is None else latest.price,
                              commodity.unit_price(1.0, lot.unit_weight_kg),
                              None if latest is None else latest.time,
                              haircut(history, commodity.liquidation_days, facility.terms),
                              facility.terms.advance_rate))
    return compute_limit(facility, lines, inputs.receivables, now)


def test_one_vectorised_pass_over_a_batch_gives_each_facility_its_assessment() -> None:
    """assess_many over a random book (with lot phases reused where they may be, facilities
    with other terms, without lots or without prices) gives, facility by facility, what assess
    gives, and the value phase's floats are the ones the Python loop (lot_line, compute_limit)
    gives, to the last bit; the snapshot stored (its inputs) is what dataclasses.asdict gives."""
    firsts, afters, t1s = [], [], []
    for seed in range(120):
        before, after, t1 = _book(seed)
        if seed % 7 == 0:  # other product terms
            terms = replace(after.facility.terms, base_haircut=0.1, advance_rate=0.45)
            after = replace(after, facility=replace(after.facility, terms=terms))
        if seed % 11 == 0:  # no lots
            after = replace(after, lots=[], observations={})
        if seed % 13 == 0:  # no price for the commodity
            after = replace(after, prices={})
        firsts.append(assess(before, T0, POLICY, TRUST))
        afters.append(replace(after, previous=firsts[-1].snapshot))
        t1s.append(t1)
    now = T0 + timedelta(seconds=30)  # one clock for the batch
    afters = [replace(a, observations={k: replace(o, now=now) for k, o in a.observations.items()})
              for a in afters]
    previous = {lot: r for first in firsts for lot, r in first.lots.items()}
    batch = assess_many(afters, now, POLICY, TRUST, previous)
    assert len(batch) == len(afters)
    reused = sum(1 for fast in batch for lot, r in fast.lots.items()
                 if r.findings is previous[lot].findings)
    assert 40 < reused < sum(len(fast.lots) for fast in batch) - 40  # both paths in one batch
    for inputs, fast in zip(afters, batch, strict=True):
        _same(assess(inputs, now, POLICY, TRUST), fast)
        assert fast.alert_events == reconcile(inputs.latest_alerts, fast.findings, now)
        _same(assess(inputs, now, POLICY, TRUST, previous=previous), fast)
        reference = _python_snapshot(inputs, fast, now)
        assert fast.snapshot == reference
        assert [(line.value, line.contribution) for line in fast.snapshot.lots] == [
            (line.value, line.contribution) for line in reference.lots]
        assert (fast.snapshot.collateral_value, fast.snapshot.trusted_collateral_value,
                fast.snapshot.lots_base) == (reference.collateral_value,
                                             reference.trusted_collateral_value,
                                             reference.lots_base)
        stored = asdict(fast.snapshot)
        stored["time"] = fast.snapshot.time.isoformat()
        stored["ltv"] = None if math.isinf(fast.snapshot.ltv) else fast.snapshot.ltv
        assert fast.snapshot.inputs() == stored
        assert json.dumps(fast.snapshot.inputs()) == json.dumps(stored)


def test_moved_is_replace_for_the_lot_phase_values() -> None:
    before, _, t1 = _book(3)
    first = assess(before, T0, POLICY, TRUST)
    for result in first.lots.values():
        assert moved(result, now=t1) == replace(result, now=t1)
        assert moved(result.obs, now=t1) == replace(result.obs, now=t1)
        assert moved(result.counted, stale_s=1.5) == replace(result.counted, stale_s=1.5)
    with pytest.raises(TypeError):
        moved(before.lots[0], declared_quantity=1.0)  # validated in __post_init__: not for moved
    with pytest.raises(TypeError):
        moved(first.snapshot, no_such_field=1)
