"""Prometheus metrics of the alert notifier (its own registry; the API's /metrics serves it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

DELIVERY_STATUSES = ("delivered", "pending", "failed")


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.deliveries = Counter(
            "pledgewatch_webhook_deliveries",
            "webhook attempts by the status they left the delivery in (pending: will retry)",
            ["status"], registry=self.registry)
        for status in DELIVERY_STATUSES:
            self.deliveries.labels(status)
