"""``pledgewatch bench …``: benchmark commands. Each prints its figures, the baseline measured in
the same run and the ratio; the line formats are a contract others parse (see the README)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated

import typer

from bench.alert_latency import run_alert_latency_bench
from bench.api import run_api_bench
from bench.chaos import SCENARIOS as CHAOS_SCENARIOS
from bench.chaos import ChaosOptions, run_chaos_bench
from bench.detection import run_detection_bench
from bench.detection_scenarios import SCENARIOS
from bench.engine import run_engine_bench
from bench.financing import Options as FinancingOptions
from bench.financing import run_financing_bench
from bench.ingest import run_ingest_bench
from bench.ledger import Options as LedgerOptions
from bench.ledger import run_ledger_bench
from bench.revalue import run
from pledgewatch.broker.mosquitto import mosquitto_binary
from pledgewatch.cli.common import fail, settings_or_exit
from pledgewatch.runtime import time_series_options

bench_app = typer.Typer(help="Benchmarks: print figures, the baseline and the ratio.",
                        no_args_is_help=True)


@bench_app.command("ingest")
def bench_ingest(
    messages: Annotated[int, typer.Option(min=1000, max=5_000_000,
                                          help="backlog size")] = 100_000,
    rate: Annotated[int, typer.Option(min=100, max=50_000,
                                      help="offered msg/s for the latency run")] = 2000,
    latency_seconds: Annotated[float, typer.Option(min=1, max=600)] = 10.0,
    repeat: Annotated[int, typer.Option(min=1, max=20, help="runs; medians are printed")] = 3,
    readings: Annotated[int, typer.Option(min=1, max=8, help="readings per message")] = 4,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Backlog drain: raw paho subscriber (baseline) vs the gateway, and publish->commit latency."""
    settings = settings_or_exit()
    code = run_ingest_bench(settings, messages=messages, rate=rate,
                            latency_seconds=latency_seconds, workdir=workdir, repeat=repeat,
                            readings=readings)
    raise typer.Exit(code)


@bench_app.command("revalue")
def bench_revalue(
    lots: Annotated[int, typer.Option(min=10, max=20_000_000, help="pledged lots")] = 1_000_000,
    facilities: Annotated[int | None, typer.Option(min=1, help="facilities (default lots/10)")] = None,
    repeats: Annotated[int, typer.Option(min=1, max=50, help="price ticks; medians printed")] = 5,
) -> None:
    """Revalue a whole portfolio on a price tick: numpy vs a plain-Python loop, same data."""
    if facilities is not None and facilities > lots:
        raise fail("--facilities must not exceed --lots")
    run(lots=lots, facilities=facilities, repeats=repeats)


