"""The notifier's settings, shared by the loop, the webhook dispatcher and the MQTT publisher."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class NotifierConfig:
    max_attempts: int = 8
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    timeout_s: float = 5.0
    topic_prefix: str = "pw/alerts/v1"
    heads_topic: str = "pw/ledger/v1/heads"  # the ledger's signed heads, retained
    poll_s: float = 1.0  # longest sleep between passes (retries due, a missed NOTIFY)
    batch: int = 16  # deliveries claimed per pass
    concurrency: int = 4  # deliveries sent at once
    mqtt_batch: int = 200  # events published per pass
    mqtt_client_id: str = "pledgewatch-notifier"  # a random suffix keeps processes apart
    puback_timeout_s: float = 10.0
    # receivers allowed although not public (CIDRs, host names): notifier.address_policy
    webhook_allow: tuple[str, ...] = ()

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery stays claimed: longer than sending the whole batch."""
        return self.timeout_s * math.ceil(self.batch / self.concurrency) + 30.0
