"""`pledgewatch bench financing`: decisions per second and p50/p99 of drawdowns and voucher
transfers through the real API under concurrent clients, beside a bare FastAPI + psycopg endpoint
doing one locked UPDATE, and an audit that nothing was overdrawn or spent twice.

A scratch database (embedded, or a new database on the given server, dropped afterwards) is
migrated and loaded with COPY: a core enterprise with a programme line and ``facilities``
suppliers in its chain, each with one facility (an opening balance), one limit snapshot written
directly (the engine is not what is measured) leaving a small available limit, and an enterprise
API key each (:func:`api.accounts.issue_api_key`). One facility in a hundred has an open critical
alert and one borrower in a hundred is blacklisted, so the decision takes every path. Confirmed
payables (a receivable on the core enterprise and its root voucher) are held by the suppliers.

Two servers run in child processes, one uvicorn worker each, as ``bench api`` runs them, with the
same pool size (the API's setting unless ``pool_size`` says otherwise): the real app
(:func:`bench.api.real_app`) and the baseline (:func:`baseline_app`: ``POST /counters/{id}``, a
sync ``def`` doing ``UPDATE … SET n = n + 1 WHERE id = %s RETURNING …`` on one of ``facilities``
rows, no auth). A 503 stops the run and says why. ``clients`` threads, each with its own keep-alive
HTTP connection, then drive, one phase after the other, each phase warmed up first:

* ``drawdown``: ``POST /api/v1/drawdowns`` with the borrower's ``X-API-Key`` and a fresh
  ``Idempotency-Key`` on a random facility (one request in eight on one of ``clients`` hot
  facilities, so that concurrent requests race for the same lock); amounts are such that each
  facility's available limit covers two or three. One request in sixteen is a retry of the
  client's previous one with the same key, which must answer 200 with the same drawdown.
  Approved and pending (for an officer) are both decisions.
* ``transfer``: ``POST /api/v1/vouchers/{id}/transfer`` by the holder (its key) of part of a
  voucher to another supplier of the chain; the new voucher goes back to the pool (down to tier 3,
  then a fresh confirmed payable is taken). One request in eight deliberately spends a voucher
  another client is spending at that moment: exactly one of them may get 201, the other 409.
* ``baseline``: the bare endpoint, on random rows, for the same number of requests (or seconds).

Any other answer fails the run. Latency is per request at the client; ``per_s`` is requests
answered over the phase's wall time. Afterwards the database is audited.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from fastapi import HTTPException
from psycopg.types.json import Jsonb

from api.accounts import issue_api_key
from bench.api import POOL_ENV, URL_ENV, Server, bare_app, uvicorn_server
from bench.scratch import scratch_database
from bench.stats import percentile
from lending import financing
from lending.domain.model import ProductTerms
from lending.store import terms_json
from schema.migrate import apply_all
from schema.timescale import TimeSeriesOptions

TENANT = "bench"
CORE = "bench-core"
PROGRAMME = "bench-chain"
CURRENCY = "EUR"
OPENING = 100_000  # outstanding of every facility at the start (an opening drawdown)
AVAILABLE = 60_000  # limit − outstanding at the start: two or three requests' worth
AMOUNT = (15_000.0, 35_000.0)  # drawdown amounts, uniform
HOT_SHARE = 1 / 8  # drawdowns on one of `clients` hot facilities (racing for the same lock)
RETRY_SHARE = 1 / 16  # drawdowns that repeat the client's previous request with the same key
DOUBLE_SPEND_SHARE = 1 / 8  # transfers of a voucher another client is spending right now
MAX_TIER = 3  # a voucher passes down to tier 3, then a fresh payable is taken
PAYABLE = (20_000.0, 200_000.0)  # confirmed payables' face values, uniform
ALERT_EVERY, ALERT_AT = 100, 7  # facility i with i % 100 == 7: an open critical alert
BLACKLIST_AT = 57  # borrower i with i % 100 == 57: on the blacklist
PROGRESS_EVERY_S = 5.0
OPERATIONS = ("drawdown", "transfer", "baseline")


class BenchError(RuntimeError):
    """An answer the benchmark did not expect, or a server that failed."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def borrower_id(i: int) -> str:
    return f"bf-b-{i:06d}"


