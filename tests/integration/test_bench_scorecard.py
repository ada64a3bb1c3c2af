"""`pledgewatch bench scorecard` through the CLI with 3 folds and 20,000 borrowers: the four lines
in the contract's format and order, AUCs in the range published logistic scorecards reach on the
German credit data, a consistent ratio and a positive scoring rate. No database or broker needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
MODEL = re.compile(rf"^(?P<model>pipeline|plain) auc (?P<auc>{NUMBER}) ks (?P<ks>{NUMBER})$")


def test_bench_scorecard_prints_both_models_the_rate_and_the_ratio(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pledgewatch", "bench", "scorecard", "--folds", "3",
         "--borrowers", "20000", "--seed", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4, lines
    models = [MODEL.match(line) for line in lines[:2]]
    assert [m["model"] if m else None for m in models] == ["pipeline", "plain"], lines
    auc = {}
    for m in models:
        assert m is not None
        auc[m["model"]] = float(m["auc"])
        assert 0.72 <= float(m["auc"]) <= 0.9, lines  # published: about 0.78-0.80
        assert 0.3 <= float(m["ks"]) <= 0.7, lines
    rate = re.fullmatch(r"scored_per_s ([0-9]+)", lines[2])
    assert rate is not None and int(rate[1]) > 20_000, lines[2]  # 20,000 borrowers in < 1 s
    ratio = re.fullmatch(rf"ratio ({NUMBER})", lines[3])
    assert ratio is not None, lines[3]
    assert float(ratio[1]) == pytest.approx(auc["pipeline"] / auc["plain"], abs=2e-3)
    assert "fold 3/3" in proc.stderr
