"""One lot, one facility: the duplicate-pledge check made before a pledge is written.

Registration numbers are compared by :func:`registration_key`, not as typed: ``ZDW-2026-0001``,
``zdw 2026 0001 `` and the same in full-width characters name one pledge. The database keeps the same
key in a generated column with a unique index (``schema/migrations/0007_pledge_normalised.sql``
removes :data:`SEPARATORS` after ``lower(normalize(number, NFKC))``), so it refuses a duplicate
that slips past this check too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from lending.domain.model import Lot

# Whitespace, punctuation, symbols and invisible characters that do not tell two registration
# numbers apart, as one regular-expression class that means the same in Python and in
# PostgreSQL's regexp_replace (the migration holds this exact text; a test compares them).
SEPARATORS = (r"[\u0001-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u00BF\u00D7\u00F7"
              r"\u2000-\u206F\u2E00-\u2E7F\u3000-\u3004\u3008-\u3020\u3030\u303D-\u303F"
              r"\u30FB\uFE10-\uFE1F\uFE30-\uFE4F\uFEFF\uFF01-\uFF0F\uFF1A-\uFF20"
              r"\uFF3B-\uFF40\uFF5B-\uFF65]")
_SEPARATORS = re.compile(SEPARATORS)
_DROPPED_CATEGORIES = ("Z", "P", "Cc", "Cf")  # any other space, punctuation or invisible mark


def registration_key(number: str) -> str:
    """``number`` as the pledge registry compares it: Unicode NFKC (full-width and compatibility
    forms become plain ones), case-folded, with whitespace, punctuation and invisible characters
    removed. Empty when the number has no letter or digit at all.

    Stricter than the database's key (case folding maps ``ß`` to ``ss``; every Unicode space and
    punctuation mark goes, not only those in :data:`SEPARATORS`), so whatever the database would
    refuse this refuses first, with an alert.
    """
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", number).casefold())
    text = _SEPARATORS.sub("", text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith(_DROPPED_CATEGORIES))
    return unicodedata.normalize("NFKC", text)  # marks that met a letter once a dash went


@dataclass(frozen=True, slots=True)
class PledgeConflict:
    """``lot`` (being pledged) claims goods already pledged as ``existing``."""

    lot: Lot
    existing: Lot
    what: str  # "lot id", "registration number" or "sensor <id>"

    def describe(self) -> str:
        what = self.what
        if what == "registration number":
            what = f"registration number {self.lot.registration_no!r}"
            if self.existing.registration_no != self.lot.registration_no:
                what += f" (registered as {self.existing.registration_no!r})"
        return (f"lot {self.lot.id} for facility {self.lot.facility_id}: {what} already "
                f"pledged as lot {self.existing.id} to facility {self.existing.facility_id}")


def pledge_conflicts(new: Iterable[Lot], existing: Iterable[Lot]) -> list[PledgeConflict]:
    """Conflicts of ``new`` lots with ``existing`` ones and with each other.

    The same lot id, registration number (compared by :func:`registration_key`) or bound sensor
    under another facility is a duplicate pledge. Re-stating a lot for the facility it already
    belongs to is an update, not a conflict.
    """
    by_id: dict[str, Lot] = {}
    by_reg: dict[str, Lot] = {}
    by_sensor: dict[str, Lot] = {}

    def index(lot: Lot) -> None:
        by_id[lot.id] = lot
        key = registration_key(lot.registration_no)
        if key:  # a number with no letter or digit names nothing (the portfolio refuses it)
            by_reg[key] = lot
        for sensor in lot.sensors:
            by_sensor[sensor] = lot

    for lot in existing:
        index(lot)
    conflicts = []
    for lot in new:
        key = registration_key(lot.registration_no)
        claims = [("lot id", by_id.get(lot.id)),
                  ("registration number", by_reg.get(key) if key else None)]
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