def facility_id(i: int) -> str:
    return f"bf-f-{i:06d}"


# --- data ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Voucher:
    voucher_id: str
    holder: int  # supplier index
    cents: int
    tier: int


@dataclass
class Book:
    keys: list[str]  # supplier index -> its API key
    payables: list[Voucher]  # confirmed root vouchers


def load(url: str, facilities: int, payables: int, now: datetime, seed: int = 0) -> Book:
    """The chain, facilities with a live limit, alerts, blacklist, confirmed payables, the
    baseline's counters and one API key per supplier."""
    rng = random.Random(seed)
    terms = terms_json(ProductTerms())
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO borrowers (borrower_id, tenant, name, role) VALUES"
                    " (%s, %s, 'Bench Steel Core', 'core')", (CORE, TENANT))
        with cur.copy("COPY borrowers (borrower_id, tenant, name, role, core_id) FROM STDIN") as cp:
            for i in range(facilities):
                cp.write_row((borrower_id(i), TENANT, f"Bench supplier {i}", "supplier", CORE))
        with cur.copy("COPY facilities (facility_id, borrower_id, currency, line, outstanding,"
                      " terms) FROM STDIN") as cp:
            for i in range(facilities):
                cp.write_row((facility_id(i), borrower_id(i), CURRENCY, 1_000_000,
                              OPENING + 1000 * (i % 7), terms))
        with cur.copy("COPY limit_snapshots (facility_id, time, credit_limit, available,"
                      " outstanding, collateral_value, ltv, reasons, inputs) FROM STDIN") as cp:
            for i in range(facilities):
                owed = OPENING + 1000 * (i % 7)
                limit = owed + AVAILABLE
                cp.write_row((facility_id(i), now - timedelta(minutes=1), limit, AVAILABLE, owed,
                              2 * limit, owed / (2 * limit), Jsonb([]),
                              Jsonb({"bench": True, "limit": limit, "outstanding": owed})))
        with cur.copy("COPY alerts (key, type, severity, facility_id, status, message, evidence,"
                      " auto_resolve, raised_at) FROM STDIN") as cp:
            for i in range(ALERT_AT, facilities, ALERT_EVERY):
                cp.write_row((f"sensor_tamper:bench:{i}", "sensor_tamper", "critical",
                              facility_id(i), "open", "seal broken", Jsonb({"bench": i}), False,
                              now - timedelta(hours=1)))
        with cur.copy("COPY blacklist (borrower_id, reason, added_by, added_at) FROM STDIN") as cp:
            for i in range(BLACKLIST_AT, facilities, ALERT_EVERY):
                cp.write_row((borrower_id(i), "goods pledged twice elsewhere", "bench", now))
        conn.commit()
        financing.create_programme(conn, PROGRAMME, CORE, CURRENCY, 10**13, 0.8, "bench", now)
        due = now + timedelta(days=60)
        roots: list[Voucher] = []
        with cur.copy("COPY receivables (receivable_id, facility_id, debtor, debtor_id, amount,"
                      " due, verified, verified_at, verified_by, posted_by, programme_id,"
                      " confirmed_at, confirmed_by) FROM STDIN") as cp:
            for j in range(payables):
                holder = rng.randrange(facilities)
                cents = rng.randrange(int(PAYABLE[0] * 100), int(PAYABLE[1] * 100))
                roots.append(Voucher(f"bf-v-{j:07d}", holder, cents, 1))
                cp.write_row((f"bf-r-{j:07d}", facility_id(holder), "Bench Steel Core", CORE,
                              cents / 100, due, True, now, "debtor:bench", borrower_id(holder),
                              PROGRAMME, now, "bench"))
        with cur.copy("COPY vouchers (voucher_id, programme_id, receivable_id, parent_id, root_id,"
                      " holder_id, amount, maturity, status, created_by, created_at)"
                      " FROM STDIN") as cp:
            for j, v in enumerate(roots):
                cp.write_row((v.voucher_id, PROGRAMME, f"bf-r-{j:07d}", None, v.voucher_id,
                              borrower_id(v.holder), v.cents / 100, due, "active", "bench", now))
        cur.execute("CREATE TABLE bench_counters (id integer PRIMARY KEY, n bigint NOT NULL)")
        cur.execute("INSERT INTO bench_counters SELECT g, 0 FROM generate_series(0, %s - 1) g",
                    (facilities,))
        keys = [issue_api_key(conn, borrower_id(i), "bench ERP", "bench")[0].secret
                for i in range(facilities)]
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return Book(keys, roots)


