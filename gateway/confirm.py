"""What the gateway tells devices after a commit: which of their messages the store now has.

Built in the writer (off the MQTT threads) from the committed batch, published at QoS 0 by the
gateway once the batch is acknowledged. See :mod:`telemetry.contract.confirm` for the contract.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from telemetry.contract.confirm import encode_confirmations, stored_topic

# (topic, payload) ready to publish
Outgoing = tuple[str, bytes]


def confirmations(stored: Iterable[tuple[str, str, int, int]]) -> tuple[Outgoing, ...]:
    """Confirmations for (tenant, device id, boot, seq) of messages the store now holds."""
    by_device: defaultdict[tuple[str, str, int], list[int]] = defaultdict(list)
    for tenant, device_id, boot, seq in stored:
        by_device[tenant, device_id, boot].append(seq)
    return tuple(
        (stored_topic(tenant, device_id), payload)
        for (tenant, device_id, boot), seqs in by_device.items()
        for payload in encode_confirmations(boot, seqs)
    )
