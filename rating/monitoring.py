"""Drift monitoring of the rating card in use: after each rating run, the population-stability index
(PSI) of the score and of each feature of the card, today's rated population against the card's
baseline, stored with history in ``rating_drift`` and published as a Prometheus gauge
(``pledgewatch_rating_psi{model, version, subject}``) for the ``PledgewatchRatingDrift`` alert rule
(deploy/prometheus/alerts.yml). A PSI above 0.25 is drift (:data:`rating.metrics.DRIFT_PSI`).

The baseline: a logistic champion's is the one stored in its registry artefact (its development
sample). A card without one (the expert card, which has no development sample) takes the population
of its first run with at least :data:`BASELINE_MIN` borrowers, kept once per card and version in
``rating_baselines``: drift then means "the book moved since this card started rating it". A new
version of the card starts a new baseline. A smaller first population sets no baseline (PSI over a
few borrowers is noise), and nothing is monitored until one is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rating.metrics import DRIFT_PSI, Baseline, baseline, stability
from rating.points import Columns, PointsCard

log = logging.getLogger(__name__)

SCORE = "score"  # the subject of the score's PSI; the others are feature names
BASELINE_MIN = 50  # borrowers a first run needs to become a card's baseline


@dataclass(frozen=True)
class Drift:
    """PSI per subject (the score first, then the card's features) of one run against a baseline
    (``source``: ``artefact`` or ``first_run``)."""

    as_of: date
    model: str
    version: int
    population: int
    source: str
    psi: dict[str, float]
    threshold: float = DRIFT_PSI

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(s for s, v in self.psi.items() if v > self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "model": self.model, "version": self.version,
                "population": self.population, "baseline": self.source, "psi": dict(self.psi),
                "drifted": list(self.drifted)}


class RatingMetrics:
    """The rating side's Prometheus metrics, on a registry it is given (the engine's, so they are
    served beside the engine's own by ``pledgewatch engine --metrics-port``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.psi = Gauge(
            "pledgewatch_rating_psi",
            "population-stability index of the latest rating run against the card's baseline, "
            "per subject (score or a feature of the card); above 0.25 is drift",
            ["model", "version", "subject"], registry=self.registry)

    def publish(self, drift: Drift | None) -> None:
        """Show exactly this run's PSIs (series of an earlier card or version disappear)."""
        self.psi.clear()
        if drift is None:
            return
        for subject, value in drift.psi.items():
            self.psi.labels(drift.model, str(drift.version), subject).set(value)


def population_size(frame: Columns) -> int:
    return max((len(column) for column in frame.values()), default=0)


def stored_baseline(conn: psycopg.Connection, model: str,
                    version: int) -> tuple[date, Baseline] | None:
    row = conn.execute("SELECT as_of, baseline FROM rating_baselines WHERE model = %s"
                       " AND version = %s", (model, version)).fetchone()
    return None if row is None else (row[0], Baseline.from_dict(row[1]))


def _first_run_baseline(conn: psycopg.Connection, card: PointsCard, model: str, version: int,
                        as_of: date, frame: Columns, min_population: int) -> Baseline | None:
    stored = stored_baseline(conn, model, version)
    if stored is not None:
        return stored[1]
    n = population_size(frame)
    if n < min_population:
        log.info("rating: %s v%d has no baseline yet: %d borrowers rated, %d needed",
                 model, version, n, min_population)
        return None
    base = baseline(card, frame)
    conn.execute("INSERT INTO rating_baselines (model, version, as_of, population, baseline)"
                 " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, version) DO NOTHING",
                 (model, version, as_of, n, Jsonb(base.to_dict())))
    log.info("rating: %s v%d baseline set from the %d borrowers rated on %s",
             model, version, n, as_of)
    stored = stored_baseline(conn, model, version)  # a concurrent first run may have won
    return stored[1] if stored else base


def monitor(conn: psycopg.Connection, card: PointsCard, model: str, version: int, as_of: date,
            frame: Columns, artefact_baseline: Baseline | None = None, *,
            threshold: float = DRIFT_PSI, min_population: int = BASELINE_MIN) -> Drift | None:
    """PSI of today's population (``frame``: the card's features, one column each) against the
    card's baseline, stored in ``rating_drift`` (a run again the same day replaces its rows); a
    warning names the drifted subjects. None when nobody was rated or no baseline exists yet."""
    n = population_size(frame)
    if n == 0:
        return None
    if artefact_baseline is not None:
        base, source = artefact_baseline, "artefact"
    else:
        found = _first_run_baseline(conn, card, model, version, as_of, frame, min_population)
        if found is None:
            return None
        base, source = found, "first_run"
    missing = [f.name for f in card.features if f.name not in base.feature_shares]
    if missing:
        raise ValueError(f"{model} v{version}: the baseline has no shares for {missing}")
    st = stability(card, base, frame, threshold)
    drift = Drift(as_of, model, version, n, source, {SCORE: st.score_psi, **st.feature_psi},
                  threshold)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rating_drift (as_of, model, version, subject, psi, drifted, population,"
            " baseline) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (as_of, model, version, subject) DO UPDATE SET psi = EXCLUDED.psi,"
            " drifted = EXCLUDED.drifted, population = EXCLUDED.population,"
            " baseline = EXCLUDED.baseline, computed_at = now()",
            [(as_of, model, version, s, v, v > threshold, n, source)
             for s, v in drift.psi.items()])
    if drift.drifted:
        log.warning("rating: drift in %s v%d on %s: %s (PSI above %g against its %s baseline)",
                    model, version, as_of,
                    ", ".join(f"{s} {drift.psi[s]:.3f}" for s in drift.drifted), threshold,
                    "artefact's" if source == "artefact" else "first run's")
    return drift


def latest_drift(conn: psycopg.Connection) -> Drift | None:
    """The PSIs of the newest monitored run (the newest day; that day's last card if several)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT d.as_of, d.model, d.version, d.subject, d.psi, d.drifted, d.population,"
            " d.baseline FROM rating_drift d JOIN (SELECT as_of, model, version FROM rating_drift"
            " ORDER BY as_of DESC, computed_at DESC LIMIT 1) last USING (as_of, model, version)"
            " ORDER BY d.subject <> %s, d.subject", (SCORE,)).fetchall()
    if not rows:
        return None
    first = rows[0]
    return Drift(first["as_of"], first["model"], first["version"], first["population"],
                 first["baseline"], {r["subject"]: r["psi"] for r in rows})


def drift_history(conn: psycopg.Connection, subject: str | None = None,
                  limit: int = 90) -> list[dict[str, Any]]:
    """Stored PSIs, newest first (optionally of one subject)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT as_of, model, version, subject, psi, drifted, population, baseline,"
            " computed_at FROM rating_drift WHERE (%(s)s::text IS NULL OR subject = %(s)s)"
            " ORDER BY as_of DESC, computed_at DESC, subject LIMIT %(limit)s",
            {"s": subject, "limit": limit}).fetchall()
