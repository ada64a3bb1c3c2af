"""`pledgewatch drawdown|blacklist|programme|financing`: supply-chain finance from the command line,
as the bank's operator (the API does the same for enterprises and officers)."""

from __future__ import annotations

import threading
import uuid
from typing import Annotated, Any

import typer

from pledgewatch.cli.common import database, now, run, stop_on_signals

drawdown_app = typer.Typer(help="Drawdowns against a facility's live limit.", no_args_is_help=True)
blacklist_app = typer.Typer(help="Borrowers who may not borrow (who added them and why).",
                            no_args_is_help=True)
programme_app = typer.Typer(help="Programme lines for a core enterprise's chain.",
                            no_args_is_help=True)
financing_app = typer.Typer(help="Time-driven financing checks.", no_args_is_help=True)


def _show(d: dict[str, Any]) -> str:
    why = f" — {'; '.join(d['reasons'])}" if d["reasons"] and d["status"] == "pending" else ""
    due = f", matures {d['maturity']:%Y-%m-%d}" if d["maturity"] else ""
    return (f"{d['drawdown_id']} {d['facility_id']} {d['amount']:,.2f} {d['currency']} "
            f"{d['status']}{' OVERDUE' if d['overdue'] else ''}{due}{why}")


@drawdown_app.command("request")
def drawdown_request(
    facility_id: Annotated[str, typer.Argument()],
    amount: Annotated[float, typer.Argument(min=0.01, max=1e14, help="amount to draw")],
    currency: Annotated[str, typer.Option(help="must be the facility's currency")] = "CNY",
    tenor: Annotated[int, typer.Option(min=1, max=3660, help="days to maturity")] = 90,
    purpose: Annotated[str, typer.Option(help="what the money is for")] = "working capital",
    key: Annotated[str | None, typer.Option(
        help="Idempotency-Key: give the same key to retry without paying twice "
             "(default: a new one)")] = None,
    by: Annotated[str, typer.Option(help="who asks")] = "cli",
) -> None:
    """Request a drawdown: approved at once when it fits the live available limit and nothing
    bars it, else queued for an officer with the reasons."""
    from lending import financing

    idem = key or str(uuid.uuid4())
    row, created = run(lambda conn: financing.request_drawdown(
        conn, facility_id, amount, currency, tenor, purpose, by=by, idempotency_key=idem,
        now=now()))
    typer.echo(("" if created else "(retry: already made) ") + _show(row))
    if created and not key:
        typer.echo(f"idempotency key {idem}")


@drawdown_app.command("approve")
def drawdown_approve(drawdown_id: Annotated[str, typer.Argument()],
                     comment: Annotated[str | None, typer.Option()] = None,
                     by: Annotated[str, typer.Option(help="the officer")] = "officer") -> None:
    """Approve a waiting drawdown (never past the available limit or for a blacklisted borrower)."""
    from lending import financing

    typer.echo(_show(run(lambda conn: financing.decide_pending(
        conn, drawdown_id, approve=True, by=by, comment=comment, now=now()))))


@drawdown_app.command("reject")
def drawdown_reject(drawdown_id: Annotated[str, typer.Argument()],
                    comment: Annotated[str | None, typer.Option()] = None,
                    by: Annotated[str, typer.Option(help="the officer")] = "officer") -> None:
    """Reject a waiting drawdown."""
    from lending import financing

    typer.echo(_show(run(lambda conn: financing.decide_pending(
        conn, drawdown_id, approve=False, by=by, comment=comment, now=now()))))


