"""`pledgewatch ledger …`: run the sequencer, show the signed head, export the log, prove an entry,
and verify — a whole log (the database's, or an export), one entry against a head a party kept, or
today's log against a kept head. `verify` exits 1 and names what no longer matches."""

from __future__ import annotations

import base64
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pledgewatch.cli.common import database, fail, settings_or_exit, stop_on_signals

if TYPE_CHECKING:
    import psycopg

    from ledger import verify
    from ledger.signing import HeadSigner

ledger_app = typer.Typer(help="The verifiable ledger: signed heads, proofs, export and verify.",
                         no_args_is_help=True)

KeyFile = Annotated[Path | None, typer.Option(
    help="the signing key (PKCS#8 PEM) of PLEDGEWATCH_LEDGER_ALGORITHM (ed25519 or sm2), made on "
         "first use (default: PLEDGEWATCH_LEDGER_KEY_FILE, else <state_dir>/ledger/signing.key, "
         "signing-sm2.key for sm2)")]
PublicKey = Annotated[str | None, typer.Option(
    help="check signatures with this public key (base64: raw 32 bytes for Ed25519, the 65-byte "
         "uncompressed point for SM2) instead of the one each head carries: the key a party "
         "pinned")]


def signer(key_file: Path | None) -> HeadSigner:
    from ledger.signing import load_signer
    from pledgewatch.runtime import ledger_key_path

    settings = settings_or_exit()
    path = key_file or ledger_key_path(settings)
    try:
        return load_signer(path, settings.ledger_algorithm)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot use the ledger signing key {path}: {exc}") from None


def _pinned(public_key: str | None) -> bytes | None:
    if public_key is None:
        return None
    try:
        raw = base64.b64decode(public_key, validate=True)
    except ValueError:
        raise fail("--public-key must be base64") from None
    if len(raw) not in (32, 65):
        raise fail("--public-key must be a raw Ed25519 public key (32 bytes) or an uncompressed "
                   "SM2 point (65 bytes), base64")
    return raw


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"{path} is not a {what}")
    return data


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@ledger_app.command("append")
def append(
    follow: Annotated[bool, typer.Option(
        "--follow/--once", help="keep appending until stopped (SIGINT/SIGTERM), or append what "
                                "is captured now and sign a head over it")] = False,
    every_entries: Annotated[int, typer.Option(min=1, help="sign a head every N entries")] = 1000,
    every_seconds: Annotated[float, typer.Option(
        min=0.1, help="... or when an unsigned entry is this old")] = 10.0,
    key_file: KeyFile = None,
) -> None:
    """The sequencer: append captured events to the log in order and sign tree heads. One writer
    at a time (an advisory lock): running two is safe, they take turns."""
    from ledger import appender, store
    from notifier.ledger_heads import enqueue_head

    key = signer(key_file)
    policy = appender.HeadPolicy(every_entries, every_seconds)
    with database() as (url, conn):
        conn.autocommit = True
        if not follow:
            result = appender.drain(conn, key, policy, on_head=enqueue_head)
            head = store.latest_head(conn)
            typer.echo(f"appended {result.appended}; tree size {result.tree_size}; "
                       f"signed head {head.tree_size if head else 0}")
            return
        stop = threading.Event()
        stop_on_signals(stop.set)
        appender.run(url, key, policy, stop, on_head=enqueue_head)


@ledger_app.command("head")
def head(size: Annotated[int | None, typer.Option(
        min=0, help="the head signed at this size (default: the latest)")] = None) -> None:
    """The signed tree head as JSON: keep it; later `verify --head` proves the log extends it."""
    from ledger import store

    with database() as (_url, conn):
        found = store.latest_head(conn) if size is None else store.head_at(conn, size)
    if found is None:
        raise fail("no signed head" + ("" if size is None else f" at size {size}"), 1)
    _echo_json(found.to_json())


@ledger_app.command("export")
def export(out: Annotated[Path, typer.Argument(help="a file, or - for stdout")]) -> None:
    """The whole log as JSON lines: every entry's canonical text and every signed head."""
    from ledger import verify

    with database() as (_url, conn):
        conn.autocommit = True
        if str(out) == "-":
            entries, heads = verify.export(conn, sys.stdout)
        else:
            with out.open("w", encoding="utf-8") as f:
                entries, heads = verify.export(conn, f)
    typer.echo(f"exported {entries} entries and {heads} signed heads", err=True)


