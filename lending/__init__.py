"""Lending: the pure domain (``lending.domain``: trust, valuation, limits, detectors, alert rules),
the I/O shell that loads its inputs and persists its results (``store``), the recompute loop woken
by PostgreSQL NOTIFY (``engine``), portfolio operations (``operations``) and portfolio files
(``portfolio_file``). The HTTP API and the dashboard live in the top-level ``api`` package, alert
delivery in ``notifier``."""
