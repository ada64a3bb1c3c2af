"""Every ``pledgewatch`` process (and every CLI test's subprocess) imports the whole command line
before it runs one command, so the command modules import only typer at the top and each command
imports what it runs: FastAPI, pandas, numpy, the engine, the store. This keeps it that way."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.cli import bench_app
from pledgewatch.cli.bench import BENCH_HELP

# Product packages and libraries that no command line needs before a command runs.
HEAVY = ("fastapi", "starlette", "uvicorn", "pandas", "numpy", "sklearn", "optbinning", "psycopg",
         "pydantic", "pydantic_settings", "yaml", "paho", "prometheus_client", "api", "lending",
         "gateway.consumer", "gateway.mqtt", "rating", "ledger", "schema", "telemetry", "notifier",
         "firmware_sim", "bench.cli")

LOADED = """
import sys
from pledgewatch.cli.main import app
try:
    app(["--help"])
except SystemExit:
    pass
print("\\n".join(sys.modules), file=sys.stderr)
"""


def test_help_imports_no_product_module() -> None:
    proc = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True,
                          check=True, env={**os.environ, "COLUMNS": "100"})
    assert "Usage:" in proc.stdout
    loaded = sorted(m for m in proc.stderr.split()
                    if any(m == heavy or m.startswith(heavy + ".") for heavy in HEAVY))
    assert not loaded, f"`pledgewatch --help` imports {loaded}: import them in the command"


def test_the_lazy_bench_group_lists_bench_apps_help() -> None:
    assert bench_app.info.help == BENCH_HELP
