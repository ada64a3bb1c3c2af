"""Rating the book: every borrower from its latest platform features, with the registry's champion
when there is one and the expert card otherwise; ratings kept with their history; a change of grade
logged with who, what and why, and the borrower's facilities moved to the terms their product maps
to the new grade (``terms.by_grade``: advance rate and line), the engines told to recompute.

No alert is raised on a change of grade: the alert queue is for facility risk an officer must act
on; the change log (``rating_changes``) and the API's grade history say what moved and why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lending.domain.model import DomainError
from lending.store import notify_lending, terms_from_json
from rating.expert import EXPERT_V1, load_expert
from rating.features import has_features, indicator_columns, latest_features, store_features
from rating.metrics import Baseline
from rating.monitoring import Drift, RatingMetrics, latest_drift, monitor
from rating.points import Columns, PointsCard
from rating.registry import Registry

log = logging.getLogger(__name__)

_RUN_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('pw_rating_run'))"


@dataclass(frozen=True)
class ModelCard:
    """The card that rates, with the name and version that travel with every rating, and the
    monitoring baseline of its registry artefact (None: the first run's population, see
    :mod:`rating.monitoring`)."""

    model: str
    version: int
    card: PointsCard
    baseline: Baseline | None = None


def expert_card(path: Path = EXPERT_V1) -> ModelCard:
    card = load_expert(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return ModelCard(str(doc["name"]), int(doc["version"]), card)


def current_card(registry: Registry | None = None, expert: Path = EXPERT_V1) -> ModelCard:
    """The registry's champion if it has one, else the expert card."""
    champion = registry.champion() if registry is not None else None
    if champion is not None:
        return ModelCard(champion.kind, champion.version, champion.card, champion.baseline)
    return expert_card(expert)


@dataclass(frozen=True)
class FacilityMove:
    facility_id: str
    advance_rate: tuple[float | None, float | None]  # (before, after)
    line: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"facility_id": self.facility_id,
                "advance_rate": {"from": self.advance_rate[0], "to": self.advance_rate[1]},
                "line": {"from": self.line[0], "to": self.line[1]}}


@dataclass
class RunResult:
    as_of: date
    model: str = ""
    version: int = 0
    features: int = 0
    rated: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)  # the rating_changes rows
    facilities_moved: int = 0
    skipped: bool = False  # another process holds the run
    drift: Drift | None = None  # PSI against the card's baseline (None: not monitored)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "model": self.model, "version": self.version,
                "features": self.features, "rated": self.rated, "grade_changes": len(self.changed),
                "facilities_moved": self.facilities_moved, "skipped": self.skipped}


def _reasons(card: PointsCard, bins: Any, order: Any, lost: Any, i: int) -> list[dict[str, Any]]:
    out = []
    for j, loss in zip(order[i], lost[i], strict=True):
        if j < 0:
            continue
        feature = card.features[j]
        b = int(bins[i, j])
        label = (feature.labels()[b] if b < feature.n_bins
                 else "missing" if b == feature.n_bins else "other")
        out.append({"feature": feature.name, "points_lost": round(float(loss), 2), "bin": label})
    return out


def latest_population(conn: psycopg.Connection,
                      model: ModelCard) -> tuple[list[str], Columns]:
    """Every borrower with stored features, by id, and the card's features (its newest), one
    column each."""
    latest = latest_features(conn)
    if not latest:
        return [], {}
    ids = sorted(latest)
    columns = indicator_columns({b: latest[b][1] for b in ids})
    return ids, {name: columns[name] for name in model.card.feature_names}


def rate_latest(conn: psycopg.Connection, model: ModelCard, as_of: date) -> list[dict[str, Any]]:
    """Ratings of every borrower with stored features (its newest), as rows to store."""
    return rate_population(model, as_of, *latest_population(conn, model))


def rate_population(model: ModelCard, as_of: date, ids: list[str],
                    frame: Columns) -> list[dict[str, Any]]:
    if not ids:
        return []
    batch = model.card.score(frame)
    order, lost = batch.reason_codes()
    return [{"borrower_id": b, "as_of": as_of, "model": model.model, "version": model.version,
             "score": float(batch.score[i]), "pd": float(batch.pd[i]),
             "grade": str(batch.grade[i]),
             "reasons": _reasons(model.card, batch.bins, order, lost, i)}
            for i, b in enumerate(ids)]


def _previous_grades(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT DISTINCT ON (borrower_id) borrower_id, grade FROM borrower_ratings"
                        " ORDER BY borrower_id, as_of DESC").fetchall()
    return {r[0]: r[1] for r in rows}


