"""Prometheus metrics of one gateway (its own registry, so several can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.writer_process import ERROR_KINDS
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
        self.db_error_kinds = Counter(
            "pledgewatch_gateway_db_errors", "failed batch writes (retried), by what failed: "
            "lock_timeout, statement_timeout, canceled, unavailable", ["kind"], registry=r)
        for kind in ERROR_KINDS:
            self.db_error_kinds.labels(kind)
        self.stalled = Gauge("pledgewatch_gateway_stalled_seconds",
                             "how long the batch being written has been failing (0 = not stalled)",
                             registry=r)
        self.mqtt_connected = Gauge("pledgewatch_mqtt_connected",
                                    "slot clients connected to the broker (1 with one slot)",
                                    registry=r)
        self.inbox = Gauge("pledgewatch_inbox_depth", "messages received, not yet written",
                           registry=r)
        self.inbox_high_water = Gauge(
            "pledgewatch_gateway_inbox_high_water",
            "most messages the inbox held (bounded by slots x MQTT receive maximum)", registry=r)
        self.slots_held = Gauge("pledgewatch_gateway_slots_held",
                                "subscription slots whose lease this gateway holds", registry=r)
        self.live_gateways = Gauge("pledgewatch_gateway_live_members",
                                   "gateways sharing the slots, as the lease table shows them",
                                   registry=r)
        self.slot_takeovers = Counter("pledgewatch_gateway_slot_takeovers",
                                      "slot leases taken (at start, after a peer died or left)",
                                      registry=r)
        self.confirmations = Counter(
            "pledgewatch_gateway_confirmations",
            "store confirmations published to devices (QoS 0; one per device per batch)",
            registry=r)
        self.broker_store_messages = Gauge(
            "pledgewatch_broker_store_messages",
            "messages the broker holds (Mosquitto's $SYS/broker/store/messages/count)",
            registry=r)
        self.lease_losses = Counter("pledgewatch_gateway_lease_losses",
                                    "lease connection lost: every slot disconnected at once",
                                    registry=r)

    def dead_letter_counts(self) -> dict[str, float]:
        return {
            s.labels["reason"]: s.value
            for metric in self.dead_letters.collect()
            for s in metric.samples
            if s.name.endswith("_total") and s.value
        }
