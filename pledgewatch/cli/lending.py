"""`pledgewatch portfolio|prices|facility|release|repay|sale|alerts|inspection|engine`: the lending
commands.

Each command opens the configured database (or the embedded one, shared with a running demo),
does one thing, and prints what it did; errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pledgewatch.cli.common import database, fail, now, run, settings_or_exit, stop_on_signals

if TYPE_CHECKING:
    from lending.domain.model import ReleaseStatus

portfolio_app = typer.Typer(help="Load borrowers, facilities, lots and sensors.", no_args_is_help=True)
prices_app = typer.Typer(help="Commodity prices.", no_args_is_help=True)
facility_app = typer.Typer(help="Facilities: limit, available, LTV and why.", no_args_is_help=True)
release_app = typer.Typer(help="Release orders: requested → approved → executed.",
                          no_args_is_help=True)
alerts_app = typer.Typer(help="Pledge alerts: list, acknowledge, resolve.", no_args_is_help=True)
inspection_app = typer.Typer(help="Field inspections: physical counts that outrank the sensors.",
                             no_args_is_help=True)


PROGRESS_ABOVE = 10_000  # lots: a larger file shows a progress bar on stderr


@portfolio_app.command("load")
def portfolio_load(
    path: Annotated[Path, typer.Argument(help="portfolio YAML (everything) or CSV (lots only)")],
) -> None:
    """Insert or update a portfolio; a duplicate pledge refuses the whole file and alerts.
    Sensors not registered yet become devices of their borrower's tenant. A lots CSV may be up to
    512 MiB (read row by row), a YAML file up to 64 MiB; more than 10,000 lots show progress."""
    from lending.operations import load_portfolio
    from lending.portfolio_file import (
        MAX_CLI_CSV_BYTES,
        MAX_CLI_YAML_BYTES,
        PortfolioError,
        read_portfolio,
    )

    cap = MAX_CLI_CSV_BYTES if path.suffix.lower() == ".csv" else MAX_CLI_YAML_BYTES
    with ExitStack() as bars:
        shown: list[Any] = []  # the click progress bar, once there is one

        def progress(done: int, total: int) -> None:
            if total <= PROGRESS_ABOVE:
                return
            if not shown:
                shown.append(bars.enter_context(typer.progressbar(
                    length=total, label="validating lots", file=sys.stderr)))
            bar = shown[0]
            bar.update(done - bar.pos)

        try:
            portfolio = read_portfolio(path, cap, progress)
        except PortfolioError as exc:
            raise fail(str(exc)) from None
    if len(portfolio.lots) > PROGRESS_ABOVE:
        typer.echo(f"writing {len(portfolio.lots):,} lot(s)...", err=True)
    result = run(lambda conn: load_portfolio(conn, portfolio, now()))
    typer.echo(f"loaded {result.borrowers} borrower(s), {result.facilities} facilit(y/ies), "
               f"{result.lots} lot(s), {result.commodities} commodit(y/ies), "
               f"{result.receivables} receivable(s), {result.prices} price(s)")


@prices_app.command("post")
def prices_post(path: Annotated[Path, typer.Argument(help="CSV: time,commodity,price,currency")]) -> None:
    """Post commodity prices; facilities holding those commodities are revalued."""
    from lending.operations import post_prices
    from lending.price_file import PriceFileError, read_prices_csv

    if not path.is_file():
        raise fail(f"{path}: no such file")
    try:
        points = read_prices_csv(path)
    except PriceFileError as exc:  # every bad line, one per line; nothing is stored
        *first, last = exc.lines()
        for line in first:
            fail(f"{path}: {line}")
        raise fail(f"{path}: {last}") from None
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None
    affected = run(lambda conn: post_prices(conn, points))
    typer.echo(f"posted {len(points)} price(s); {len(affected)} facilit(y/ies) to revalue")


@facility_app.command("limit")
def facility_limit(
    facility_id: Annotated[str, typer.Argument(help="facility id")],
    as_json: Annotated[bool, typer.Option("--json", help="every input as JSON")] = False,
) -> None:
    """Recompute a facility now and print its limit with the explanation."""
    from lending.engine import LendingEngine
    from lending.store import latest_snapshots

    with database() as (url, conn):
        engine = LendingEngine(url)
        try:
            results = engine.recompute([facility_id])
        finally:
            engine.close()
        if not results:
            raise fail(f"no facility {facility_id!r}")
        row = conn.execute("SELECT reasons FROM limit_snapshots WHERE facility_id = %s"
                           " ORDER BY time DESC, id DESC LIMIT 1", (facility_id,)).fetchone()
        snapshot = latest_snapshots(conn, [facility_id]).get(facility_id) or results[0].snapshot
        reasons: list[str] = row[0] if row else []
    if as_json:
        typer.echo(json.dumps({**snapshot.inputs(), "last_change": reasons}, indent=2))
        return
    typer.echo(f"facility {facility_id} at {snapshot.time:%Y-%m-%d %H:%M:%S} UTC")
    typer.echo(snapshot.explain())
    if reasons:
        typer.echo("last change: " + "; ".join(reasons))


@release_app.command("request")
def release_request(
    release_id: Annotated[str, typer.Argument(help="new release order id")],
    lot_id: Annotated[str, typer.Option(help="lot the goods leave from")],
    quantity: Annotated[float, typer.Option(min=0.000001, help="units to release")],
) -> None:
    """Request a release of goods from a lot (an officer approves it)."""
    from lending.operations import request_release

    run(lambda conn: request_release(conn, release_id, lot_id, quantity, now()))
    typer.echo(f"release {release_id}: requested {quantity:g} unit(s) from {lot_id}")


def _advance(release_id: str, to: ReleaseStatus) -> None:
    from lending.operations import advance_release

    order = run(lambda conn: advance_release(conn, release_id, to, now()))
    typer.echo(f"release {release_id}: {order.status} ({order.quantity:g} unit(s) of {order.lot_id})")


@release_app.command("approve")
def release_approve(release_id: Annotated[str, typer.Argument()]) -> None:
    """Approve a requested release."""
    from lending.domain.model import ReleaseStatus

    _advance(release_id, ReleaseStatus.APPROVED)


@release_app.command("execute")
def release_execute(release_id: Annotated[str, typer.Argument()]) -> None:
    """Mark an approved release executed: the goods leave and the lot's quantity falls."""
    from lending.domain.model import ReleaseStatus

    _advance(release_id, ReleaseStatus.EXECUTED)


