"""MQTT ingestion: topic scheme, payload decoding and validation, device identity, batching,
commit-then-ack, dead letters and shared-subscription scale-out."""