def _store_ratings(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO borrower_ratings (borrower_id, as_of, model, version, score, pd, grade,"
            " reasons) VALUES (%(borrower_id)s, %(as_of)s, %(model)s, %(version)s, %(score)s,"
            " %(pd)s, %(grade)s, %(reasons)s)"
            " ON CONFLICT (borrower_id, as_of) DO UPDATE SET model = EXCLUDED.model,"
            " version = EXCLUDED.version, score = EXCLUDED.score, pd = EXCLUDED.pd,"
            " grade = EXCLUDED.grade, reasons = EXCLUDED.reasons, rated_at = now()",
            [{**r, "reasons": Jsonb(r["reasons"])} for r in rows])


def target_terms(terms: Mapping[str, Any], line: float,
                 grade: str) -> tuple[dict[str, Any], float] | None:
    """The facility's terms and line under ``grade`` when its product maps grades to terms
    (validated: a bad ``by_grade`` raises :class:`DomainError`), else None."""
    product = terms_from_json(terms)
    if product.by_grade is None:
        return None
    mapped = product.by_grade.get(grade)
    if mapped is None:
        return None
    new_terms = dict(terms)
    if "advance_rate" in mapped:
        new_terms["advance_rate"] = mapped["advance_rate"]
    new_line = mapped.get("line_cap", line)
    terms_from_json(new_terms)  # the moved terms must still be valid terms
    return new_terms, float(new_line)


def move_terms(conn: psycopg.Connection, grades: Mapping[str, str]) -> dict[str, list[FacilityMove]]:
    """Move the facilities of these borrowers (borrower -> grade) whose product maps grades to
    terms; returns the moves per borrower and tells the engines."""
    if not grades:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT facility_id, borrower_id, line::float8 AS line, terms FROM facilities"
            " WHERE borrower_id = ANY(%s) AND terms ? 'by_grade' AND terms->'by_grade' <> 'null'"
            " ORDER BY facility_id FOR UPDATE", (list(grades),)).fetchall()
    moves: dict[str, list[FacilityMove]] = {}
    for row in rows:
        try:
            target = target_terms(row["terms"], row["line"], grades[row["borrower_id"]])
        except (DomainError, ValueError) as exc:
            log.warning("rating: facility %s keeps its terms: %s", row["facility_id"], exc)
            continue
        if target is None:
            continue
        new_terms, new_line = target
        if new_terms == row["terms"] and new_line == row["line"]:
            continue
        conn.execute("UPDATE facilities SET terms = %s, line = %s WHERE facility_id = %s",
                     (Jsonb(new_terms), new_line, row["facility_id"]))
        moves.setdefault(row["borrower_id"], []).append(FacilityMove(
            row["facility_id"], (row["terms"].get("advance_rate"), new_terms.get("advance_rate")),
            (row["line"], new_line)))
    moved = [m.facility_id for ms in moves.values() for m in ms]
    if moved:
        notify_lending(conn, moved)
    return moves