@release_app.command("reject")
def release_reject(release_id: Annotated[str, typer.Argument()]) -> None:
    """Reject a requested or approved release."""
    from lending.domain.model import ReleaseStatus

    _advance(release_id, ReleaseStatus.REJECTED)


def repay(
    facility_id: Annotated[str, typer.Argument()],
    amount: Annotated[float, typer.Argument(min=0.01, max=1e14, help="amount repaid")],
) -> None:
    """Record a repayment; the facility's outstanding and limit follow."""
    from lending.financing import repay as do_repay

    row = run(lambda conn: do_repay(conn, facility_id, amount, now(), by="cli"))
    typer.echo(f"facility {facility_id}: repaid {amount:,.2f}, outstanding "
               f"{row['outstanding']:,.2f}" + (f", {row['unapplied']:,.2f} more than was owed"
                                               if row["unapplied"] else ""))


def sale(
    facility_id: Annotated[str, typer.Argument()],
    amount: Annotated[float, typer.Argument(min=0, max=1e14, help="sales amount")],
) -> None:
    """Record a sales signal (ERP/POS/invoice) for a facility's borrower."""
    from lending.operations import record_sale

    run(lambda conn: record_sale(conn, facility_id, amount, now()))
    typer.echo(f"facility {facility_id}: sale of {amount:,.2f} recorded")


