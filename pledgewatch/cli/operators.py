"""`pledgewatch operators add|list|assign|unassign`: warehouse operators, a party of their own:
the lots in their care, whose ledger entries they may read and whose stock ledger they upload
(their API keys: `pledgewatch api-keys issue --operator ID`)."""

from __future__ import annotations

from typing import Annotated

import typer

from pledgewatch.cli.common import fail, run

operators_app = typer.Typer(help="Warehouse operators and the lots in their warehouses.",
                            no_args_is_help=True)

OperatorArg = Annotated[str, typer.Argument(
    help="operator id: 1-64 letters, digits, '.', '_' or '-'")]
Lots = Annotated[list[str], typer.Argument(help="lot ids", show_default=False)]


def _checked(operator_id: str) -> str:
    from lending import operators
    from lending.operations import InvalidRequest

    try:
        return operators.check_operator_id(operator_id)
    except InvalidRequest as exc:
        raise fail(str(exc)) from None


@operators_app.command("add")
def operators_add(operator_id: OperatorArg,
                  name: Annotated[str, typer.Option(help="the operator's company name")]) -> None:
    """Register a warehouse operator."""
    from lending import operators

    _checked(operator_id)
    if not 0 < len(name) <= operators.MAX_NAME or not name.strip():
        raise fail(f"--name must be 1-{operators.MAX_NAME} characters")
    run(lambda conn: operators.add_operator(conn, operator_id, name))
    typer.echo(f"warehouse operator {operator_id} ({name}) added")


@operators_app.command("list")
def operators_list() -> None:
    """Every operator and how many lots it stores."""
    from lending import operators

    for row in run(operators.operators):
        typer.echo(f"{row['operator_id']:<24} {row['lots']:>6} lot(s)  {row['name']}")


def _assign(operator_id: str | None, lot_ids: list[str]) -> None:
    from lending import operators

    moved = run(lambda conn: operators.assign_lots(conn, operator_id, lot_ids))
    for m in moved:
        was = f" (was {m['previous']})" if m["previous"] not in (None, operator_id) else ""
        typer.echo(f"{m['lot_id']}: {operator_id or 'no operator'}{was}")


@operators_app.command("assign")
def operators_assign(operator_id: OperatorArg, lot_ids: Lots) -> None:
    """Put lots in the operator's care (all or none: an unknown lot refuses the call). Ledger
    entries of their releases, inspections and stock lines name the operator from now on."""
    _assign(_checked(operator_id), lot_ids)


@operators_app.command("unassign")
def operators_unassign(lot_ids: Lots) -> None:
    """Take lots out of any operator's care (entries already in the ledger keep their parties)."""
    _assign(None, lot_ids)


def register(app: typer.Typer) -> None:
    app.add_typer(operators_app, name="operators")