def inclusion_bundle(conn: psycopg.Connection, index: int, size: int | None,
                     scope: str | None = None) -> dict[str, Any]:
    from ledger import store

    signed = store.latest_head(conn) if size is None else store.head_at(conn, size)
    if signed is None:
        raise fail("no signed head" + ("" if size is None else f" at size {size}") +
                   ": run `pledgewatch ledger append` first", 1)
    found = store.entry(conn, index, scope)
    if found is None or index >= signed.tree_size:
        raise fail(f"entry {index} is not under the signed head of size {signed.tree_size}", 1)
    path = store.inclusion_proof(conn, index, signed.tree_size)
    return {"leaf_index": index, "tree_size": signed.tree_size, "entry": found["entry"],
            "audit_path": [p.hex() for p in path], "head": signed.to_json()}


@ledger_app.command("prove")
def prove(index: Annotated[int, typer.Argument(min=0, help="the entry's leaf index")],
          size: Annotated[int | None, typer.Option(
              min=1, help="against the head signed at this size (default: the latest)")] = None
          ) -> None:
    """An entry with its audit path and the signed head it is proven against (JSON): anyone can
    check it with `verify --proof` or their own RFC 9162 code."""
    with database() as (_url, conn):
        _echo_json(inclusion_bundle(conn, index, size))


@ledger_app.command("verify")
def verify_command(
    export_file: Annotated[Path | None, typer.Option(
        "--export", help="check this exported log instead of the database")] = None,
    proof: Annotated[Path | None, typer.Option(
        help="check one entry (a `prove` bundle or the API's answer) against --head")] = None,
    kept_head: Annotated[Path | None, typer.Option(
        "--head", help="a signed head a party kept: with --proof, the entry must be under it; "
                       "alone, today's log must extend it (consistency proof)")] = None,
    rows: Annotated[bool, typer.Option(
        help="also check that each row in the database matches its latest entry")] = True,
    public_key: PublicKey = None,
) -> None:
    """Verify the ledger. No option: the whole log in the database (every leaf hash, every signed
    head) and its rows. Exit 1 naming the first entry or head that no longer matches."""
    from ledger import merkle, store, verify
    from ledger.signing import SignatureError

    pinned = _pinned(public_key)
    if proof is not None:
        if kept_head is None:
            raise fail("--proof needs --head (the signed head you kept)")
        bundle = _read_json(proof, "proof")
        try:
            held = store.SignedHead.from_json(_read_json(kept_head, "signed head"))
            verify.check_inclusion(bundle, held, public_key=pinned)
        except (merkle.ProofError, SignatureError) as exc:
            raise fail(f"entry {bundle.get('leaf_index')}: {exc}", 1) from None
        typer.echo(f"ok: entry {bundle['leaf_index']} is in the log of {held.tree_size} entries "
                   f"signed by key {held.key_id}")
        return
    if export_file is not None:
        try:
            with export_file.open(encoding="utf-8") as f:
                entries, heads = verify.read_export(f)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read {export_file}: {exc}") from None
        _report(verify.check_log(entries, heads, public_key=pinned))
        return
    with database() as (_url, conn):
        conn.autocommit = True
        if kept_head is not None:
            held = store.SignedHead.from_json(_read_json(kept_head, "signed head"))
            try:
                latest = verify.check_kept_head(conn, held, public_key=pinned)
            except (merkle.ProofError, SignatureError, LookupError) as exc:
                raise fail(f"the log does not extend the kept head of size {held.tree_size}: "
                           f"{exc}", 1) from None
            typer.echo(f"ok: the log of {latest.tree_size} entries extends the kept head of "
                       f"{held.tree_size}")
            return
        report = verify.check_database(conn, public_key=pinned)
        mismatches = verify.check_rows(conn) if rows else []
    for m in mismatches[:20]:
        report.fail(m.describe(), m.leaf_index)
    _report(report)


def _report(report: verify.Report) -> None:
    if not report.ok:
        for problem in report.problems:
            typer.secho(f"FAIL {problem}", err=True, fg=typer.colors.RED)
        first = ("" if report.first_bad_entry is None
                 else f"; first entry that no longer matches: {report.first_bad_entry}")
        raise fail(f"the ledger does not verify ({len(report.problems)} problem(s){first})", 1)
    typer.echo(f"ok: {report.entries} entries, {report.heads} signed heads, root "
               f"{report.root.hex()}")


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")
