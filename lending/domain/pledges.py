"""One lot, one facility: the duplicate-pledge check made before a pledge is written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lending.domain.model import Lot


@dataclass(frozen=True, slots=True)
class PledgeConflict:
    """``lot`` (being pledged) claims goods already pledged as ``existing``."""

    lot: Lot
    existing: Lot
    what: str  # "lot id", "registration number" or "sensor <id>"

    def describe(self) -> str:
        return (f"lot {self.lot.id} for facility {self.lot.facility_id}: {self.what} already "
                f"pledged as lot {self.existing.id} to facility {self.existing.facility_id}")


def pledge_conflicts(new: Iterable[Lot], existing: Iterable[Lot]) -> list[PledgeConflict]:
    """Conflicts of ``new`` lots with ``existing`` ones and with each other.

    The same lot id, registration number or bound sensor under another facility is a duplicate
    pledge. Re-stating a lot for the facility it already belongs to is an update, not a conflict.
    """
    by_id: dict[str, Lot] = {}
    by_reg: dict[str, Lot] = {}
    by_sensor: dict[str, Lot] = {}

    def index(lot: Lot) -> None:
        by_id[lot.id] = lot
        by_reg[lot.registration_no] = lot
        for sensor in lot.sensors:
            by_sensor[sensor] = lot

    for lot in existing:
        index(lot)
    conflicts = []
    for lot in new:
        claims = [("lot id", by_id.get(lot.id)), ("registration number", by_reg.get(lot.registration_no))]
        claims += [(f"sensor {s}", by_sensor.get(s)) for s in lot.sensors]
        found = [PledgeConflict(lot, other, what) for what, other in claims
                 if other is not None and other.facility_id != lot.facility_id]
        found += [PledgeConflict(lot, other, what) for what, other in claims
                  if other is not None and other.facility_id == lot.facility_id and other.id != lot.id]
        if found:
            conflicts.extend(found)
        else:
            index(lot)
    return conflicts
