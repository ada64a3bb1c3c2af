"""`pledgewatch bench detection`: a seeded library of incidents run through the real lending engine.

Each scenario (:mod:`bench.detection_scenarios`) loads its portfolio with
:func:`lending.operations.load_portfolio`, registers its devices, and then, one simulated step at a
time, hands the messages the gateway would have received in that step to the gateway's own decoder
(:func:`gateway.ingest.decode_batch`) and writer (:func:`telemetry.writer.write_batch`), applies the
operations due (releases, price ticks, sales, portfolio loads), sets the engine's clock and calls
:meth:`lending.engine.LendingEngine.recompute`. Then it reads the alerts table and judges it
against the scenario's truth. One line per scenario on stdout (a contract others parse):

    <scenario> detected|missed <minutes to detect> <units lost at detection> <magnitude error %>
    normal false_alerts <n>
    false_alerts_per_1000_lot_days <x>
    missed <n>

Progress and every alert raised go to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import psycopg

from bench.detection_scenarios import (
    HOUR,
    SCENARIOS,
    SITE_UTC_OFFSET_H,
    TENANT,
    PledgeAttempt,
    PriceTick,
    Release,
    Sale,
    Scenario,
    StatusEvent,
    anchor,
    build,
)
from bench.scratch import scratch_database
from gateway.ingest import DeviceRegistry, RawMessage, decode_batch
from lending.domain.model import PricePoint, ReleaseStatus
from lending.engine import LendingEngine
from lending.operations import (
    LendingError,
    advance_release,
    load_portfolio,
    post_prices,
    record_sale,
    request_release,
)
from lending.portfolio_file import PortfolioIn
from pledgewatch.runtime import time_series_options
from pledgewatch.settings import Settings
from schema.migrate import apply_all
from telemetry.contract.payload import DeviceInfo, Limits
from telemetry.contract.topics import status_topic, telemetry_topic
from telemetry.queries import register_devices
from telemetry.writer import write_batch

log = logging.getLogger(__name__)
MAGNITUDE_TYPES = ("unauthorised_outbound",)  # alerts whose magnitude is units missing
EVIDENCE_CHARS = 400  # of a false alert's evidence, on stderr


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class SimClock:
    """The engine's clock: simulated time, moved by the bench."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return dt(self.t)


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    type: str
    severity: str
    status: str
    lot_id: str | None
    raised_at: float
    cleared: bool
    evidence: dict[str, Any]

    @property
    def magnitude(self) -> float | None:
        value = self.evidence.get("magnitude")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None


