"""MQTT in: the paho client and its persistent session (``mqtt``), batching and commit-then-ack
(``ingest``, ``consumer``), the writer process beside the network loop (``writer_process``) and
Prometheus metrics. What a message may say is the contract's (:mod:`telemetry.contract`); how it is
stored is the store's (:mod:`telemetry.writer`)."""

# Subscription slots a set of gateways may share (:mod:`gateway.lease`). Here, beside nothing else,
# so the command line's `--slots` help needs neither the database driver nor the MQTT client.
MAX_SLOTS = 64
