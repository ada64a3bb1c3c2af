"""Prometheus metrics of one gateway (its own registry, so several can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry.contract.payload import Reason


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("pledgewatch_messages_received", "MQTT messages received", registry=r)
        self.acked = Counter("pledgewatch_messages_acked", "messages acknowledged after commit",
                             registry=r)
        self.stored = Counter("pledgewatch_readings_stored", "new readings stored", registry=r)
        self.duplicates = Counter("pledgewatch_readings_duplicate",
                                  "readings already stored (replays, redeliveries)", registry=r)
        self.dead_letters = Counter("pledgewatch_dead_letters", "messages stored as dead letters",
                                    ["reason"], registry=r)
        for reason in Reason:
            self.dead_letters.labels(reason.value)
        self.batch_size = Histogram(
            "pledgewatch_batch_messages", "messages per committed batch", registry=r,
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
        self.commit_latency = Histogram(
            "pledgewatch_commit_seconds", "time to write and commit one batch", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.db_errors = Counter("pledgewatch_db_errors", "failed batch writes (retried)", registry=r)
        self.mqtt_connected = Gauge("pledgewatch_mqtt_connected", "1 while connected to the broker",
                                    registry=r)
        self.inbox = Gauge("pledgewatch_inbox_depth", "messages received, not yet written",
                           registry=r)

    def dead_letter_counts(self) -> dict[str, float]:
        return {
            s.labels["reason"]: s.value
            for metric in self.dead_letters.collect()
            for s in metric.samples
            if s.name.endswith("_total") and s.value
        }
