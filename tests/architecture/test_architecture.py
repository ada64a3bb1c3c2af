"""The layout's rules, checked by import-linter (the contracts in pyproject.toml), and proof that a
wrong-way import fails them: a copy of the tree with one bad import added must break its contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "bench", "firmware_sim", "gateway", "lending", "notifier", "pledgewatch", "schema",
            "telemetry", "ledger", "rating")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})


def copy_tree(target: Path) -> Path:
    """The product packages' Python files and pyproject.toml, nothing else."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package,
                        ignore=shutil.ignore_patterns("node_modules", "static", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, module
    module.write_text(text.replace(marker, marker + line + "\n", 1))


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("lending/domain/model.py", "import psycopg", "The lending domain is pure"),
    ("telemetry/contract/topics.py", "import gateway.mqtt", "Layers"),
    ("lending/engine.py", "import api.app", "Layers"),
    ("firmware_sim/fleet.py", "import telemetry.queries", "The simulator speaks only the MQTT contract"),
    ("gateway/consumer.py", "import bench.stats", "Layers"),
    ("notifier/signing.py", "import httpx", "Webhook signing has no I/O"),
    ("telemetry/queries.py", "import schema.migrate", "Layers"),
], ids=["domain-io", "contract-up", "lending-api", "sim-store", "product-bench", "signing-io",
        "siblings"])
def test_a_wrong_way_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                              contract: str) -> None:
    tree = copy_tree(tmp_path)
    add_import(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
