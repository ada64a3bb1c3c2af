"""`pledgewatch bench api`: requests/s and p50/p99 latency of the API under a load generator.

A fresh scratch database (embedded, or a new database on the configured server) is migrated and
bulk-loaded with ``facilities`` borrowers of one facility each, a short limit history per facility
(the newest snapshot is what the API answers with) and a few alerts per facility; one borrower gets
an enterprise API key. Two servers then run in subprocesses, one uvicorn worker each, as in
production (log level warning, no access log):

* the real app (:func:`pledgewatch.http.create_app`, live hub on), driven on
  ``GET /api/v1/facilities/{id}/limit`` and ``GET /api/v1/alerts`` with ``X-API-Key``;
* the baseline: a bare FastAPI + psycopg_pool endpoint (sync ``def`` like the real routes) that
  reads the same latest snapshot row with no authentication.

Each is warmed up and then driven by Debian's ``wrk`` (``-t2 -c4 -d10s --latency`` by default) on
loopback, one after the other; a non-2xx answer or a socket error fails the run. Figures are wrk's
Requests/sec and its latency distribution's 50 % and 99 % points; with ``--repeat`` every round is
printed and then the medians. The last line is ``ratio <worst route rps / baseline rps>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from fastapi import FastAPI, HTTPException
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from api.accounts import issue_api_key
from bench.stats import median
from lending.domain.alerts import AlertType, Severity
from lending.domain.limits import LimitSnapshot, LotLine
from lending.domain.model import ProductTerms
from lending.store import snapshot_from_inputs, terms_json
from pledgewatch.embedded import EmbeddedPostgres
from pledgewatch.http import create_app
from pledgewatch.net import free_port, wait_for_port
from pledgewatch.runtime import time_series_options
from pledgewatch.settings import Settings, load_settings
from schema.migrate import apply_all

TENANT = "bench"
KEY_BORROWER = 0  # the borrower whose enterprise key drives the real routes
SNAPSHOTS_PER_FACILITY = 3  # history; the API answers with the newest
ALERTS_PER_FACILITY = 3  # one open critical, one acknowledged warning, one resolved
URL_ENV = "PLEDGEWATCH_BENCH_API_DATABASE_URL"
POOL_ENV = "PLEDGEWATCH_BENCH_API_POOL_SIZE"
WRK_MISSING = ("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu, as root), or "
               "`make install` as root, then run again")

LIMIT_ROUTE = "/api/v1/facilities/{id}/limit"
ALERTS_ROUTE = "/api/v1/alerts"
BASELINE = "baseline"


# --- wrk output ----------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([0-9.]+)(us|ms|s|m|h)"


class WrkError(ValueError):
    """wrk's output lacks a figure, or the run answered with errors."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int  # wrk counts "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout

    def check(self, what: str) -> None:
        if self.requests <= 0:
            raise WrkError(f"{what}: wrk completed no requests")
        if self.non_2xx:
            raise WrkError(f"{what}: {self.non_2xx} of {self.requests} responses were not 2xx")
        if self.socket_errors:
            raise WrkError(f"{what}: {self.socket_errors} socket errors (connect/read/write/timeout)")


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the 50 % / 99 % latency (ms), request and error counts from ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)\s*$", output, re.M)
    p50 = re.search(rf"^\s*50(?:\.0+)?%\s+{_DURATION}\s*$", output, re.M)
    p99 = re.search(rf"^\s*99(?:\.0+)?%\s+{_DURATION}\s*$", output, re.M)
    done = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if rps is None or p50 is None or p99 is None or done is None:
        missing = [name for name, m in (("Requests/sec", rps), ("50%", p50), ("99%", p99),
                                        ("requests in", done)) if m is None]
        raise WrkError(f"wrk output lacks {', '.join(missing)} (was --latency given?)")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", output, re.M)
    sockets = re.search(r"^\s*Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output, re.M)
    return WrkResult(
        rps=float(rps.group(1)), p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)), requests=int(done.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0)


def wrk_binary() -> str | None:
    return shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)


def run_wrk(wrk: str, url: str, *, threads: int, connections: int, duration: str,
            headers: dict[str, str], timeout_s: float = 2.0) -> WrkResult:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency",
           f"--timeout={timeout_s:g}s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


# --- data ----------------------------------------------------------------------------------------

def borrower_id(i: int) -> str:
    return f"bench-b-{i:06d}"


def facility_id(i: int) -> str:
    return f"bench-f-{i:06d}"