# --- the baseline server -------------------------------------------------------------------------

def baseline_app() -> Any:
    """uvicorn factory: a bare FastAPI + psycopg_pool endpoint doing one locked UPDATE, no auth."""
    app, pool = bare_app()

    @app.post("/counters/{counter_id}")
    def bump(counter_id: int) -> dict[str, int]:
        with pool.connection() as conn:
            row = conn.execute("UPDATE bench_counters SET n = n + 1 WHERE id = %s RETURNING id, n",
                               (counter_id,)).fetchone()
        if row is None:
            raise HTTPException(404)
        return {"id": row[0], "n": row[1]}

    return app


# --- the clients ---------------------------------------------------------------------------------

class Http:
    """One keep-alive HTTP/1.1 connection (the stdlib's: light on the client's CPU)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=30)

    def post(self, path: str, body: dict[str, Any] | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        data = b"{}" if body is None else json.dumps(body).encode()
        self.conn.request("POST", path, body=data,
                          headers={"Content-Type": "application/json", **headers})
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


class Budget:
    """How many requests a phase may still start, or until when."""

    def __init__(self, requests: int | None, seconds: float | None) -> None:
        self.requests, self.seconds = requests, seconds
        self._tickets = itertools.count()
        self.deadline = float("inf")

    def start(self) -> None:
        if self.seconds is not None:
            self.deadline = time.perf_counter() + self.seconds

    def take(self) -> bool:
        if self.requests is not None:
            return next(self._tickets) < self.requests
        return time.perf_counter() < self.deadline


class Exhausted(Exception):
    """No voucher left to transfer: the phase ends early."""


@dataclass
class Phase:
    name: str
    latencies_ms: list[float]
    wall_s: float
    outcomes: Counter[str]

    @property
    def per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"{self.name} per_s {self.per_s:.0f} p50 {percentile(self.latencies_ms, 50):.2f}"
                f" ms p99 {percentile(self.latencies_ms, 99):.2f} ms")


Work = Callable[[Http, random.Random, dict[str, Any]], str]


def run_phase(name: str, base_url: str, clients: int, budget: Budget, work: Work,
              seed: int, quiet: bool = False) -> Phase:
    """``clients`` threads call ``work`` until the budget is spent; the first unexpected answer
    stops them all and is raised."""
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()
    errors: list[Exception] = []
    latencies: list[list[float]] = [[] for _ in range(clients)]
    outcomes: list[Counter[str]] = [Counter() for _ in range(clients)]
    ended = [0.0] * clients

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        memo: dict[str, Any] = {}
        http_client = Http(base_url)
        try:
            http_client.conn.connect()
            ready.wait()
            while not stop.is_set() and budget.take():
                started = time.perf_counter()
                outcome = work(http_client, rng, memo)
                latencies[n].append((time.perf_counter() - started) * 1000)
                outcomes[n][outcome] += 1
        except Exhausted:
            pass
        except threading.BrokenBarrierError:
            return
        except Exception as exc:  # noqa: BLE001 - the first failure ends the phase, raised below
            errors.append(exc)
            stop.set()
            ready.abort()
        finally:
            ended[n] = time.perf_counter()
            http_client.close()

    threads = [threading.Thread(target=client, args=(n,), name=f"{name}-{n}", daemon=True)
               for n in range(clients)]
    for t in threads:
        t.start()
    with suppress(threading.BrokenBarrierError):
        ready.wait(60)
    budget.start()
    started = time.perf_counter()
    last = started
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)
        if not quiet and time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            done = sum(map(len, latencies))
            progress(f"  {name}: {done:,} requests in {last - started:.0f} s "
                     f"({done / (last - started):.0f}/s)")
    if errors:
        if isinstance(errors[0], BenchError):
            raise errors[0]
        raise BenchError(f"{name}: {errors[0]!r}") from errors[0]
    wall = max(ended) - started
    return Phase(name, [x for part in latencies for x in part], wall,
                 sum(outcomes, Counter()))


STARVED = ("the API's pool ran dry: every pooled connection stayed busy for the 5 s pool "
           "timeout. Try a larger --pool-size")


def _expect(what: str, status: int, body: bytes, *wanted: int) -> Any:
    if status not in wanted:
        hint = f"\n{STARVED}" if status == 503 and b"database unavailable" in body else ""
        raise BenchError(f"{what}: HTTP {status} {body[:300]!r}{hint}")
    return json.loads(body)


@dataclass
class DrawdownLoad:
    """Drawdowns on random facilities, some on hot ones, some retried with the same key."""

    keys: list[str]
    hot: int
    double_paid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, client: Http, rng: random.Random, memo: dict[str, Any]) -> str:
        last = memo.get("last")
        if last is not None and rng.random() < RETRY_SHARE:
            body, headers, first = last
            status, raw = client.post("/api/v1/drawdowns", body, headers)
            again = _expect("drawdown retry", status, raw, 200, 201)
            if status != 200 or again["drawdown_id"] != first:
                with self._lock:
                    self.double_paid += 1
            return "retry"
        n = len(self.keys)
        i = rng.randrange(self.hot) if rng.random() < HOT_SHARE else rng.randrange(n)
        body = {"facility_id": facility_id(i), "amount": round(rng.uniform(*AMOUNT), 2),
                "currency": CURRENCY, "tenor_days": 90, "purpose": "bench: buy coil"}
        headers = {"X-API-Key": self.keys[i], "Idempotency-Key": uuid.uuid4().hex}
        status, raw = client.post("/api/v1/drawdowns", body, headers)
        made = _expect("drawdown", status, raw, 201)
        memo["last"] = (body, headers, made["drawdown_id"])
        return str(made["status"])


@dataclass
class TransferLoad:
    """Vouchers split and passed down the chain by their holders; some spent twice at once."""

    keys: list[str]
    payables: deque[Voucher]
    free: deque[Voucher] = field(default_factory=deque)
    in_flight: dict[str, Voucher] = field(default_factory=dict)
    won: set[str] = field(default_factory=set)
    spent_twice: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _pick(self, rng: random.Random) -> tuple[Voucher, bool]:
        with self._lock:
            if self.in_flight and rng.random() < DOUBLE_SPEND_SHARE:
                return rng.choice(list(self.in_flight.values())), False
            if self.free:
                voucher = self.free.popleft()
            elif self.payables:
                voucher = self.payables.popleft()
            else:
                raise Exhausted
            self.in_flight[voucher.voucher_id] = voucher
            return voucher, True

    def __call__(self, client: Http, rng: random.Random, memo: dict[str, Any]) -> str:
        voucher, owner = self._pick(rng)
        n = len(self.keys)
        to = (voucher.holder + 1 + rng.randrange(n - 1)) % n
        cents = max(1, voucher.cents * rng.randint(30, 70) // 100)
        try:
            status, raw = client.post(
                f"/api/v1/vouchers/{voucher.voucher_id}/transfer",
                {"to": borrower_id(to), "amount": cents / 100},
                {"X-API-Key": self.keys[voucher.holder]})
        finally:
            if owner:
                with self._lock:
                    self.in_flight.pop(voucher.voucher_id, None)
        made = _expect("transfer", status, raw, 201, 409)
        if status == 409:
            return "refused" if owner else "double_spend_refused"
        with self._lock:
            if voucher.voucher_id in self.won:
                self.spent_twice += 1
            self.won.add(voucher.voucher_id)
            if voucher.tier + 1 < MAX_TIER + 1 and made["amount"] >= 0.02:
                self.free.append(Voucher(made["voucher_id"], to, round(made["amount"] * 100),
                                         voucher.tier + 1))
        return "transferred" if owner else "double_spend_won"


def baseline_load(rows: int) -> Work:
    def bump(client: Http, rng: random.Random, _memo: dict[str, Any]) -> str:
        status, raw = client.post(f"/counters/{rng.randrange(rows)}", None, {})
        _expect("baseline", status, raw, 200)
        return "ok"
    return bump


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU ticks of the machine so far (Linux /proc/stat; None elsewhere)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return float(sum(ticks) - idle), float(sum(ticks))


# --- the audit -----------------------------------------------------------------------------------

OVERDRAWN = """
WITH lim AS (
    SELECT DISTINCT ON (facility_id) facility_id, credit_limit FROM limit_snapshots
    ORDER BY facility_id, time DESC, id DESC),
