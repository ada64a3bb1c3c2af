"""Field inspections: a physical count of a lot outranks every sensor.

An officer or the collateral manager counts the goods on site. The count is compared with what
the sensors said when it was made (their verified quantity then, kept with the inspection) and
with what they say now, against what the count implies now (the count less the units released
since):

- the count agreed with the sensors when it was made (within ``inspection_tolerance`` of the
  declared quantity): the sensors are confirmed, nothing to say (CLEAR);
- it disagreed: an ``inspection_mismatch`` warning, and while the sensors still disagree with
  the count the lot's trust is multiplied by ``inspection_factor`` and the loan counts the
  goods the count implies rather than what the sensors say;
- the sensors agree with the count again (within ``inspection_clear``, e.g. after a load cell is
  recalibrated), or a newer count agrees with them: CLEAR.

When the sensors said nothing at the time of the count, the count is judged against what they
say now. Later drops the count agreed with are the outbound rule's business, not this one's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from lending.domain.alerts import AlertType, Finding, Signal
from lending.domain.model import DomainError, Lot
from lending.domain.observation import Series, SeriesSource, observe
from lending.domain.quantity import TrustPolicy, Verified, verify

FACTOR = "inspection_mismatch"  # the trust factor's name in a snapshot


@dataclass(frozen=True, slots=True)
class Inspection:
    """The latest physical count of a lot, with what the sensors said when it was made."""

    lot_id: str
    counted_quantity: float  # units counted on site
    counted_at: datetime
    counted_by: str
    sensor_quantity: float | None = None  # the sensors' verified quantity at counted_at
    released_since: float = 0.0  # units released (executed orders) after counted_at
    note: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.counted_quantity) and 0 <= self.counted_quantity <= 1e12):
            raise DomainError(f"lot {self.lot_id}: a count must be a number of units between 0 "
                              f"and 1e12, got {self.counted_quantity!r}")
        if not (math.isfinite(self.released_since) and self.released_since >= 0):
            raise DomainError(f"lot {self.lot_id}: units released since the count must be >= 0")
        if self.counted_at.tzinfo is None:
            raise DomainError(f"lot {self.lot_id}: the time of a count needs a time zone")

    @property
    def expected_now(self) -> float:
        """The units the count implies now: counted less what was released since."""
        return max(0.0, self.counted_quantity - self.released_since)


@dataclass(frozen=True, slots=True)
class _Window:
    """A series source cut to the readings in (start, end]."""

    source: SeriesSource
    start: datetime
    end: datetime

    def get(self, device: str, metric: str, /) -> Series:
        return [(t, v) for t, v in self.source.get(device, metric) if self.start < t <= self.end]


def sensor_quantity_at(lot: Lot, source: SeriesSource, at: datetime,
                       policy: TrustPolicy | None = None) -> float | None:
    """What the lot's sensors said at ``at``: the verified quantity (the same fusion as
    :func:`lending.domain.quantity.verify`) from their latest weight and count readings within
    ``inspection_sample_window`` before it; None when they said nothing then (a sealed truck
    vouched for by its seal is not a measurement)."""
    policy = policy or TrustPolicy()
    window = _Window(source, at - policy.inspection_sample_window, at)
    checked = verify(lot, observe(lot, window, {}, at, timedelta(0)), policy)
    if checked.by_weight is None and checked.by_count is None:
        return None
    return checked.quantity if math.isfinite(checked.quantity) else None


def _gap(quantity: float | None, reference: float, scale: float) -> float | None:
    if quantity is None or not math.isfinite(quantity):
        return None
    return abs(quantity - reference) / scale


def check_inspection(lot: Lot, inspection: Inspection | None, verified: Verified,
                     policy: TrustPolicy | None = None) -> tuple[Verified, Finding]:
    """The lot's verified quantity with the latest count applied, and the inspection finding."""
    policy = policy or TrustPolicy()
    if inspection is None:
        return verified, Finding(AlertType.INSPECTION_MISMATCH, lot.facility_id, lot.id,
                                 Signal.CLEAR)
    counted = inspection.counted_quantity
    expected = inspection.expected_now
    scale = max(lot.declared_quantity, counted, 1.0)
    gap_then = _gap(inspection.sensor_quantity, counted, scale)
    gap_now = _gap(verified.quantity, expected, scale) if verified.observed else None
    judged = gap_then if gap_then is not None else gap_now
    disagreed = judged is not None and judged > policy.inspection_tolerance
    agrees_now = gap_now is not None and gap_now <= policy.inspection_clear
    if judged is None:
        signal = Signal.HOLD  # nothing to compare the count with yet
    elif not disagreed or agrees_now:
        signal = Signal.CLEAR
    elif gap_now is None or gap_now > policy.inspection_tolerance:
        signal = Signal.RAISE
    else:
        signal = Signal.HOLD
    standing = disagreed and not agrees_now
    sensors_now = verified.quantity if verified.observed else None
    evidence: Mapping[str, object] = {
        "inspection_id": inspection.id, "counted_quantity": counted,
        "counted_at": inspection.counted_at.isoformat(), "counted_by": inspection.counted_by,
        "note": inspection.note, "released_since": inspection.released_since,
        "expected_now": expected, "sensor_quantity_then": inspection.sensor_quantity,
        "sensor_quantity_now": sensors_now, "gap_then": gap_then, "gap_now": gap_now,
        "tolerance": policy.inspection_tolerance, "clear_within": policy.inspection_clear,
        "trust_factor": policy.inspection_factor if standing else None,
    }
    then = ("nothing" if inspection.sensor_quantity is None
            else f"{inspection.sensor_quantity:,.1f}")
    now = "nothing" if sensors_now is None else f"{sensors_now:,.1f}"
    finding = Finding(
        AlertType.INSPECTION_MISMATCH, lot.facility_id, lot.id, signal,
        message=(f"lot {lot.id}: {inspection.counted_by} counted {counted:,.1f} units at "
                 f"{inspection.counted_at:%Y-%m-%d %H:%M} UTC; the sensors said {then} then and "
                 f"say {now} now (the count implies {expected:,.1f})"),
        evidence=evidence,
        magnitude=None if sensors_now is None else abs(sensors_now - expected))
    if not standing:
        return verified, finding
    factors = {**verified.factors, FACTOR: policy.inspection_factor}
    trust = min(1.0, max(0.0, verified.trust * policy.inspection_factor))
    counted_now = replace(verified, quantity=expected,
                          pledged=min(expected, lot.declared_quantity), trust=trust,
                          factors=factors)
    return counted_now, finding
