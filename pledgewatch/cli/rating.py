"""`pledgewatch rating run|show`: the daily credit rating on demand, and one borrower's rating with
its reason codes and grade history."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from pledgewatch.cli.common import fail, now, run

rating_app = typer.Typer(help="Credit ratings from the platform's daily features.",
                         no_args_is_help=True)


def _reasons(reasons: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['feature']} {r['bin']} (−{r['points_lost']:g})" for r in reasons) or "none"


@rating_app.command("run")
def rating_run(
    as_of: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="the day rated (default: today, UTC)")] = None,
    models: Annotated[Path | None, typer.Option(
        help="model registry directory: its champion rates (default: the expert card)")] = None,
    by: Annotated[str, typer.Option(help="who runs it (logged with every change of grade)")] = "cli",
) -> None:
    """Compute every borrower's features for the day, rate them all, log changes of grade and move
    the terms of facilities whose product maps grades to terms."""
    from rating import service
    from rating.registry import Registry

    day = (as_of or now()).date()
    if models is not None and not models.is_dir():
        raise fail(f"{models}: no such model registry directory")
    model = service.current_card(Registry(models) if models is not None else None)
    result = run(lambda conn: service.rate_all(conn, day, by=by, model=model))
    if result.skipped:
        typer.echo("another rating run is in progress; nothing done")
        return
    typer.echo(f"{day} rated {result.rated} borrowers with {result.model} v{result.version}; "
               f"{len(result.changed)} grade changes, {result.facilities_moved} facilities moved")
    for c in result.changed:
        typer.echo(f"  {c['borrower_id']}: {c['previous_grade'] or '-'} -> {c['grade']} "
                   f"({_reasons(c['reasons'])})")


@rating_app.command("show")
def rating_show(borrower_id: Annotated[str, typer.Argument()],
                history: Annotated[int, typer.Option(min=1, max=3650)] = 10) -> None:
    """A borrower's current rating, reason codes and grade history."""
    from rating import service

    got = run(lambda conn: service.borrower_rating(conn, borrower_id, history))
    if got is None:
        raise fail(f"{borrower_id}: not rated (or no such borrower)", code=1)
    c = got["current"]
    typer.echo(f"{borrower_id} grade {c['grade']} score {c['score']:.1f} PD {c['pd']:.2%} "
               f"({c['model']} v{c['version']}, {c['as_of']})")
    typer.echo(f"  reasons: {_reasons(c['reasons'])}")
    for ch in got["grade_changes"]:
        moved = "; ".join(f"{f['facility_id']} advance {f['advance_rate']['from']} -> "
                          f"{f['advance_rate']['to']}, line {f['line']['from']:,.0f} -> "
                          f"{f['line']['to']:,.0f}" for f in ch["facilities"])
        typer.echo(f"  {ch['as_of']} {ch['previous_grade'] or '-'} -> {ch['grade']} by "
                   f"{ch['changed_by']}{' — ' + moved if moved else ''}")


def register(app: typer.Typer) -> None:
    app.add_typer(rating_app, name="rating")