@drawdown_app.command("list")
def drawdown_list(
    facility: Annotated[str | None, typer.Option(help="only this facility")] = None,
    status: Annotated[str | None, typer.Option(
        help="pending (the officers' queue), approved, rejected or repaid")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only overdue ones")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Drawdowns, newest first."""
    from lending import financing

    if status not in (None, "pending", "approved", "rejected", "repaid"):
        raise typer.BadParameter(f"unknown status {status!r}", param_hint="--status")
    rows = run(lambda conn: financing.list_drawdowns(conn, None, limit, 0, facility_id=facility,
                                                     status=status, overdue=overdue or None))
    if not rows:
        typer.echo("no drawdowns")
    for row in rows:
        typer.echo(_show(row))


@blacklist_app.command("add")
def blacklist_add(borrower_id: Annotated[str, typer.Argument()],
                  reason: Annotated[str, typer.Option(help="why (kept with the entry)")],
                  by: Annotated[str, typer.Option(help="the officer")] = "officer") -> None:
    """Put a borrower on the blacklist: its drawdowns wait for an officer, who cannot approve."""
    from lending import financing

    row = run(lambda conn: financing.blacklist_add(conn, borrower_id, reason, by, now()))
    typer.echo(f"{row['borrower_id']} blacklisted by {row['added_by']}: {row['reason']}")


@blacklist_app.command("remove")
def blacklist_remove(borrower_id: Annotated[str, typer.Argument()],
                     by: Annotated[str, typer.Option(help="the officer")] = "officer") -> None:
    """Take a borrower off the blacklist (the entry is kept, marked removed)."""
    from lending import financing

    run(lambda conn: financing.blacklist_remove(conn, borrower_id, by, now()))
    typer.echo(f"{borrower_id} removed from the blacklist by {by}")


@blacklist_app.command("list")
def blacklist_list(all_: Annotated[bool, typer.Option("--all", help="include removed")] = False,
                   ) -> None:
    """The blacklist, newest first."""
    from lending import financing

    rows = run(lambda conn: financing.blacklist(conn, include_removed=all_))
    if not rows:
        typer.echo("the blacklist is empty")
    for r in rows:
        gone = f" (removed {r['removed_at']:%Y-%m-%d} by {r['removed_by']})" if r["removed_at"] else ""
        typer.echo(f"{r['borrower_id']}: {r['reason']} — added {r['added_at']:%Y-%m-%d} by "
                   f"{r['added_by']}{gone}")


@programme_app.command("create")
def programme_create(
    programme_id: Annotated[str, typer.Argument()],
    core: Annotated[str, typer.Option(help="the core enterprise (a borrower with role core)")],
    line: Annotated[float, typer.Option(min=0.01, max=1e14, help="the programme line")],
    currency: Annotated[str, typer.Option()] = "CNY",
    advance_rate: Annotated[float, typer.Option(min=0.01, max=1.0,
                                                help="what financing a voucher advances")] = 0.8,
    by: Annotated[str, typer.Option(help="the officer")] = "officer",
) -> None:
    """Set a programme line for a core enterprise's chain."""
    from lending import financing

    row = run(lambda conn: financing.create_programme(conn, programme_id, core, currency, line,
                                                      advance_rate, by, now()))
    typer.echo(f"programme {row['programme_id']}: {row['core_id']}'s chain, line "
               f"{row['line']:,.2f} {row['currency']}, advance rate {row['advance_rate']:g}")


@programme_app.command("list")
def programme_list() -> None:
    """Programmes with their use."""
    from lending import financing

    rows = run(lambda conn: financing.list_programmes(conn, None))
    if not rows:
        typer.echo("no programmes")
    for r in rows:
        typer.echo(f"{r['programme_id']} {r['core_id']} line {r['line']:,.2f} {r['currency']}: "
                   f"used {r['used']:,.2f}, financed {r['financed']:,.2f}")


@financing_app.command("sweep")
def financing_sweep(
    every: Annotated[float, typer.Option(min=0, max=86_400, help="seconds between sweeps "
                                         "(0: once and exit)")] = 0,
) -> None:
    """Raise overdue-drawdown and late-payable alerts and judge pending shipments from
    telemetry. The lending engine runs this every 30 s; this runs it by hand."""
    from lending import financing
    from lending.trade import judge_shipment

    if every == 0:
        result = run(lambda conn: financing.sweep(conn, now(), judge_shipment))
        typer.echo(f"overdue drawdowns {result.overdue}, late payables {result.late}, "
                   f"trades judged {result.trades}")
        return
    with database() as (url, _conn):
        pass
    stop = threading.Event()
    stop_on_signals(stop.set)
    typer.echo(f"financing sweep every {every:g}s")
    financing.FinancingSweeper(url, every, judge_shipment).run(stop)


def register(app: typer.Typer) -> None:
    app.add_typer(drawdown_app, name="drawdown")
    app.add_typer(blacklist_app, name="blacklist")
    app.add_typer(programme_app, name="programme")
    app.add_typer(financing_app, name="financing")
