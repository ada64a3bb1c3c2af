"""A one-entry memo by identity: an assessment asks some pure functions twice in a row with the
same frozen inputs (a lot's channels, its devices' clock offsets); the second ask is answered
without work. The inputs are held with the answer, so an ``is`` match can never be a reused id.
Callers read the answer and never change it."""

from __future__ import annotations

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