@bench_app.command("alert-latency")
def bench_alert_latency(
    rate: Annotated[float, typer.Option(min=0, max=20_000, help="background msg/s")] = 1000.0,
    devices: Annotated[int, typer.Option(min=2, max=5000, help="background devices")] = 200,
    trials: Annotated[int, typer.Option(min=1, max=1000, help="thefts measured")] = 40,
    gap: Annotated[float, typer.Option(min=0, max=60, help="seconds between thefts")] = 0.3,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Publish a theft reading -> alert row committed, under background load (p50/p99)."""
    settings = settings_or_exit()
    raise typer.Exit(run_alert_latency_bench(settings, rate=rate, devices=devices, trials=trials,
                                             gap_s=gap, workdir=workdir))


@bench_app.command("api")
def bench_api(
    facilities: Annotated[int, typer.Option(min=10, max=1_000_000,
                                            help="borrowers/facilities loaded")] = 10_000,
    connections: Annotated[int, typer.Option(min=1, max=1000, help="wrk connections")] = 4,
    duration: Annotated[str, typer.Option(help="wrk duration per route and round, e.g. 10s")] = "10s",
    threads: Annotated[int, typer.Option(min=1, max=64, help="wrk threads")] = 2,
    repeat: Annotated[int, typer.Option(min=1, max=20, help="rounds; medians are printed")] = 1,
    warmup: Annotated[str, typer.Option(help="wrk warm-up per route before measuring")] = "3s",
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """API requests/s and p50/p99 under wrk: limit and alerts as an enterprise vs a bare endpoint."""
    for name, value in (("--duration", duration), ("--warmup", warmup)):
        if not re.fullmatch(r"[1-9][0-9]*[smh]?", value):
            raise fail(f"{name} must look like 10s, 2m or 10 (seconds), got {value!r}")
    if threads > connections:
        raise fail("--threads must not exceed --connections (wrk needs a connection per thread)")
    settings = settings_or_exit()
    raise typer.Exit(run_api_bench(settings, facilities=facilities, connections=connections,
                                   duration=duration, threads=threads, repeat=repeat,
                                   warmup=warmup, workdir=workdir))


@bench_app.command("detection")
def bench_detection(
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="seed of the scenario library")] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="a short run for the test suite: normal is "
                                        "4 lots × 6 h, incidents have less history")] = False,
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="run only this scenario (repeatable): " + ", ".join(SCENARIOS))] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Seeded incidents through the real engine: detected or missed, minutes, units lost, magnitude."""
    unknown = sorted(set(scenario or ()) - set(SCENARIOS))
    if unknown:
        raise fail(f"--scenario: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    settings = settings_or_exit()
    raise typer.Exit(run_detection_bench(settings, seed=seed, quick=quick,
                                         scenarios=scenario or list(SCENARIOS), workdir=workdir))


@bench_app.command("chaos")
def bench_chaos(
    messages: Annotated[int | None, typer.Option(
        min=100, max=1_000_000, help="messages per scenario (default 20000; --quick 3000)")] = None,
    rate: Annotated[float | None, typer.Option(
        min=10, max=50_000, help="offered msg/s of the paced scenarios (default 2000; --quick "
        "1500)")] = None,
    outage: Annotated[float | None, typer.Option(
        min=1, max=600, help="seconds the database is down / readings is locked (default 15; "
        "--quick 3)")] = None,
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="run only this scenario (repeatable): " + ", ".join(CHAOS_SCENARIOS))
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="small sizes, for the test suite")] = False,
    pg_stop: Annotated[str, typer.Option(
        help="how db_outage stops the private PostgreSQL: immediate (a crash) or fast")
    ] = "immediate",
    database_url: Annotated[str | None, typer.Option(
        help="create the bench's database on this server instead of a private embedded cluster "
        "(default: PLEDGEWATCH_DATABASE_URL when set); a shared server is never stopped")] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Kill the gateway, the database, the broker while devices publish: acked vs stored."""
    unknown = sorted(set(scenario or ()) - set(CHAOS_SCENARIOS))
    if unknown:
        raise fail(f"--scenario: unknown {', '.join(map(repr, unknown))} "
                   f"(known: {', '.join(CHAOS_SCENARIOS)})")
    if pg_stop not in ("fast", "immediate"):
        raise fail(f"--pg-stop must be fast or immediate, got {pg_stop!r}")
    if database_url is not None and not re.match(r"postgres(ql)?://", database_url):
        raise fail("--database-url must start with postgresql://")
    if mosquitto_binary() is None:
        raise fail("the chaos bench needs Debian's mosquitto (apt-get install mosquitto)")
    settings = settings_or_exit()
    options = ChaosOptions.make(quick=quick, messages=messages, rate=rate, outage_s=outage,
                                pg_stop="fast" if pg_stop == "fast" else "immediate")
    chosen = list(dict.fromkeys(scenario)) if scenario else list(CHAOS_SCENARIOS)
    raise typer.Exit(run_chaos_bench(options, chosen, workdir=workdir,
                                     database_url=database_url or settings.database_url))


@bench_app.command("engine")
def bench_engine(
    facilities: Annotated[int, typer.Option(min=1, max=1_000_000, help="facilities")] = 1000,
    lots_per_facility: Annotated[int, typer.Option(min=1, max=50, help="lots per facility")] = 5,
    telemetry_rate: Annotated[float, typer.Option(
        min=10, max=100_000, help="readings/s offered across the fleet")] = 10_000.0,
    telemetry_seconds: Annotated[float, typer.Option(
        min=0.1, max=600, help="seconds of paced readings")] = 5.0,
    database_url: Annotated[str | None, typer.Option(
        help="create the bench's database on this server instead of a private embedded cluster"
        )] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
    engines: Annotated[int, typer.Option(
        min=1, max=16, help="engine processes splitting the book, compared with one")] = 2,
) -> None:
    """The lending engine at scale: load, full pass, price tick, telemetry p99, rss, a full pass
    by 1 and --engines engines splitting the book, ratio."""
    if database_url is not None and not re.match(r"postgres(ql)?://", database_url):
        raise fail("--database-url must start with postgresql://")
    settings = settings_or_exit()
    raise typer.Exit(run_engine_bench(
        facilities=facilities, lots_per_facility=lots_per_facility, rate=telemetry_rate,
        seconds=telemetry_seconds, database_url=database_url,
        options=time_series_options(settings), workdir=workdir, engines=engines))


@bench_app.command("financing")
def bench_financing(
    facilities: Annotated[int, typer.Option(
        min=20, max=1_000_000, help="suppliers of the core enterprise, one facility each")] = 10_000,
    clients: Annotated[int, typer.Option(min=1, max=256, help="concurrent HTTP clients")] = 16,
    requests: Annotated[int | None, typer.Option(
        min=100, max=10_000_000, help="requests per operation (default 10000)")] = None,
    seconds: Annotated[float | None, typer.Option(
        min=1, max=3600, help="seconds per operation instead of --requests")] = None,
    warmup: Annotated[int, typer.Option(
        min=0, max=100_000, help="warm-up requests per operation, not measured")] = 300,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="seed of the load")] = 0,
    pool_size: Annotated[int | None, typer.Option(
        min=1, max=200, help="database connections of each server (default: the API's setting, "
        "PLEDGEWATCH_API_POOL_SIZE)")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="create the bench's database on this server instead of a private embedded cluster "
        "(default: PLEDGEWATCH_DATABASE_URL when set)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Drawdown decisions and voucher transfers per second (p50/p99) under concurrent clients,
    beside a bare FastAPI + psycopg locked UPDATE; the ratio; the overdraft audit.

    The real API and the baseline run as uvicorn processes (one worker each) on a scratch
    database: a core enterprise with a programme line, --facilities suppliers in its chain, each
    with a facility, one limit snapshot leaving room for two or three drawdowns, an API key, and
    confirmed payables. --clients threads post drawdowns with Idempotency-Keys on random
    facilities (one in eight on a few hot ones; one in sixteen a retry of the same key), then
    transfer parts of vouchers down the chain (one in eight a concurrent double spend of a voucher
    another client is spending), then hit the baseline: `POST /counters/{id}`, one
    `UPDATE ... SET n = n + 1 ... RETURNING`. Prints `drawdown|transfer|baseline per_s N p50 X ms
    p99 Y ms`, then `ratio <min(drawdown, transfer) per_s / baseline per_s>` (target >= 0.5) and
    last `overdrafts N` (target 0): facilities whose approved drawdowns exceed their latest
    limit or whose outstanding differs from them, spent vouchers whose children do not sum to
    them or that were transferred more than once, retries answered with a new drawdown, and
    vouchers two clients both got a 201 for. Exit 1 on an unexpected answer, 3 on overdrafts.
    Both servers get --pool-size connections (the API's credential look-ups have a small pool
    of their own).
    """
    if requests is not None and seconds is not None:
        raise fail("give --requests or --seconds, not both")
    if database_url is not None and not re.match(r"postgres(ql)?://", database_url):
        raise fail("--database-url must start with postgresql://")
    settings = settings_or_exit()
    options = FinancingOptions(
        facilities=facilities, clients=clients,
        requests=requests if requests is not None or seconds is not None else 10_000,
        seconds=seconds, warmup=warmup, seed=seed,
        pool_size=pool_size if pool_size is not None else settings.api_pool_size)
    raise typer.Exit(run_financing_bench(
        options, database_url=database_url or settings.database_url,
        time_series=time_series_options(settings), workdir=workdir))


