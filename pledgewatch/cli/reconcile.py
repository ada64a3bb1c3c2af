"""`pledgewatch reconcile statement|stock|goods`: T+0 reconciliation from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pledgewatch.cli.common import fail, now, run

if TYPE_CHECKING:
    from lending.statement_file import StatementFileError

reconcile_app = typer.Typer(help="T+0 reconciliation: the bank's statement, the operator's stock.",
                            no_args_is_help=True)


def _read(path: Path) -> bytes:
    from lending import statement_file

    try:
        if path.stat().st_size > statement_file.MAX_FILE_BYTES:
            raise fail(f"{path}: larger than {statement_file.MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None


def _refused(path: Path, exc: StatementFileError) -> typer.Exit:
    *first, last = exc.lines()
    for line in first:
        typer.echo(f"error: {path}: {line}", err=True)
    return fail(f"{path}: {last}")


@reconcile_app.command("statement")
def statement(
    path: Annotated[Path, typer.Argument(help="the core-ledger statement: CSV or camt.053 XML")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="csv or camt053 (default: XML is camt.053, anything else CSV)")] = None,
    tolerance_days: Annotated[int, typer.Option(
        min=0, max=30, help="value dates this many days apart still match")] = 0,
    by: Annotated[str, typer.Option(help="who imports")] = "officer",
) -> None:
    """Match a statement against the drawdowns and repayments; list the breaks (each alerted)."""
    from lending import reconciliation, statement_file
    from lending.statement_file import StatementFileError

    if fmt not in (None, "csv", "camt053"):
        raise typer.BadParameter(f"unknown format {fmt!r}", param_hint="--format")
    data = _read(path)
    try:
        kind, lines = statement_file.parse_statement(data, fmt)
    except StatementFileError as exc:
        raise _refused(path, exc) from None
    result = run(lambda conn: reconciliation.import_statement(
        conn, data, kind, lines, source=path.name, by=by, now=now(),
        date_tolerance_days=tolerance_days))
    typer.echo(f"statement #{result['id']} ({kind}, {result['period_from']} – "
               f"{result['period_to']}): {result['lines']} lines, {result['matched']} matched, "
               f"{result['breaks']} break(s)")
    for b in result["break_list"]:
        where = f"line {b['bank_line']}" if b["bank_line"] else "platform"
        typer.echo(f"  {b['kind']:<20} {b['facility_id']} {b['reference']} ({where}): "
                   f"{b['detail']}")


@reconcile_app.command("stock")
def stock(path: Annotated[Path, typer.Argument(help="CSV lot_id,quantity,as_of")],
          by: Annotated[str, typer.Option(help="who imports")] = "officer") -> None:
    """Import the warehouse operator's stock ledger."""
    from lending import reconciliation, statement_file
    from lending.statement_file import StatementFileError

    try:
        rows = statement_file.parse_stock_csv(statement_file.decode(_read(path)))
    except StatementFileError as exc:
        raise _refused(path, exc) from None
    count = run(lambda conn: reconciliation.import_stock(conn, rows, by=by, now=now()))
    typer.echo(f"stock ledger: {count} line(s) imported")


@reconcile_app.command("goods")
def goods(facility: Annotated[str | None, typer.Option(help="only this facility")] = None,
          flagged: Annotated[bool, typer.Option("--flagged", help="only lots that differ")] = False,
          ) -> None:
    """Goods three ways per lot: pledged, sensor-verified and the operator's quantity."""
    from lending import reconciliation

    lines = run(lambda conn: reconciliation.goods(conn, facility))
    shown = [g for g in lines if g.flagged or not flagged]
    if not shown:
        typer.echo("no lots" if not flagged else "no lot differs")
    for g in shown:
        def q(v: float | None) -> str:
            return "—" if v is None else f"{v:,.1f}"
        mark = f"  DIFFERS: {', '.join(g.flagged)}" if g.flagged else ""
        typer.echo(f"{g.lot_id} ({g.facility_id}): pledged {q(g.pledged)}, sensors "
                   f"{q(g.sensors)}, operator {q(g.operator)}{mark}")


def register(app: typer.Typer) -> None:
    app.add_typer(reconcile_app, name="reconcile")