drawn AS (
    SELECT facility_id, sum(amount - repaid) AS owed FROM drawdowns
    WHERE status = 'approved' GROUP BY facility_id)
SELECT count(*) FROM facilities f JOIN lim USING (facility_id) LEFT JOIN drawn USING (facility_id)
WHERE coalesce(drawn.owed, 0) > lim.credit_limit OR f.outstanding <> coalesce(drawn.owed, 0)
"""

MISSPENT = """
SELECT count(*) FROM vouchers p LEFT JOIN LATERAL (
    SELECT count(*) AS n, coalesce(sum(c.amount), 0) AS total,
           count(*) FILTER (WHERE c.holder_id <> p.holder_id) AS moved
    FROM vouchers c WHERE c.parent_id = p.voucher_id) c ON true
WHERE (p.status = 'spent' AND (c.total <> p.amount OR c.moved <> 1 OR c.n > 2))
   OR (p.status <> 'spent' AND c.n > 0)
"""


@dataclass(frozen=True)
class Audit:
    overdrawn: int  # facilities whose approved drawdowns exceed the limit (or outstanding drifted)
    misspent: int  # spent vouchers whose children do not sum to them, or spent twice
    double_paid: int  # retries with the same Idempotency-Key answered with a new drawdown
    spent_twice: int  # vouchers two clients both got a 201 for

    @property
    def total(self) -> int:
        return self.overdrawn + self.misspent + self.double_paid + self.spent_twice


def audit(url: str, double_paid: int = 0, spent_twice: int = 0) -> Audit:
    with psycopg.connect(url) as conn:
        overdrawn = conn.execute(OVERDRAWN).fetchone()
        misspent = conn.execute(MISSPENT).fetchone()
    assert overdrawn is not None and misspent is not None
    return Audit(int(overdrawn[0]), int(misspent[0]), double_paid, spent_twice)


# --- the run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    facilities: int = 10_000
    clients: int = 16
    requests: int | None = 10_000
    seconds: float | None = None
    warmup: int = 300
    seed: int = 0
    pool_size: int = 8  # database connections of each server (the API's setting)

    def payables(self) -> int:
        """Enough confirmed payables for the transfers: each gives MAX_TIER − 1 of them."""
        expected = self.requests if self.requests is not None else int((self.seconds or 0) * 1500)
        return (expected + self.warmup) // (MAX_TIER - 1) + 4 * self.clients + 100


def run_financing_bench(options: Options, *, database_url: str | None,
                        time_series: TimeSeriesOptions | None, workdir: Path | None,
                        out: Callable[[str], Any] = print) -> int:
    """Exit code: 0; 1 when a server or an answer failed; 3 when the audit found overdrafts."""
    try:
        return _run(options, database_url, time_series, workdir, out)
    except (BenchError, OSError, psycopg.Error) as exc:
        progress(f"error: {exc}")
        return 1


def _run(options: Options, database_url: str | None, time_series: TimeSeriesOptions | None,
         workdir: Path | None, out: Callable[[str], Any]) -> int:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-fin-")))
        workdir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("yoyo").setLevel(logging.WARNING)
        started = time.perf_counter()
        url = stack.enter_context(scratch_database(database_url, workdir, "pw_bench_financing"))
        apply_all(url, time_series)
        progress(f"scratch database migrated in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        book = load(url, options.facilities, options.payables(), datetime.now(UTC), options.seed)
        progress(f"loaded {options.facilities:,} suppliers/facilities with a live limit and an API"
                 f" key, {len(book.payables):,} confirmed payables in "
                 f"{time.perf_counter() - started:.1f} s")

        env = {URL_ENV: url, POOL_ENV: str(options.pool_size),
               "PLEDGEWATCH_DATABASE_URL": url, "PLEDGEWATCH_STATE_DIR": str(workdir / "state"),
               "PLEDGEWATCH_API_POOL_SIZE": str(options.pool_size),
               "PLEDGEWATCH_LOG_LEVEL": "WARNING", "PLEDGEWATCH_JWT_SECRET": uuid.uuid4().hex * 2}
        base = stack.enter_context(uvicorn_server("baseline", "bench.financing:baseline_app",
                                                  env, workdir))
        real = stack.enter_context(uvicorn_server("api", "bench.api:real_app", env, workdir))
        hot = min(options.clients, options.facilities)
        drawdowns = DrawdownLoad(book.keys, hot)
        transfers = TransferLoad(book.keys, deque(book.payables))
        loads: dict[str, tuple[Server, Work]] = {
            "drawdown": (real, drawdowns), "transfer": (real, transfers),
            "baseline": (base, baseline_load(options.facilities))}
        budget_text = (f"{options.requests:,} requests" if options.requests is not None
                       else f"{options.seconds:g} s")
        progress(f"servers: one uvicorn worker each; {options.clients} clients; "
                 f"{budget_text} per operation after {options.warmup} warm-up requests")
        phases: dict[str, Phase] = {}
        for n, name in enumerate(OPERATIONS):
            server, work = loads[name]
            run_phase(name, server.url, options.clients, Budget(options.warmup, None), work,
                      options.seed + 100 + n, quiet=True)
            progress(f"{name} ...")
            cpu_before, busy_before = cpu_seconds(server.process.pid), machine_busy()
            phase = run_phase(name, server.url, options.clients,
                              Budget(options.requests, options.seconds), work, options.seed + n)
            phases[name] = phase
            cpu_after, busy_after = cpu_seconds(server.process.pid), machine_busy()
            tally = ", ".join(f"{k} {v:,}" for k, v in sorted(phase.outcomes.items()))
            progress(f"  {name}: {len(phase.latencies_ms):,} requests in {phase.wall_s:.1f} s"
                     f" ({tally})")
            if cpu_before is not None and cpu_after is not None and phase.latencies_ms:
                used = (cpu_after - cpu_before) * 1000 / len(phase.latencies_ms)
                machine = ""
                if busy_before is not None and busy_after is not None:
                    total = busy_after[1] - busy_before[1]
                    machine = (f", machine {100 * (busy_after[0] - busy_before[0]) / total:.0f} %"
                               f" busy" if total else "")
                progress(f"  {name}: server process {used:.2f} ms CPU per request{machine}")
            if server.process.poll() is not None:
                raise BenchError(f"the {server.name} server exited (code "
                                 f"{server.process.returncode}); see {server.log}")
        found = audit(url, drawdowns.double_paid, transfers.spent_twice)
        progress(f"audit: {found.overdrawn} facilities overdrawn, {found.misspent} vouchers not "
                 f"conserved or spent twice, {found.double_paid} retries paid twice, "
                 f"{found.spent_twice} vouchers won by two clients")

    for name in OPERATIONS:
        out(phases[name].line())
    worst = min(phases["drawdown"].per_s, phases["transfer"].per_s)
    baseline = phases["baseline"].per_s
    out(f"ratio {worst / baseline if baseline else 0.0:.2f}")
    out(f"overdrafts {found.total}")
    return 3 if found.total else 0

