"""A one-entry memo by identity: an assessment asks some pure functions twice in a row with the
same frozen inputs (a lot's channels, its devices' clock offsets); the second ask is answered
without work. The inputs are held with the answer, so an ``is`` match can never be a reused id.
Callers read the answer and never change it."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class LastCall(Generic[T]):
    def __init__(self) -> None:
        self._last: tuple[tuple[object, ...], T] | None = None

    def get(self, *inputs: object) -> T | None:
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and len(last[0]) == len(inputs) and all(
                a is b for a, b in zip(last[0], inputs, strict=True)):
            return last[1]
        return None

    def put(self, answer: T, *inputs: object) -> T:
        self._last = (inputs, answer)
        return answer


_FIELDS: dict[type, tuple[str, ...]] = {}


def moved(obj: T, **changes: object) -> T:
    """``dataclasses.replace(obj, **changes)`` for a frozen, slotted dataclass with no
    ``__post_init__`` (nothing to validate or derive), at a quarter of its cost: the engine moves
    the ``now`` of every unchanged lot's observation and lot phase on each assessment."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        if not is_dataclass(cls) or hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
            raise TypeError(f"moved() takes a slotted dataclass without __post_init__, not {cls}")
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    unknown = set(changes).difference(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    new = object.__new__(cls)
    setter = object.__setattr__
    for name in names:
        setter(new, name, changes[name] if name in changes else getattr(obj, name))
    return new