@alerts_app.command("list")
def alerts_list(
    facility: Annotated[str | None, typer.Option(help="only this facility")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include resolved alerts")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List alerts, newest first."""
    from lending.operations import list_alerts

    alerts = run(lambda conn: list_alerts(conn, facility, all_, limit))
    if not alerts:
        typer.echo("no alerts")
    for a in alerts:
        typer.echo(f"#{a.id} {a.raised_at:%Y-%m-%d %H:%M:%S} {a.severity:<8} {a.status:<12} "
                   f"{a.type:<22} {a.facility_id} {a.lot_id or ''}: {a.message}")


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[int, typer.Argument(min=1)],
               by: Annotated[str, typer.Option(help="who acknowledges")] = "officer") -> None:
    """Acknowledge an open alert."""
    from lending.operations import acknowledge_alert

    run(lambda conn: acknowledge_alert(conn, alert_id, by, now()))
    typer.echo(f"alert #{alert_id} acknowledged by {by}")


@alerts_app.command("resolve")
def alerts_resolve(alert_id: Annotated[int, typer.Argument(min=1)],
                   comment: Annotated[str | None, typer.Option(
                       help="why it is resolved (required for critical alerts and for outbound, "
                            "geofence, tamper, spoofing and duplicate-pledge alerts)")] = None,
                   by: Annotated[str, typer.Option(help="who resolves")] = "officer") -> None:
    """Resolve an alert with a comment (a critical alert without one is refused)."""
    from lending.operations import resolve_alert

    run(lambda conn: resolve_alert(conn, alert_id, by, comment, now()))
    typer.echo(f"alert #{alert_id} resolved by {by}")


@inspection_app.command("record")
def inspection_record(
    lot_id: Annotated[str, typer.Argument(help="the lot counted")],
    count: Annotated[float, typer.Option("--count", help="units counted on site")],
    by: Annotated[str, typer.Option(help="who counted (officer, collateral manager)")] = "officer",
    note: Annotated[str, typer.Option(help="what was seen")] = "",
) -> None:
    """Record a physical count of a lot; a count the sensors disagree with lowers the lot's trust
    and raises inspection_mismatch until they agree again."""
    from lending.operations import record_inspection

    row = run(lambda conn: record_inspection(conn, lot_id, count, counted_by=by, recorded_by="cli",
                                             now=now(), note=note))
    sensors = row["sensor_quantity"]
    said = "nothing" if sensors is None else f"{sensors:,.1f} unit(s)"
    typer.echo(f"inspection #{row['id']}: lot {lot_id} counted {count:,.1f} unit(s) by {by}; "
               f"the sensors said {said}")


@inspection_app.command("list")
def inspection_list(
    lot: Annotated[str | None, typer.Option(help="only this lot")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List inspections, newest count first."""
    from lending.operations import list_inspections

    rows = run(lambda conn: list_inspections(conn, lot, limit))
    if not rows:
        typer.echo("no inspections")
    for r in rows:
        sensors = r["sensor_quantity"]
        said = "-" if sensors is None else f"{sensors:,.1f}"
        note = f": {r['note']}" if r["note"] else ""
        typer.echo(f"#{r['id']} {r['counted_at']:%Y-%m-%d %H:%M:%S} {r['lot_id']} "
                   f"{r['facility_id']} counted {r['counted_quantity']:,.1f} by {r['counted_by']} "
                   f"(sensors {said}){note}")


def engine(
    tick: Annotated[float, typer.Option(
        min=0.5, max=3600, help="seconds between visits of the deadline queue (facilities whose "
        "staleness, cure or window deadline is due)")] = 15.0,
    metrics_port: Annotated[int, typer.Option(
        min=0, max=65535, help="Prometheus port (0 = off)")] = 0,
    shards: Annotated[int | None, typer.Option(
        min=1, max=1024, help="shards of the book split between the engines of this database by "
        "leases (default PLEDGEWATCH_ENGINE_SHARDS, 1: no split)")] = None,
    sweep_every: Annotated[float, typer.Option(
        min=0, max=86_400, help="seconds between financing sweeps: overdue drawdowns, late "
        "payables, shipments proven or contradicted by telemetry (0: off)")] = 30.0,
    ratings: Annotated[bool, typer.Option(
        help="also rate the book daily: platform features, ratings, terms by grade (at start-up "
        "when today's are missing)")] = True,
    ledger: Annotated[bool, typer.Option(
        help="also run the ledger's sequencer: captured events appended to the Merkle log, heads "
        "signed with PLEDGEWATCH_LEDGER_KEY_FILE (one writer at a time across processes)")] = True,
) -> None:
    """Run the lending engine: recompute facilities on new telemetry, portfolio changes and time.
    Run several with the same --shards to split the book; a dead one's share is taken over."""
    from prometheus_client import start_http_server

    from lending.engine import LendingEngine
    from lending.financing import FinancingSweeper
    from lending.metrics import EngineMetrics
    from lending.trade import judge_shipment
    from pledgewatch.runtime import ledger_key_path, start_ledger
    from pledgewatch.serve import bind_problem
    from rating.monitoring import RatingMetrics
    from rating.service import RatingScheduler

    with database() as (url, _conn):
        pass  # checks reachability and migrations; the engine opens its own connections
    metrics = EngineMetrics()
    if metrics_port:
        host = settings_or_exit().http_host
        try:
            start_http_server(metrics_port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise fail(f"cannot serve metrics: {bind_problem(exc, host, metrics_port)}") from None
        typer.echo(f"metrics on http://{host}:{metrics_port}/metrics")
    stop = threading.Event()
    stop_on_signals(stop.set)
    settings = settings_or_exit()
    shards = shards or settings.engine_shards
    lending = LendingEngine(url, tick_s=tick, metrics=metrics, shards=shards,
                            lease_poll_s=settings.engine_lease_poll_s)
    split = f", {shards} shards shared by leases" if shards > 1 else ""
    if sweep_every:
        FinancingSweeper(url, sweep_every, judge_shipment).start(stop)
        split += f", financing sweep every {sweep_every:g}s"
    if ratings:
        RatingScheduler(url, metrics=RatingMetrics(metrics.registry)).start(stop)
        split += ", daily ratings"
    if ledger:
        try:
            start_ledger(url, settings, stop)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot use the ledger signing key {ledger_key_path(settings)}: "
                       f"{exc}") from None
        split += ", ledger sequencer"
    typer.echo(f"lending engine: listening (deadlines every {tick:g}s{split})")
    lending.run(stop)
    typer.echo(f"lending engine stopped: {lending.stats.assessed} assessments, "
               f"{lending.stats.snapshots} snapshots, {lending.stats.alerts_raised} alerts")


def register(app: typer.Typer) -> None:
    app.add_typer(portfolio_app, name="portfolio")
    app.add_typer(prices_app, name="prices")
    app.add_typer(facility_app, name="facility")
    app.add_typer(release_app, name="release")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(inspection_app, name="inspection")
    app.command("repay")(repay)
    app.command("sale")(sale)
    app.command("engine")(engine)
