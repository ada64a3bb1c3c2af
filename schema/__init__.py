"""The whole database schema in one place: versioned yoyo migrations (``migrations/``) for the
telemetry, lending, accounts and webhook tables, the runner (``migrate``) and the TimescaleDB
capability probe and time-series features (``timescale``)."""
