"""The officer and enterprise HTTP API and the dashboard (FastAPI). Routes stay thin: they check
who is calling, call :mod:`lending.operations` or :mod:`api.scoped_reads`, and shape the answer."""