def _log_changes(conn: psycopg.Connection, changes: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rating_changes (borrower_id, as_of, previous_grade, grade, model,"
            " version, reasons, facilities, changed_by) VALUES (%(borrower_id)s, %(as_of)s,"
            " %(previous_grade)s, %(grade)s, %(model)s, %(version)s, %(reasons)s,"
            " %(facilities)s, %(changed_by)s)",
            [{**c, "reasons": Jsonb(c["reasons"]), "facilities": Jsonb(c["facilities"])}
             for c in changes])
    for c in changes:  # a first rating is no news; a change of grade is
        log.log(logging.INFO if c["previous_grade"] else logging.DEBUG,
                "rating: %s grade %s -> %s (%s v%d, by %s; reasons: %s; facilities: %s)",
                 c["borrower_id"], c["previous_grade"] or "none", c["grade"], c["model"],
                 c["version"], c["changed_by"],
                 ", ".join(x["feature"] for x in c["reasons"]) or "none",
                 c["facilities"] or "unchanged")


def monitor_run(conn: psycopg.Connection, model: ModelCard, as_of: date,
                frame: Columns) -> Drift | None:
    """PSI of the rated population against the card's baseline, stored (see
    :func:`rating.monitoring.monitor`). Monitoring that fails is logged and leaves the run alone."""
    try:
        with conn.transaction():  # a savepoint: a failure here keeps the ratings
            return monitor(conn, model.card, model.model, model.version, as_of, frame,
                           model.baseline)
    except (ValueError, KeyError, IndexError, psycopg.DataError, psycopg.IntegrityError) as exc:
        log.warning("rating: %s v%d not monitored on %s: %s", model.model, model.version, as_of,
                    exc)
        return None


def rate_all(conn: psycopg.Connection, as_of: date, *, by: str,
             model: ModelCard | None = None, compute: bool = True,
             monitoring: bool = True) -> RunResult:
    """Compute today's features (``compute``), rate every borrower, store the ratings, log each
    change of grade and move the terms that follow grades, and (``monitoring``) store the PSI of
    the score and of each feature against the card's baseline, in one transaction. Another process
    running at the same time makes this one skip (``skipped``)."""
    model = model or current_card()
    result = RunResult(as_of, model.model, model.version)
    with conn.transaction():
        row = conn.execute(_RUN_LOCK).fetchone()
        if not (row and row[0]):
            result.skipped = True
            return result
        if compute:
            result.features = store_features(conn, as_of)
        ids, frame = latest_population(conn, model)
        rows = rate_population(model, as_of, ids, frame)
        previous = _previous_grades(conn)
        _store_ratings(conn, rows)
        result.rated = len(rows)
        changed = [r for r in rows if previous.get(r["borrower_id"]) != r["grade"]]
        # every rated borrower's facilities follow its grade (a product given by_grade later too)
        moves = move_terms(conn, {r["borrower_id"]: r["grade"] for r in rows})
        result.facilities_moved = sum(len(m) for m in moves.values())
        for r in changed:
            b = r["borrower_id"]
            result.changed.append({
                "borrower_id": b, "as_of": as_of, "previous_grade": previous.get(b),
                "grade": r["grade"], "model": r["model"], "version": r["version"],
                "reasons": r["reasons"], "facilities": [m.to_dict() for m in moves.pop(b, [])],
                "changed_by": by})
        _log_changes(conn, result.changed)
        for b, ms in moves.items():  # terms aligned without a change of grade
            log.info("rating: %s facilities moved to the terms of its grade: %s", b,
                     [m.to_dict() for m in ms])
        if monitoring:
            result.drift = monitor_run(conn, model, as_of, frame)
    return result


# --- reads ----------------------------------------------------------------------------------------

RATING_COLUMNS = "borrower_id, as_of, model, version, score, pd, grade, reasons, rated_at"


def borrower_rating(conn: psycopg.Connection, borrower_id: str,
                    history: int = 90) -> dict[str, Any] | None:
    """The borrower's current rating, its recent ratings and its grade changes; None if unrated."""
    with conn.cursor(row_factory=dict_row) as cur:
        ratings = cur.execute(
            f"SELECT {RATING_COLUMNS} FROM borrower_ratings WHERE borrower_id = %s"
            " ORDER BY as_of DESC LIMIT %s", (borrower_id, history)).fetchall()
        if not ratings:
            return None
        changes = cur.execute(
            "SELECT as_of, previous_grade, grade, model, version, reasons, facilities, changed_by,"
            " changed_at FROM rating_changes WHERE borrower_id = %s ORDER BY id DESC LIMIT %s",
            (borrower_id, history)).fetchall()
    return {"borrower_id": borrower_id, "current": ratings[0], "history": ratings,
            "grade_changes": changes}


def latest_ratings(conn: psycopg.Connection, grade: str | None = None,
                   limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    """The newest rating of each borrower (optionally only those of one grade), by borrower id."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT * FROM (SELECT DISTINCT ON (borrower_id) {RATING_COLUMNS}"
            " FROM borrower_ratings ORDER BY borrower_id, as_of DESC) latest"
            " WHERE (%(grade)s::text IS NULL OR grade = %(grade)s)"
            " ORDER BY borrower_id LIMIT %(limit)s OFFSET %(offset)s",
            {"grade": grade, "limit": limit, "offset": offset}).fetchall()


# --- the daily run --------------------------------------------------------------------------------

class RatingScheduler:
    """Rates the book once a day on its own connection: at start-up when today's (UTC) features
    are missing, then at the first check after midnight (every ``check_s`` seconds). With
    ``metrics``, every check publishes the PSIs of the newest monitored run (its own, or one by
    the CLI or the API) on the ``pledgewatch_rating_psi`` gauge."""

    def __init__(self, database_url: str, check_s: float = 600.0,
                 registry: Registry | None = None,
                 clock: Callable[[], datetime] | None = None,
                 metrics: RatingMetrics | None = None) -> None:
        self.database_url, self.check_s, self.registry = database_url, check_s, registry
        self.clock = clock or (lambda: datetime.now(UTC))
        self.metrics = metrics
        self.runs = 0
        self.last: RunResult | None = None

    def run_once(self, conn: psycopg.Connection) -> RunResult | None:
        today = self.clock().date()
        ran = None
        if not has_features(conn, today):
            self.last = ran = rate_all(conn, today, by="scheduler",
                                       model=current_card(self.registry))
            self.runs += 1
            log.info("rating: daily run %s", self.last.to_dict())
        if self.metrics is not None:
            self.metrics.publish(latest_drift(conn))
        return ran

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    while not stop.is_set():
                        self.run_once(conn)
                        stop.wait(self.check_s)
            except psycopg.OperationalError as exc:
                log.warning("rating: database unavailable (%s); retrying", exc)
                stop.wait(min(self.check_s, 5.0))
            except Exception:  # a bad card or row must not kill the thread: log, retry later
                log.exception("rating: daily run failed; retrying in %.0f s", self.check_s)
                stop.wait(self.check_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="rating-daily", daemon=True)
        thread.start()
        return thread


def today_utc() -> date:
    return datetime.now(UTC).date()

