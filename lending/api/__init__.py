"""The officer and enterprise HTTP API and the dashboard (FastAPI). Routes stay thin: they check
who is calling, call :mod:`lending.service` or :mod:`lending.api.queries`, and shape the answer."""
