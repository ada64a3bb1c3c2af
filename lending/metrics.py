"""Prometheus metrics of the lending engine (its own registry, so several can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lag = Gauge(
            "pledgewatch_engine_lag_seconds",
            "oldest pending notice (telemetry, portfolio, prices) to its assessment done; "
            "0 when nothing waits", registry=r)
        self.last_pass = Gauge(
            "pledgewatch_engine_last_pass_timestamp_seconds",
            "when the last full pass over the book finished (epoch seconds)", registry=r)
        self.pass_seconds = Gauge("pledgewatch_engine_last_pass_seconds",
                                  "how long the last full pass took", registry=r)
        self.assessed = Counter("pledgewatch_engine_assessed", "facility assessments",
                                registry=r)
        self.shards = Gauge("pledgewatch_engine_shards_held",
                            "shards of the book this engine holds (0 with one shard: no leases)",
                            registry=r)
        self.failed = Counter("pledgewatch_engine_failed",
                              "facilities whose assessment raised (skipped)", registry=r)