def snapshot(i: int, at: datetime, price: float, terms: ProductTerms) -> LimitSnapshot:
    """A limit snapshot of facility ``i`` as the engine computes it (two lots, LTV about 0.5)."""
    lots = []
    for n, (commodity, declared, unit_ratio) in enumerate((("wheat", 8000.0, 0.05),
                                                           ("steel-coil", 500.0, 1.0))):
        verified = declared * (0.97 + 0.01 * (i % 3))
        pledged = min(declared, verified)
        quote = price * (1 + n)
        haircut = 0.08 + 0.01 * n
        value = pledged * unit_ratio * quote * (1 - haircut)
        trust = 0.95
        lots.append(LotLine(
            lot_id=f"bench-l-{i:06d}-{n}", commodity=commodity, declared=declared,
            verified=verified, pledged=pledged, trust=trust,
            trust_factors={"sensor_age": 1.0, "rfid_agreement": trust}, price=quote,
            units_per_quote=unit_ratio, price_time=(at - timedelta(hours=6)).isoformat(),
            haircut=haircut, volatility=0.02 + 0.01 * n, value=value,
            advance_rate=terms.advance_rate, contribution=value * terms.advance_rate * trust))
    line = 1_000_000.0 + 1000.0 * (i % 50)
    outstanding = 150_000.0 + 500.0 * (i % 200)
    collateral = sum(lot.value for lot in lots)
    trusted = sum(lot.value * lot.trust for lot in lots)
    base = sum(lot.contribution for lot in lots)
    limit = min(line, base)
    return LimitSnapshot(
        facility_id=facility_id(i), time=at, currency="EUR", line=line, outstanding=outstanding,
        reserves=0.0, collateral_value=collateral, trusted_collateral_value=trusted,
        lots_base=base, eligible_receivables=0.0,
        ar_advance_rate=terms.ar_advance_rate, receivables_base=0.0, borrowing_base=base,
        limit=limit, available=max(0.0, limit - outstanding), ltv=outstanding / trusted,
        warning_ltv=terms.warning_ltv, liquidation_ltv=terms.liquidation_ltv, lots=tuple(lots),
        binding="line" if line <= base else "borrowing base")


_SNAPSHOT_FIELDS = [f.name for f in fields(LimitSnapshot)]
_LOT_FIELDS = [f.name for f in fields(LotLine)]


def snapshot_inputs(snap: LimitSnapshot) -> dict[str, Any]:
    """``snap.inputs()`` without ``dataclasses.asdict``'s deep copies (30x faster: the load takes
    seconds, not a minute); :func:`load` checks that both agree."""
    data = {name: getattr(snap, name) for name in _SNAPSHOT_FIELDS}
    data["time"] = snap.time.isoformat()
    data["ltv"] = None if math.isinf(snap.ltv) else snap.ltv
    data["lots"] = tuple({name: getattr(lot, name) for name in _LOT_FIELDS}
                         | {"trust_factors": dict(lot.trust_factors)} for lot in snap.lots)
    return data


ALERT_KINDS = ((AlertType.SENSOR_TAMPER, Severity.CRITICAL, "open"),
               (AlertType.LTV_WARNING, Severity.WARNING, "acknowledged"),
               (AlertType.SENSOR_STALE, Severity.INFO, "resolved"))


def load(url: str, facilities: int, now: datetime) -> None:
    """Borrowers, facilities, limit snapshots and alerts by COPY, in one transaction."""
    terms = ProductTerms()
    terms_doc = terms_json(terms)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY borrowers (borrower_id, tenant, name, role) FROM STDIN") as copy:
            for i in range(facilities):
                copy.write_row((borrower_id(i), TENANT, f"Bench borrower {i}", "independent"))
        with cur.copy("COPY facilities (facility_id, borrower_id, currency, line, outstanding,"
                      " terms) FROM STDIN") as copy:
            for i in range(facilities):
                copy.write_row((facility_id(i), borrower_id(i), "EUR", 1_000_000 + 1000 * (i % 50),
                                150_000 + 500 * (i % 200), terms_doc))
        with cur.copy("COPY limit_snapshots (facility_id, time, credit_limit, available,"
                      " outstanding, collateral_value, trusted_collateral_value, ltv, reasons,"
                      " inputs) FROM STDIN") as copy:
            for i in range(facilities):
                for k in range(SNAPSHOTS_PER_FACILITY):
                    at = now - timedelta(minutes=5 * (SNAPSHOTS_PER_FACILITY - 1 - k))
                    snap = snapshot(i, at, 240.0 + k + (i % 17), terms)
                    inputs = snapshot_inputs(snap)
                    if i == 0 and k == 0:  # the engine's shape, and it reads back
                        assert inputs == snap.inputs(), "snapshot_inputs differs from inputs()"
                        snapshot_from_inputs(json.loads(json.dumps(inputs)))
                    copy.write_row((
                        facility_id(i), at, round(inputs["limit"], 2), round(inputs["available"], 2),
                        round(inputs["outstanding"], 2), round(inputs["collateral_value"], 2),
                        round(inputs["trusted_collateral_value"], 2), inputs["ltv"],
                        Jsonb(["price"] if k else []), Jsonb(inputs)))
        with cur.copy("COPY alerts (key, type, severity, facility_id, lot_id, status, message,"
                      " evidence, auto_resolve, raised_at, acknowledged_at, acknowledged_by,"
                      " resolved_at, resolved_by, comment) FROM STDIN") as copy:
            for i in range(facilities):
                for k, (kind, severity, status) in enumerate(ALERT_KINDS[:ALERTS_PER_FACILITY]):
                    lot = f"bench-l-{i:06d}-{k % 2}"
                    raised = now - timedelta(hours=3 - k)
                    acked = status in ("acknowledged", "resolved")
                    copy.write_row((
                        f"{kind}:{lot}", str(kind), str(severity), facility_id(i), lot, status,
                        f"{kind.replace('_', ' ')} on {lot}",
                        Jsonb({"device": f"bench-d-{i:06d}-{k}", "reading": 17.5 + k,
                               "seen_at": raised.isoformat()}),
                        kind is not AlertType.SENSOR_TAMPER, raised,
                        raised + timedelta(minutes=10) if acked else None,
                        "officer" if acked else None,
                        raised + timedelta(hours=1) if status == "resolved" else None,
                        "officer" if status == "resolved" else None,
                        "sensor replaced" if status == "resolved" else None))
        conn.commit()
        cur.execute("ANALYZE")


