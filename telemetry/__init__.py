"""What devices say and how it is stored: the MQTT contract (``contract``: topics, metric catalogue,
payload v1, pure), the idempotent batch writer (``writer``), queries over readings and the device
registry (``queries``) and device credentials (``provisioning``). The schema itself lives in the
top-level :mod:`schema` package."""