@dataclass(slots=True)
class Outcome:
    """How the engine did on one scenario."""

    name: str
    detected: bool = False
    minutes: float | None = None
    units: float | None = None
    magnitude_error: float | None = None
    false_alerts: int = 0
    lot_days: float = 0.0
    alerts: list[AlertRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    engine_seconds: float = 0.0  # of which in LendingEngine.recompute

    def line(self) -> str:
        if self.name == "normal":
            return f"normal false_alerts {self.false_alerts}"
        if not self.detected:
            return f"{self.name} missed - - -"
        minutes = "-" if self.minutes is None else f"{self.minutes:.1f}"
        units = "-" if self.units is None else f"{self.units:.0f}"
        error = "-" if self.magnitude_error is None else f"{self.magnitude_error:.1f}"
        return f"{self.name} detected {minutes} {units} {error}"


# --- running one scenario -----------------------------------------------------------------------

class FirstFailureOnly(logging.Filter):
    """Lets the engine's first logged failure through and counts the rest, so a rule that raises
    on every step does not flood the output."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if self.seen:
            self.dropped += 1
            return False
        self.seen = True
        return True


class Feed:
    """The scenario's messages (telemetry and status) in the order the gateway receives them."""

    def __init__(self, scenario: Scenario) -> None:
        self.streams = scenario.streams
        self.statuses = sorted(scenario.statuses, key=lambda s: s.at)
        received = [s.received for s in self.streams] + [np.asarray([s.at for s in self.statuses])]
        source = [np.full(len(s), i) for i, s in enumerate(self.streams)] + [
            np.full(len(self.statuses), -1)]
        index = [np.arange(len(s)) for s in self.streams] + [np.arange(len(self.statuses))]
        all_received = np.concatenate(received) if received else np.empty(0)
        order = np.argsort(all_received, kind="stable")
        self.received = all_received[order]
        self.source = np.concatenate(source)[order]
        self.index = np.concatenate(index)[order]
        self.cursor = 0

    def __len__(self) -> int:
        return int(self.received.size)

    def until(self, t: float) -> list[RawMessage]:
        """Every message received up to ``t`` not handed out yet."""
        stop = int(np.searchsorted(self.received, t, side="right"))
        out = [self._raw(k) for k in range(self.cursor, stop)]
        self.cursor = max(self.cursor, stop)
        return out

    def _raw(self, k: int) -> RawMessage:
        source, i, received = int(self.source[k]), int(self.index[k]), float(self.received[k])
        if source < 0:
            status: StatusEvent = self.statuses[i]
            state = "online" if status.online else "offline"
            return (status_topic(TENANT, status.device_id), json.dumps({"state": state}).encode(),
                    received, False)
        stream = self.streams[source]
        payload = {"boot": stream.boot, "seq": int(stream.seq[i]),
                   "ts": round(float(stream.sent[i]) * 1000), "readings": stream.readings(i)}
        return (telemetry_topic(TENANT, stream.device_id), json.dumps(payload).encode(), received,
                False)


@dataclass(slots=True)
class Runner:
    """Runs one scenario against a migrated database with a fresh engine."""

    database_url: str
    scenario: Scenario
    err: TextIO
    refused: int = 0
    accepted_duplicates: list[str] = field(default_factory=list)
    messages: int = 0

    def run(self) -> Outcome:
        s = self.scenario
        outcome = Outcome(s.name, lot_days=s.lot_days)
        started = time.perf_counter()
        clock = SimClock(s.start)
        engine = LendingEngine(self.database_url, clock=clock)
        feed = Feed(s)
        devices = {st.device_id: DeviceInfo(st.device_id, TENANT, st.kind) for st in s.streams}
        registry = DeviceRegistry(3600.0)
        registry.devices = devices
        limits = Limits()
        operations = sorted(s.operations, key=lambda op: op.at)
        steps = s.steps()
        failures = FirstFailureOnly()
        engine_log = logging.getLogger("lending.engine")
        engine_log.addFilter(failures)
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                register_devices(conn, list(devices.values()))
                load_portfolio(conn, PortfolioIn.model_validate(s.portfolio), dt(s.start))
                next_op = 0
                for n, step in enumerate(steps, 1):
                    while next_op < len(operations) and operations[next_op].at <= step:
                        op = operations[next_op]
                        self._write(conn, feed.until(op.at), registry, limits)
                        self._apply(conn, op)
                        next_op += 1
                    self._write(conn, feed.until(step), registry, limits)
                    clock.t = step
                    before = time.perf_counter()
                    engine.recompute(s.facility_ids)
                    outcome.engine_seconds += time.perf_counter() - before
                    if n % max(1, len(steps) // 5) == 0 and len(steps) >= 200:
                        print(f"  {s.name}: {n:,}/{len(steps):,} steps, {self.messages:,} messages,"
                              f" {time.perf_counter() - started:.0f} s", file=self.err, flush=True)
        except Exception:  # a crash is a result too: the scenario is missed, the others run
            log.exception("detection: scenario %s failed", s.name)
            outcome.notes.append("the run failed (the traceback is above)")
            return outcome
        finally:
            engine.close()
            engine_log.removeFilter(failures)
            outcome.seconds = time.perf_counter() - started
        if engine.stats.failed:
            outcome.notes.append(f"the engine failed to assess a facility {engine.stats.failed:,}"
                                 " time(s) (the first failure is logged above)")
        outcome.alerts = read_alerts(self.database_url, s.facility_ids)
        judge(s, outcome, self.refused, self.accepted_duplicates)
        return outcome

    def _write(self, conn: psycopg.Connection, items: list[RawMessage], registry: DeviceRegistry,
               limits: Limits) -> None:
        if not items:
            return
        batch = decode_batch(items, registry, limits, lambda: False)
        write_batch(conn, batch)
        self.messages += len(items)

    def _apply(self, conn: psycopg.Connection, op: Release | PriceTick | Sale | PledgeAttempt) -> None:
        at = dt(op.at)
        if isinstance(op, Release):
            request_release(conn, op.release_id, op.lot_id, op.quantity, at)
            advance_release(conn, op.release_id, ReleaseStatus.APPROVED, at)
            advance_release(conn, op.release_id, ReleaseStatus.EXECUTED, at)
        elif isinstance(op, PriceTick):
            post_prices(conn, [PricePoint(op.commodity, at, op.price)])
        elif isinstance(op, Sale):
            record_sale(conn, op.facility_id, op.amount, at)
        else:
            self._attempt(conn, op)

    def _attempt(self, conn: psycopg.Connection, op: PledgeAttempt) -> None:
        lot_ids = [lot["id"] for lot in op.portfolio["lots"]]
        with suppress(LendingError, psycopg.errors.IntegrityError):  # refused: what we want
            load_portfolio(conn, PortfolioIn.model_validate(op.portfolio), dt(op.at))
        written = conn.execute("SELECT count(*) FROM lots WHERE lot_id = ANY(%s)",
                               (lot_ids,)).fetchone()
        if written is not None and written[0] == 0:
            self.refused += 1
        else:
            self.accepted_duplicates.append(op.registration_no)


def read_alerts(database_url: str, facility_ids: Sequence[str]) -> list[AlertRow]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, type, severity, status, lot_id, raised_at, cleared, evidence FROM alerts"
            " WHERE facility_id = ANY(%s) ORDER BY id", (list(facility_ids),)).fetchall()
    return [AlertRow(r[0], r[1], r[2], r[3], r[4], r[5].timestamp(), r[6],
                     r[7] if isinstance(r[7], dict) else {}) for r in rows]


def judge(s: Scenario, outcome: Outcome, refused: int = 0,
          accepted_duplicates: Sequence[str] = ()) -> None:
    """Fill ``outcome`` from its alerts and the scenario's truth."""
    alerts = outcome.alerts
    if s.name == "normal" or not s.expected:
        outcome.false_alerts = len(alerts)
        outcome.detected = not alerts
        return
    first: dict[str, AlertRow] = {}
    for exp in s.expected:
        early = [a for a in alerts if a.type == exp.type and a.raised_at < exp.onset]
        on_time = [a for a in alerts if a.type == exp.type and a.raised_at >= exp.onset]
        outcome.false_alerts += len(early)
        for a in early:
            outcome.notes.append(f"{a.type} raised before the incident ({_clock(s, a.raised_at)})")
        if on_time:
            first[exp.type] = min(on_time, key=lambda a: a.raised_at)
        else:
            outcome.notes.append(f"no {exp.type} alert after {_clock(s, exp.onset)}")
    wrong = [a for a in alerts if a.type in s.forbidden]
    outcome.false_alerts += len(wrong)
    outcome.notes.extend(f"forbidden {a.type} raised at {_clock(s, a.raised_at)}" for a in wrong)
    if s.refusals_expected and refused < s.refusals_expected:
        outcome.notes.append(f"{refused} of {s.refusals_expected} duplicate loads refused; accepted:"
                             f" {', '.join(repr(r) for r in accepted_duplicates)}")
    outcome.detected = (len(first) == len(s.expected) and not wrong
                        and refused >= s.refusals_expected)
    if not outcome.detected:
        return
    delays = [first[e.type].raised_at - e.reference for e in s.expected]
    outcome.minutes = max(delays) / 60.0
    at = max(first[e.type].raised_at for e in s.expected)
    truth = s.truths.get(s.theft_lot) if s.theft_lot else None
    outcome.units = float(truth.shortfall(at)) if truth is not None else 0.0
    if truth is None:
        return
    final = float(truth.shortfall(s.end))
    magnitudes = [a for a in alerts if a.type in MAGNITUDE_TYPES and a.magnitude is not None
                  and a.raised_at >= min(e.onset for e in s.expected)]
    if magnitudes and final > 0:
        latest = max(magnitudes, key=lambda a: a.id)
        assert latest.magnitude is not None
        outcome.magnitude_error = abs(latest.magnitude - final) / final * 100.0


def _clock(s: Scenario, t: float) -> str:
    """``t`` as site time and minutes into the scenario, for the progress lines."""
    local = dt(t + SITE_UTC_OFFSET_H * HOUR)
    return f"{local:%m-%d %H:%M} site, +{(t - s.start) / 60:.0f} min"


# --- the whole bench ----------------------------------------------------------------------------

@dataclass(slots=True)
class Report:
    outcomes: list[Outcome]

    def lines(self) -> list[str]:
        lines = [o.line() for o in self.outcomes]
        normal = [o for o in self.outcomes if o.name == "normal"]
        lot_days = sum(o.lot_days for o in normal)
        if normal and lot_days > 0:
            rate = f"{sum(o.false_alerts for o in normal) / lot_days * 1000:.1f}"
        else:
            rate = "-"
        lines.append(f"false_alerts_per_1000_lot_days {rate}")
        lines.append(f"missed {sum(1 for o in self.outcomes if o.name != 'normal' and not o.detected)}")
        return lines


def describe(s: Scenario, outcome: Outcome) -> list[str]:
    """Stderr lines: what the engine raised, and why the scenario counts as it does."""
    out = [(f"  {s.name}: {outcome.seconds:.1f} s (engine {outcome.engine_seconds:.1f} s);"
            f" {len(outcome.alerts)} alert(s)")]
    for a in outcome.alerts:
        magnitude = "" if a.magnitude is None else f", magnitude {a.magnitude:,.1f}"
        out.append(f"    {a.type} ({a.severity}, {a.status}{', cleared' if a.cleared else ''})"
                   f" on {a.lot_id or 'the facility'} at {_clock(s, a.raised_at)}{magnitude}")
        if s.name == "normal" or a.type in s.forbidden:  # a false alert: show why it was raised
            evidence = json.dumps(a.evidence, default=str)
            out.append(f"      evidence: {evidence[:EVIDENCE_CHARS]}"
                       f"{'…' if len(evidence) > EVIDENCE_CHARS else ''}")
    out.extend(f"    ! {note}" for note in outcome.notes)
    return out


def run_detection(database_url: str, *, seed: int, quick: bool, scenarios: Iterable[str],
                  day0: float | None = None, out: TextIO | None = None,
                  err: TextIO | None = None,
                  on_outcome: Callable[[Scenario, Outcome], None] | None = None) -> Report:
    """Run ``scenarios`` (in the library's order) against the migrated database at
    ``database_url``; print one line per scenario and the totals on ``out`` (stdout), progress
    and the alerts raised on ``err`` (stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    names = [n for n in SCENARIOS if n in set(scenarios)]
    day0 = anchor() if day0 is None else day0
    outcomes = []
    for name in names:
        scenario = build(name, seed, day0, quick)
        print(f"detection: {name} (seed {seed}{', quick' if quick else ''}):"
              f" {len(scenario.truths)} lot(s), {sum(len(st) for st in scenario.streams):,} messages,"
              f" {len(scenario.steps()):,} engine steps", file=err, flush=True)
        outcome = Runner(database_url, scenario, err).run()
        for line in describe(scenario, outcome):
            print(line, file=err, flush=True)
        print(outcome.line(), file=out, flush=True)
        if on_outcome is not None:
            on_outcome(scenario, outcome)
        outcomes.append(outcome)
    report = Report(outcomes)
    for line in report.lines()[-2:]:
        print(line, file=out, flush=True)
    return report


def fresh_database(settings: Settings, workdir: Path) -> AbstractContextManager[str]:
    """A new, empty database, dropped afterwards: on the configured server, or on an embedded
    PostgreSQL whose data lives in ``workdir``."""
    return scratch_database(settings.database_url, workdir, "pw_detection")


def run_detection_bench(settings: Settings, *, seed: int, quick: bool, scenarios: Sequence[str],
                        workdir: Path | None) -> int:
    """The command: a scratch database (embedded, or new on the configured server), migrated,
    then :func:`run_detection`. Exits 0 once the figures are printed, whatever they are."""
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-")))
        url = stack.enter_context(fresh_database(settings, workdir))
        apply_all(url, time_series_options(settings))
        started = time.perf_counter()
        run_detection(url, seed=seed, quick=quick, scenarios=scenarios)
        print(f"detection: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0