def issue_key(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        key, _row = issue_api_key(conn, borrower_id(KEY_BORROWER), "bench ERP", "bench")
    return key.secret


# --- the servers ---------------------------------------------------------------------------------

def real_app() -> Any:
    """uvicorn factory: the production app (settings from the environment, live hub on)."""
    return create_app(os.environ[URL_ENV], settings=load_settings())


def bare_app() -> tuple[FastAPI, ConnectionPool]:
    """A bare FastAPI app with a psycopg pool (the environment's database and pool size) opened
    and closed with it: the baselines' server, no auth, no middleware."""
    pool = ConnectionPool(os.environ[URL_ENV], min_size=1, max_size=int(os.environ[POOL_ENV]),
                          open=False, kwargs={"autocommit": True})

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        yield
        pool.close()

    return FastAPI(lifespan=lifespan), pool


def baseline_app() -> Any:
    """uvicorn factory: a bare FastAPI + psycopg_pool endpoint reading the same row, no auth."""
    app, pool = bare_app()

    @app.get("/facilities/{facility_id}/limit")
    def limit(facility_id: str) -> dict[str, Any]:
        with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT facility_id, id AS snapshot_id, time, credit_limit AS \"limit\", available,"
                " outstanding, collateral_value, ltv FROM limit_snapshots WHERE facility_id = %s"
                " ORDER BY time DESC, id DESC LIMIT 1", (facility_id,)).fetchone()
        if row is None:
            raise HTTPException(404)
        return row

    return app


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def uvicorn_server(name: str, factory: str, env: dict[str, str], workdir: Path) -> Iterator[Server]:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, 60, process):
            raise RuntimeError(f"the {name} server did not start; see {log}:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        yield Server(name, f"http://127.0.0.1:{port}", process, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def fetch(url: str, headers: dict[str, str]) -> Any:
    """One request that must answer 200 with JSON (the route works before it is measured)."""
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise WrkError(f"{url}: HTTP {response.status}")
        return json.loads(response.read())


# --- the run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    route: str  # the label printed
    server: Server
    path: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url + self.path


def figure_line(route: str, rps: float, p50: float, p99: float) -> str:
    return f"{route} rps {rps:.0f} p50 {p50:.2f} ms p99 {p99:.2f} ms"


def ratio_of(results: dict[str, WrkResult] | dict[str, tuple[float, float, float]]) -> float:
    def rps(v: WrkResult | tuple[float, float, float]) -> float:
        return v.rps if isinstance(v, WrkResult) else v[0]

    worst = min(rps(v) for k, v in results.items() if k != BASELINE)
    return worst / rps(results[BASELINE])


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def scratch_database(settings: Settings, workdir: Path) -> Iterator[tuple[str, str]]:
    """A new, empty database of its own, dropped afterwards, and where it lives: on the configured
    server (never the configured database itself), or on an embedded server under ``workdir``."""
    with ExitStack() as stack:
        if settings.database_url:
            admin_url, where = settings.database_url, "configured server"
        else:
            pg = EmbeddedPostgres(workdir / "postgres").start()
            stack.callback(pg.release)
            admin_url, where = pg.url, "embedded"
        name = f"pledgewatch_bench_api_{secrets.token_hex(4)}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name)), where
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


def run_api_bench(settings: Settings, *, facilities: int, connections: int, duration: str,
                  threads: int, repeat: int, warmup: str, workdir: Path | None) -> int:
    """Exit code: 0, 1 when a server or a response failed, 2 without wrk."""
    wrk = wrk_binary()
    if wrk is None:
        progress(f"error: {WRK_MISSING}")
        return 2
    try:
        _run(settings, wrk, facilities=facilities, connections=connections, duration=duration,
             threads=threads, repeat=repeat, warmup=warmup, workdir=workdir)
    except (WrkError, RuntimeError, OSError, psycopg.Error) as exc:
        progress(f"error: {exc}")
        return 1
    return 0


def _run(settings: Settings, wrk: str, *, facilities: int, connections: int, duration: str,
         threads: int, repeat: int, warmup: str, workdir: Path | None) -> None:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-api-")))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        logging.getLogger("yoyo").setLevel(logging.WARNING)
        url, where = stack.enter_context(scratch_database(settings, workdir))
        apply_all(url, time_series_options(settings))
        with psycopg.connect(url) as conn:
            server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        progress(f"scratch database on PostgreSQL {server_version} ({where}) ready in "
                 f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        load(url, facilities, datetime.now(UTC))
        key = issue_key(url)
        progress(f"loaded {facilities:,} borrowers/facilities, "
                 f"{facilities * SNAPSHOTS_PER_FACILITY:,} limit snapshots, "
                 f"{facilities * ALERTS_PER_FACILITY:,} alerts in {time.perf_counter() - started:.1f} s")

        env = {URL_ENV: url, POOL_ENV: str(settings.api_pool_size), "PLEDGEWATCH_DATABASE_URL": url,
               "PLEDGEWATCH_STATE_DIR": str(workdir / "state"), "PLEDGEWATCH_LOG_LEVEL": "WARNING",
               "PLEDGEWATCH_JWT_SECRET": secrets.token_hex(32)}
        base = stack.enter_context(uvicorn_server(BASELINE, "bench.api:baseline_app",
                                                  env, workdir))
        real = stack.enter_context(uvicorn_server("api", "bench.api:real_app", env,
                                                  workdir))
        fac = facility_id(KEY_BORROWER)
        auth = {"X-API-Key": key}
        targets = [Target(LIMIT_ROUTE, real, f"/api/v1/facilities/{fac}/limit", auth),
                   Target(ALERTS_ROUTE, real, "/api/v1/alerts", auth),
                   Target(BASELINE, base, f"/facilities/{fac}/limit", {})]
        shown = fetch(targets[0].url, auth)
        items = fetch(targets[1].url, auth)["items"]
        fetch(targets[2].url, {})
        if shown["facility_id"] != fac or not items or {a["facility_id"] for a in items} != {fac}:
            raise WrkError("the API answered with another borrower's data")
        progress(f"servers: one uvicorn worker each; wrk -t{threads} -c{connections} -d{duration}; "
                 f"enterprise sees {len(items)} alerts; warming up ({warmup} per route)")
        for target in targets:
            run_wrk(wrk, target.url, threads=threads, connections=connections, duration=warmup,
                    headers=target.headers).check(target.route)

        rounds: list[dict[str, WrkResult]] = []
        for n in range(1, repeat + 1):
            results: dict[str, WrkResult] = {}
            for target in targets:
                progress(f"round {n}/{repeat}: {target.route} ...")
                result = run_wrk(wrk, target.url, threads=threads, connections=connections,
                                 duration=duration, headers=target.headers)
                result.check(target.route)
                results[target.route] = result
            rounds.append(results)
            if repeat > 1:
                for route, r in results.items():
                    print(f"round {n}: {figure_line(route, r.rps, r.p50_ms, r.p99_ms)}", flush=True)
                print(f"round {n}: ratio {ratio_of(results):.2f}", flush=True)
        for proc in (real.process, base.process):
            if proc.poll() is not None:
                raise RuntimeError(f"a server exited during the run (code {proc.returncode})")

    medians = summarise(rounds)
    if repeat > 1:
        print(f"medians of {repeat} rounds:")
    for route, (rps, p50, p99) in medians.items():
        print(figure_line(route, rps, p50, p99))
    print(f"ratio {ratio_of(medians):.2f}", flush=True)


def summarise(rounds: Sequence[dict[str, WrkResult]]) -> dict[str, tuple[float, float, float]]:
    """Per route: the median requests/s, p50 and p99 over the rounds."""
    return {route: (median([r[route].rps for r in rounds]), median([r[route].p50_ms for r in rounds]),
                    median([r[route].p99_ms for r in rounds]))
            for route in rounds[0]}
