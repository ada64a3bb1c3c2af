"""Scenarios: what happens to the goods, told by modifying a device's readings step by step.

One scenario instance is made per device (so it may keep per-device state, e.g. how much has
been stolen so far) and is asked to transform every readings dict the device model produces.
Add a scenario by subclassing :class:`Scenario` and registering it in :data:`SCENARIOS`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from firmware_sim.devices import DeviceSpec, Readings


class Scenario:
    """Base scenario: sees every reading of one device; the base changes nothing."""

    name: ClassVar[str] = "base"

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, 2])

    def apply(self, step: int, t_s: float, readings: Readings) -> Readings:
        """The readings of ``step`` (``t_s`` simulated seconds since start), possibly changed."""
        return readings


class Normal(Scenario):
    """Normal trading: sensors report what the models say."""

    name = "normal"


SCENARIOS: dict[str, type[Scenario]] = {cls.name: cls for cls in (Normal,)}


def make_scenario(name: str, spec: DeviceSpec) -> Scenario:
    """The scenario ``name`` for the device ``spec``; ``ValueError`` when it is unknown."""
    try:
        cls = SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(SCENARIOS))
        raise ValueError(f"unknown scenario {name!r} (known: {known})") from None
    return cls(spec)
