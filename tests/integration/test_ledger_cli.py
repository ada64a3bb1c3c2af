"""`pledgewatch ledger …` end to end on a real database: append and sign, keep a head, export,
prove an entry, verify all of it; then change an amount directly in the database and see
`verify` exit 1 naming the entry that no longer matches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from ledger import store
from pledgewatch.cli.ledger import register
from tests.integration.test_ledger_log import SUP_A, SUP_B, drawdown, seed

pytestmark = pytest.mark.integration

cli = typer.Typer()
register(cli)


def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch, url: str,
           tmp_path: Path) -> subprocess.CompletedProcess[str]:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    env = {"PLEDGEWATCH_DATABASE_URL": url, "PLEDGEWATCH_STATE_DIR": str(tmp_path / "state"),
           "PLEDGEWATCH_LEDGER_KEY_FILE": str(tmp_path / "signing.key")}
    result = CliRunner().invoke(cli, ["ledger", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r}") from result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_append_keep_a_head_export_prove_verify_and_catch_a_changed_amount(
        migrated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return invoke(list(args), monkeypatch, migrated_db, tmp_path)

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed(conn)
        dd = drawdown(conn, SUP_A, 4321, "cli-key-0001")
        drawdown(conn, SUP_B, 99, "cli-key-0002")
    appended = ledger("append", "--once")
    assert appended.returncode == 0 and "appended" in appended.stdout, appended
    head = ledger("head")
    assert head.returncode == 0, head
    kept = tmp_path / "kept-head.json"
    kept.write_text(head.stdout)
    size = json.loads(head.stdout)["tree_size"]

    ok = ledger("verify")
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {size} entries"), ok
    exported = tmp_path / "log.jsonl"
    assert ledger("export", str(exported)).returncode == 0
    assert ledger("verify", "--export", str(exported)).returncode == 0

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        index = store.entries(conn, None, 1, 0, table="drawdowns", key=dd)[0]["leaf_index"]
    proof = ledger("prove", str(index))
    assert proof.returncode == 0, proof
    bundle = tmp_path / "proof.json"
    bundle.write_text(proof.stdout)
    checked = ledger("verify", "--proof", str(bundle), "--head", str(kept))
    assert checked.returncode == 0 and f"entry {index} is in the log" in checked.stdout, checked
    forged = json.loads(proof.stdout)
    forged["entry"] = forged["entry"].replace("4321.00", "1.00")
    bundle.write_text(json.dumps(forged))
    refused = ledger("verify", "--proof", str(bundle), "--head", str(kept))
    assert refused.returncode == 1 and f"entry {index}" in refused.stderr, refused

    # more events, then the log still extends the head kept earlier
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        drawdown(conn, SUP_B, 5, "cli-key-0003")
    assert ledger("append", "--once").returncode == 0
    extends = ledger("verify", "--head", str(kept))
    assert extends.returncode == 0 and f"extends the kept head of {size}" in extends.stdout

    # an amount changed in the database, behind the capture triggers' back
    with psycopg.connect(migrated_db, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE drawdowns SET amount = 1 WHERE drawdown_id = %s", (dd,))
    caught = ledger("verify")
    assert caught.returncode == 1, caught
    assert f"drawdowns {dd}: the row no longer matches its latest entry {index}" in caught.stderr
    assert f"first entry that no longer matches: {index}" in caught.stderr

    # the entry itself changed in the database
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("UPDATE ledger_entries SET entry = replace(entry, '4321.00', '1.00')"
                     " WHERE leaf_index = %s", (index,))
    caught = ledger("verify", "--no-rows")
    assert caught.returncode == 1 and f"entry {index} no longer matches" in caught.stderr, caught
    # an export that was edited
    exported.write_text(exported.read_text().replace("4321.00", "1.00"))
    caught = ledger("verify", "--export", str(exported))
    assert caught.returncode == 1 and "does not match the entries" in caught.stderr, caught
