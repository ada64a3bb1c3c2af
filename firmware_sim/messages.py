"""Payload contract v1: the bytes a device puts on its telemetry and status topics.

Telemetry: ``{"boot": int, "seq": int, "ts": epoch ms, "readings": {metric: number | bool}}``,
compact JSON in UTF-8. (device id, boot, seq) is the server's dedupe key, so a message is
encoded once and the same bytes are resent after a reconnect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from firmware_sim.device_models import Readings

OFFLINE_PAYLOAD = b'{"state":"offline"}'


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_telemetry(boot: int, seq: int, ts_ms: int, readings: Readings) -> bytes:
    """One telemetry message; ``ValueError`` on a non-finite reading."""
    return _dumps({"boot": boot, "seq": seq, "ts": ts_ms, "readings": readings})


def online_payload(boot: int) -> bytes:
    """The retained status a device publishes when it connects."""
    return _dumps({"state": "online", "boot": boot})


@dataclass(slots=True)
class Sequencer:
    """Numbers the messages of one boot of one device: seq 0, 1, 2, ..."""

    boot: int
    seq: int = 0

    def next_payload(self, ts_ms: int, readings: Readings) -> bytes:
        payload = encode_telemetry(self.boot, self.seq, ts_ms, readings)
        self.seq += 1
        return payload
