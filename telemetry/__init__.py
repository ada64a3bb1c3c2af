"""The time-series store: migrations, capability probe, idempotent writer and queries."""
