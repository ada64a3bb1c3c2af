"""`pledgewatch ledger …` with PLEDGEWATCH_LEDGER_ALGORITHM=sm2 on a real database: heads signed
with SM2 (over SM3) verify — the database's log, an export, a kept head, a pinned key — and a
head whose key is recorded under the other algorithm, or whose signature was changed, does not."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from pledgewatch.cli.ledger import register
from tests.integration.test_ledger_log import SUP_A, SUP_B, drawdown, seed

pytestmark = pytest.mark.integration

cli = typer.Typer()
register(cli)


def test_a_log_with_sm2_heads_verifies_and_a_mislabelled_or_changed_head_fails(
        migrated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    env = {"PLEDGEWATCH_DATABASE_URL": migrated_db,
           "PLEDGEWATCH_STATE_DIR": str(tmp_path / "state"),
           "PLEDGEWATCH_LEDGER_ALGORITHM": "sm2"}

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(cli, ["ledger", *args], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args}: {result.exception!r}") from result.exception
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed(conn)
        drawdown(conn, SUP_A, 4321, "sm2-cli-0001")
    assert ledger("append", "--once").returncode == 0
    assert (tmp_path / "state" / "ledger" / "signing-sm2.key").exists()
    head = ledger("head")
    assert head.returncode == 0, head
    kept_head = json.loads(head.stdout)
    assert kept_head["algorithm"] == "sm2"
    kept = tmp_path / "kept.json"
    kept.write_text(head.stdout)

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        drawdown(conn, SUP_B, 12, "sm2-cli-0002")
    assert ledger("append", "--once").returncode == 0
    ok = ledger("verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok
    pinned = kept_head["public_key"]
    assert len(base64.b64decode(pinned)) == 65
    assert ledger("verify", "--public-key", pinned).returncode == 0
    assert ledger("verify", "--head", str(kept)).returncode == 0
    exported = tmp_path / "log.jsonl"
    assert ledger("export", str(exported)).returncode == 0
    assert ledger("verify", "--export", str(exported)).returncode == 0

    # the same head claimed as Ed25519 (in a kept copy, and in the key's record) fails
    kept.write_text(json.dumps({**kept_head, "algorithm": "ed25519"}))
    claimed = ledger("verify", "--head", str(kept))
    assert claimed.returncode == 1 and "ed25519" in claimed.stderr, claimed
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("UPDATE ledger_keys SET algorithm = 'ed25519'")
    mislabelled = ledger("verify", "--no-rows")
    assert mislabelled.returncode == 1 and "does not verify" in mislabelled.stderr, mislabelled
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("UPDATE ledger_keys SET algorithm = 'sm2'")
        assert ledger("verify", "--no-rows").returncode == 0
        # one bit of one signature flipped
        conn.execute("UPDATE ledger_heads SET signature = set_byte(signature, 10,"
                     " get_byte(signature, 10) # 1) WHERE tree_size = %s",
                     (kept_head["tree_size"],))
    changed = ledger("verify", "--no-rows")
    assert changed.returncode == 1, changed
    assert f"head at size {kept_head['tree_size']}" in changed.stderr, changed
