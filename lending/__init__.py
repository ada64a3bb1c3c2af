"""Lending: the pure domain (``lending.domain``: trust, valuation, limits, detectors, alert rules),
the I/O shell that loads its inputs and persists its results (``store``), the recompute loop woken
by PostgreSQL NOTIFY (``engine``), portfolio operations (``service``) and portfolio files
(``portfolio``). The API routers and the dashboard arrive with the API issue."""
