"""Store confirmations: the gateway tells a device which of its messages are stored for good.

A PUBACK only says the broker has a message; a broker that crashes before its next autosave can
still lose it. After each commit the gateway publishes, on ``pw/v1/<tenant>/<device_id>/stored``
(QoS 0), the sequence numbers of that device's messages the commit made durable (stored, already
stored, or refused for good as a dead letter)::

    {"boot": 3, "ranges": [[10, 25], [27, 27]]}

Each range is inclusive. A device keeps every PUBACKed message in its outbox until a confirmation
covers it, and resends what stays unconfirmed; the store's (device, boot, seq) key makes a resend
harmless. A lost confirmation only costs a resend, so QoS 0 is enough.

Pure code: encoding and a decoder that never raises on hostile bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from telemetry.contract.topics import PREFIX

MAX_RANGES = 4_096  # a confirmation larger than this is split into several messages
MAX_CONFIRMATION_BYTES = 65_536
_MAX_SEQ = 2**63 - 1
_MAX_BOOT = 2**31 - 1


def stored_topic(tenant: str, device_id: str) -> str:
    return f"{PREFIX}/{tenant}/{device_id}/stored"


class Confirmation(NamedTuple):
    boot: int
    ranges: tuple[tuple[int, int], ...]

    def covers(self, boot: int, seq: int) -> bool:
        return boot == self.boot and any(lo <= seq <= hi for lo, hi in self.ranges)


def to_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges of ``seqs`` (duplicates allowed)."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def encode_confirmations(boot: int, seqs: Iterable[int]) -> list[bytes]:
    """One or more payloads confirming ``seqs`` of ``boot`` (split past ``MAX_RANGES``)."""
    ranges = to_ranges(seqs)
    return [
        json.dumps({"boot": boot, "ranges": ranges[i : i + MAX_RANGES]},
                   separators=(",", ":")).encode()
        for i in range(0, len(ranges), MAX_RANGES)
    ]


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def decode_confirmation(payload: bytes) -> Confirmation | None:
    """The confirmation in ``payload``, or ``None`` when it is not a well-formed one."""
    if len(payload) > MAX_CONFIRMATION_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or set(doc) != {"boot", "ranges"}:
        return None
    boot, raw = doc["boot"], doc["ranges"]
    if not _is_int(boot, 0, _MAX_BOOT) or not isinstance(raw, list) or len(raw) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        lo, hi = item
        if not (_is_int(lo, 0, _MAX_SEQ) and _is_int(hi, 0, _MAX_SEQ)) or lo > hi:
            return None
        ranges.append((lo, hi))
    return Confirmation(boot, tuple(ranges))