@bench_app.command("scorecard")
def bench_scorecard(
    folds: Annotated[int, typer.Option(min=2, max=20, help="cross-validation folds")] = 5,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="seed of the folds")] = 0,
    borrowers: Annotated[int, typer.Option(min=1000, max=10_000_000,
                                           help="borrowers scored for scored_per_s")] = 100_000,
) -> None:
    """German credit: the scorecard pipeline's and a plain one-hot logistic regression's
    cross-validated AUC and KS, scoring throughput, ratio."""
    # imported here: pandas, scikit-learn and optbinning would slow every other command's start
    scorecard = importlib.import_module("bench.scorecard")
    scorecard.run_scorecard_bench(folds=folds, seed=seed, borrowers=borrowers)


@bench_app.command("ledger")
def bench_ledger(
    writers: Annotated[int, typer.Option(min=1, max=64, help="concurrent writers")] = 8,
    seconds: Annotated[float, typer.Option(min=0.5, max=600, help="seconds of writing, per table")
                       ] = 10.0,
    entries: Annotated[int, typer.Option(
        min=100, max=20_000_000, help="log size for the proof and verification figures")
    ] = 1_000_000,
    proofs: Annotated[int, typer.Option(min=10, max=1_000_000, help="inclusion proofs timed")] = 2000,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    database_url: Annotated[str | None, typer.Option(
        help="create the bench's database on this server instead of a private embedded cluster "
        "(default: PLEDGEWATCH_DATABASE_URL when set)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch dir (default: a temp dir)")] = None,
) -> None:
    """Ledger append rate under concurrent writers beside plain inserts, inclusion-proof p50/p99
    and full verification of a log of --entries; the ratio (see bench/ledger.py)."""
    if database_url is not None and not re.match(r"postgres(ql)?://", database_url):
        raise fail("--database-url must start with postgresql://")
    settings = settings_or_exit()
    raise typer.Exit(run_ledger_bench(
        LedgerOptions(writers=writers, seconds=seconds, entries=entries, proofs=proofs, seed=seed),
        database_url=database_url or settings.database_url,
        time_series=time_series_options(settings), workdir=workdir))
