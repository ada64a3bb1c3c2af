"""The goods ledger: every unit of a pledged lot accounted for, whatever the pace of a theft.

**Expected quantity = pledged − released.** Executing a release takes its quantity off the lot's
declared quantity (:func:`lending.operations.advance_release`), so ``lot.declared_quantity`` is
what the lot should hold now, and the executed releases say when that changed: before a release
— less ``release_lead``, as goods may leave a little before their order is booked — the lot
should still have held its goods. A release therefore explains a drop up to its quantity and no
more, however long after it the drop comes.

**Shortfall = expected − the verified LEVEL** of the lot's quantity channel
(:func:`lending.domain.quantity.channels`): the load cell's median over its level window, or, where
no load cell weighs the lot or it reads nonsense while the RFID count vouches for the goods (a
cut cable is a sensor fault, not a theft), the RFID count's high quantile of its last reads. It
is a standing finding judged over the whole cached history:

- the raise line θ is the sensor's own noise (1.4826 × MAD of its first differences ÷ √2 over
  ``ledger_noise_window``) × ``ledger_noise_z``, at least ``ledger_floor_share`` of the expected
  quantity and ``ledger_min_units``, at most ``ledger_cap_share`` of it (below 2 %, so that a
  2 % theft is caught); the clear line is θ × ``ledger_clear_ratio``;
- *standing*: RAISE when the level's shortfall stayed above θ at every point of the last
  ``ledger_dwell`` (evaluated at up to ``ledger_dwell_points`` sample times);
- *fast*: a CUSUM of each sample's shortfall beyond θ, in units of θ × ``fast_tau``, over TIME
  (a sample weighs the time since the one before, at most ``fast_max_gap``), alarms above
  ``fast_h`` once ``fast_min_samples`` samples in a row are beyond θ, and restarts whenever a
  sample is back under the clear line: it adds speed, not coverage;
- HOLD between the lines; CLEAR under the clear line (both the level and the latest samples).

The magnitude is the shortfall now, expected − the level of the samples since the drop began
(within ``ledger_magnitude_window``), in units: an open alert escalates as the theft grows. The
evidence names the expected quantity, the levels, the shortfall, the releases consumed and by how
much, the windows and the lines. A CLEAR that a release booked within ``release_lead`` after the
drop began explains carries a resolution naming it, so the alert raised before the booking is
closed rather than left as a critical alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from lending.domain.alerts import AlertType, Finding, Severity, Signal
from lending.domain.levels import HIGHER, MEDIAN, Floats, Series, level_at, noise_sigma
from lending.domain.model import Lot, ReleaseOrder, ReleaseStatus
from lending.domain.quantity import (
    LotObservation,
    TrustPolicy,
    Verified,
    channels,
    count_level,
    weight_level,
)


class LedgerPolicy(Protocol):
    """The ledger's thresholds; :class:`lending.domain.rules.RulePolicy` carries them."""

    @property
    def ledger_floor_share(self) -> float: ...
    @property
    def ledger_cap_share(self) -> float: ...
    @property
    def ledger_noise_z(self) -> float: ...
    @property
    def ledger_min_units(self) -> float: ...
    @property
    def ledger_clear_ratio(self) -> float: ...
    @property
    def ledger_dwell(self) -> timedelta: ...
    @property
    def ledger_dwell_points(self) -> int: ...
    @property
    def ledger_noise_window(self) -> timedelta: ...
    @property
    def ledger_magnitude_window(self) -> timedelta: ...
    @property
    def fast_tau(self) -> timedelta: ...
    @property
    def fast_h(self) -> float: ...
    @property
    def fast_min_samples(self) -> int: ...
    @property
    def fast_max_gap(self) -> timedelta: ...
    @property
    def release_lead(self) -> timedelta: ...
    @property
    def release_match_window(self) -> timedelta: ...
    @property
    def evidence_samples(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ReleaseUse:
    """A recent executed release and how much of a drop it explains."""

    id: str
    quantity: float
    executed_at: datetime
    explained: float


@dataclass(frozen=True, slots=True)
class Account:
    """One lot's ledger at one evaluation (quantities in units of goods)."""

    metric: str  # the channel read: "weight_kg" or "rfid_count"
    unit: float  # channel units per unit of goods (kg per unit, or 1 for a count)
    expected: float  # what the lot should hold as of its latest sample
    level: float  # the verified level now (the level window)
    current: float  # the level of the latest samples (since the drop began): the magnitude's
    shortfall: float  # expected − current, never below 0: units missing without a release
    gross_drop: float  # expected before the recent releases − current: what physically left
    threshold: float  # θ, the raise line
    clear: float  # the clear line
    noise: float  # the sensor's sample noise (units)
    standing: bool  # the level's shortfall stayed above θ for the whole dwell
    fast: bool  # the fast detector's alarm
    cusum: float
    onset: datetime | None  # when the drop began (fast detector), if it alarmed
    releases: tuple[ReleaseUse, ...]
    resolution: str | None  # a drop explained by a release booked just after it
    signal: Signal
    samples: tuple[tuple[datetime, float], ...]  # raw readings around the onset (or the latest)

    def evidence(self, policy: LedgerPolicy, trust: TrustPolicy) -> dict[str, Any]:
        """The outbound alert's ``drop`` evidence."""
        window = (trust.weight_level_window.total_seconds() if self.metric == "weight_kg"
                  else None)
        return {
            "metric": self.metric,
            "baseline": (self.current + self.gross_drop) * self.unit,
            "level": self.current * self.unit,
            "drop": max(0.0, self.gross_drop) * self.unit,
            "drop_units": max(0.0, self.gross_drop),
            "unexplained_units": self.shortfall,
            "expected_units": self.expected,
            "level_units": self.level,
            "current_units": self.current,
            "shortfall_units": self.shortfall,
            "threshold_units": self.threshold,
            "clear_units": self.clear,
            "noise_units": self.noise,
            "level_window_s": window,
            "level_reads": None if window is not None else trust.rfid_level_reads,
            "magnitude_window_s": policy.ledger_magnitude_window.total_seconds(),
            "dwell_s": policy.ledger_dwell.total_seconds(),
            "detector": [name for name, on in (("standing", self.standing), ("fast", self.fast))
                         if on],
            "cusum": self.cusum,
            "onset": None if self.onset is None else self.onset.isoformat(),
            "releases": [{"id": r.id, "quantity": r.quantity,
                          "executed_at": r.executed_at.isoformat(), "explained": r.explained}
                         for r in self.releases],
            "samples": [[t.isoformat(), v] for t, v in self.samples],
        }


def _executed(lot: Lot, releases: Sequence[ReleaseOrder]) -> list[tuple[ReleaseOrder, datetime]]:
    out = [(r, r.executed_at) for r in releases
           if r.lot_id == lot.id and r.status is ReleaseStatus.EXECUTED and r.executed_at is not None]
    return sorted(out, key=lambda p: p[1])


def _threshold(expected: float, sigma: float, policy: LedgerPolicy) -> float:
    base = max(expected, 0.0)
    noise_line = max(policy.ledger_floor_share * base, policy.ledger_noise_z * sigma)
    return max(policy.ledger_min_units, min(policy.ledger_cap_share * base, noise_line), 1e-9)


def _cusum(t: Floats, short: Floats, theta: float, clear: float,
           policy: LedgerPolicy) -> tuple[bool, float, int | None]:
    """The fast detector: (alarm, statistic, index where the alarmed drop began)."""
    tau = max(policy.fast_tau.total_seconds(), 1e-9)
    gap = max(policy.fast_max_gap.total_seconds(), 0.0)
    stat, run, alarm, zero, onset = 0.0, 0, False, -1, None
    for i in range(short.size):
        x = float(short[i])
        if x < clear:  # back within noise: restart
            stat, run, alarm, zero, onset = 0.0, 0, False, i, None
            continue
        dt = min(max(float(t[i] - t[i - 1]), 0.0), gap) if i else 0.0
        run = run + 1 if x > theta else 0
        stat = max(0.0, stat + (x - theta) / theta * dt / tau)
        if stat == 0.0 and not alarm:
            zero = i
        if not alarm and stat > policy.fast_h and run >= max(1, policy.fast_min_samples):
            alarm, onset = True, zero + 1
    return alarm, stat, onset


def _dwell_points(t: Floats, dwell_s: float, points: int) -> np.ndarray[Any, np.dtype[np.intp]]:
    ends = np.flatnonzero(t >= t[-1] - dwell_s)
    if ends.size > max(2, points):
        pick = np.unique(np.linspace(0, ends.size - 1, max(2, points)).round().astype(np.intp))
        ends = ends[pick]
    return ends


def _allocate(drop: float, recent: Sequence[tuple[ReleaseOrder, datetime]]) -> tuple[ReleaseUse, ...]:
    """Each recent release explains the drop in execution order, up to its quantity and no more."""
    left, uses = max(0.0, drop), []
    for r, at in recent:
        explained = min(r.quantity, left)
        left -= explained
        uses.append(ReleaseUse(r.id, r.quantity, at, explained))
    return tuple(uses)


def account(lot: Lot, obs: LotObservation, releases: Sequence[ReleaseOrder], policy: LedgerPolicy,
            trust: TrustPolicy | None = None) -> Account | None:
    """The lot's ledger, or None when neither a load cell nor an RFID reader has a reading."""
    trust = trust or TrustPolicy()
    ch = channels(lot, obs, trust)
    if ch.by_weight is not None:
        s, metric, unit = ch.weights, "weight_kg", lot.unit_weight_kg
        times, raw = obs.weight_times, obs.weight_kg
    elif ch.counts.size:
        s, metric, unit = ch.counts, "rfid_count", 1.0
        times, raw = obs.rfid_times, obs.rfid_count
    else:
        return None
    is_weight = metric == "weight_kg"
    t_last = float(s.t[-1])
    lead = policy.release_lead.total_seconds()
    executed = _executed(lot, releases)
    expected = np.full(s.size, float(lot.declared_quantity))
    for r, at in executed:  # before a release (less the lead) the lot still held its goods
        expected += r.quantity * (s.t < at.timestamp() - lead)
    short = expected - s.v
    noisy = s.v[s.t > t_last - policy.ledger_noise_window.total_seconds()]
    sigma = noise_sigma(noisy if noisy.size >= 3 else s.v)
    expected_now = float(expected[-1])
    theta = _threshold(expected_now, sigma, policy)
    clear = theta * min(max(policy.ledger_clear_ratio, 0.0), 1.0)
    fast, stat, onset_i = _cusum(s.t, short, theta, clear, policy)

    def level_of(end: int) -> float:
        return weight_level(s, trust, end) if is_weight else count_level(s, trust, end)

    dwell_s = policy.ledger_dwell.total_seconds()
    standing = False
    if s.size >= 2 and t_last - float(s.t[0]) >= dwell_s:
        ends = _dwell_points(s.t, dwell_s, policy.ledger_dwell_points)
        shortfalls = expected[ends] - np.array([level_of(int(i)) for i in ends])
        standing = bool(np.all(shortfalls > theta))
    level = level_of(s.size - 1)
    current = _current(s, onset_i, is_weight, policy, trust)
    shortfall = max(0.0, expected_now - current)
    recent_from = obs.now - policy.release_match_window
    recent = [(r, at) for r, at in executed
              if at >= recent_from and at.timestamp() - lead <= t_last]  # effective by now
    held_before = expected_now + sum(r.quantity for r, _ in recent)
    uses = _allocate(held_before - current, recent)
    if standing or fast:
        signal = Signal.RAISE
    elif expected_now - level < clear and expected_now - current < clear:
        signal = Signal.CLEAR
    else:
        signal = Signal.HOLD
    resolution = None
    if signal is Signal.CLEAR and sum(u.explained for u in uses) >= theta:
        resolution = _explained_by(s, expected, recent, uses, clear, lead)
    around = onset_i if onset_i is not None else s.size - 1
    lo = max(0, around - policy.evidence_samples // 2)
    picked = s.pos[lo:lo + max(0, policy.evidence_samples)]
    samples = tuple((times[int(i)], float(raw[int(i)])) for i in picked)
    onset = times[int(s.pos[onset_i])] if onset_i is not None else None
    return Account(metric, unit, expected_now, level, current, shortfall, held_before - current,
                   theta, clear, sigma, standing, fast, stat, onset, uses, resolution, signal,
                   samples)


def _current(s: Series, onset: int | None, is_weight: bool, policy: LedgerPolicy,
             trust: TrustPolicy) -> float:
    """The level of the latest samples: those of the magnitude window, none from before the drop
    began (at least ``level_min_samples`` of them)."""
    q, method = (MEDIAN, "linear") if is_weight else (trust.rfid_level_quantile, HIGHER)
    return level_at(s, s.size - 1, window_s=policy.ledger_magnitude_window.total_seconds(),
                    min_samples=trust.level_min_samples, q=q, method=method,
                    start=0 if onset is None else onset)


def _explained_by(s: Series, expected: Floats, recent: Sequence[tuple[ReleaseOrder, datetime]],
                  uses: Sequence[ReleaseUse], clear: float, lead: float) -> str | None:
    """A resolution naming the releases that explain a drop which began at most ``lead`` before
    the first of them was booked (None when the drop began earlier, or before the history)."""
    gross = expected.copy()
    for r, at in recent:
        gross += r.quantity * (s.t >= at.timestamp() - lead)
    within = np.flatnonzero(gross - s.v < clear)
    if within.size == 0 or within[-1] + 1 >= s.size:
        return None
    began = float(s.t[within[-1] + 1])
    if began < min(at.timestamp() for _, at in recent) - lead:
        return None
    named = ", ".join(f"{u.id} ({u.explained:,.1f} of {u.quantity:,.1f} units, executed "
                      f"{u.executed_at.isoformat()})" for u in uses if u.explained > 0)
    return f"goods left against release {named}"


def load_cell_finding(lot: Lot, verified: Verified, trust: TrustPolicy) -> Finding:
    """A load cell reading what goods cannot do (at 0 or below its floor while the RFID count
    vouches for the goods): a sensor fault, not a theft. HOLD while some recent weights are such
    readings but not the latest ones."""
    if verified.load_cell_fault:
        signal = Signal.RAISE
    elif verified.weight_implausible:
        signal = Signal.HOLD
    else:
        signal = Signal.CLEAR
    floor = trust.load_cell_floor_share * lot.declared_quantity * lot.unit_weight_kg
    return Finding(
        AlertType.SENSOR_FAULT, lot.facility_id, lot.id, signal, Severity.WARNING,
        f"load cell of lot {lot.id} reads below {floor:,.1f} kg while the RFID count vouches for "
        f"{verified.by_count or 0:,.1f} units: a sensor fault, not a theft (verified by count)",
        {"fault": "load_cell", "floor_kg": floor, "by_count": verified.by_count,
         "implausible_weights": verified.weight_implausible,
         "floor_share": trust.load_cell_floor_share, "vouch_share": trust.rfid_vouch_share})


def quiet_finding(lot: Lot, ledger: Account | None) -> Finding:
    """The outbound finding when nothing raises: HOLD inside the band, else CLEAR (resolving an
    alert raised before a release explained the drop)."""
    signal = ledger.signal if ledger is not None and ledger.signal is Signal.HOLD else Signal.CLEAR
    resolution = None if ledger is None else ledger.resolution
    message = "" if resolution is None else f"lot {lot.id}: {resolution}"
    evidence: dict[str, Any] = {}
    if ledger is not None:
        evidence = {"shortfall_units": ledger.shortfall, "threshold_units": ledger.threshold,
                    "clear_units": ledger.clear,
                    "releases": [{"id": u.id, "explained": u.explained} for u in ledger.releases]}
    return Finding(AlertType.UNAUTHORISED_OUTBOUND, lot.facility_id, lot.id, signal,
                   message=message, evidence=evidence, auto_resolve=False, resolution=resolution)
