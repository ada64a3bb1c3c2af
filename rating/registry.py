"""Versioned scorecards and the champion/challenger rule, in a directory.

Each registered model is one JSON artefact, ``v0001.json``, ``v0002.json``…, written once (never
overwritten) and holding the points card, its metrics on a validation sample, the binning review and
the monitoring baseline. ``champion.json`` names the version in use and the history of decisions.
JSON rather than a pickle: a card is numbers and labels, loading runs no code, and an officer can
read it. A challenger replaces the champion when :func:`decide` says so (see :class:`ChampionRule`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rating.metrics import Baseline
from rating.points import PointsCard

ARTEFACT = re.compile(r"^v(\d{4,})\.json$")
FORMAT = 1


@dataclass(frozen=True)
class Artefact:
    version: int
    kind: str                      # "logistic" | "expert"
    card: PointsCard
    metrics: dict[str, Any]        # Performance.to_dict() on a validation sample
    baseline: Baseline | None = None
    review: dict[str, Any] = field(default_factory=dict)  # IVs, coefficients, WoE by bin, data
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "kind": self.kind,
                "created_at": self.created_at, "metrics": self.metrics,
                "baseline": self.baseline.to_dict() if self.baseline else None,
                "review": self.review, "card": self.card.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Artefact:
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown artefact format {doc.get('format')!r}")
        base = doc.get("baseline")
        return cls(int(doc["version"]), str(doc["kind"]), PointsCard.from_dict(doc["card"]),
                   dict(doc["metrics"]), Baseline.from_dict(base) if base else None,
                   dict(doc.get("review") or {}), str(doc.get("created_at", "")))


@dataclass(frozen=True)
class ChampionRule:
    """A challenger wins when its Gini beats the champion's by ``min_gini_gain`` and its calibration
    is not rejected (Hosmer–Lemeshow p-value at least ``min_hl_p``) nor worse in Brier score by more
    than ``max_brier_loss``. With no champion, the first model whose Gini reaches ``min_gini`` wins.
    Compare metrics measured on the same sample (an out-of-time one, ideally)."""

    min_gini: float = 0.3
    min_gini_gain: float = 0.01
    min_hl_p: float = 0.01
    max_brier_loss: float = 0.005


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(champion: dict[str, Any] | None, challenger: dict[str, Any],
           rule: ChampionRule | None = None) -> Decision:
    r = rule or ChampionRule()
    gini = float(challenger["gini"])
    if float(challenger["hosmer_lemeshow_p"]) < r.min_hl_p:
        return Decision(False, f"calibration rejected (Hosmer–Lemeshow p "
                               f"{challenger['hosmer_lemeshow_p']:.3g} < {r.min_hl_p})")
    if champion is None:
        if gini < r.min_gini:
            return Decision(False, f"gini {gini:.3f} below the floor {r.min_gini}")
        return Decision(True, f"first champion, gini {gini:.3f}")
    gain = gini - float(champion["gini"])
    if gain < r.min_gini_gain:
        return Decision(False, f"gini gain {gain:+.3f} below {r.min_gini_gain}")
    if float(challenger["brier"]) - float(champion["brier"]) > r.max_brier_loss:
        return Decision(False, "brier score worse by more than "
                               f"{r.max_brier_loss}")
    return Decision(True, f"gini gain {gain:+.3f}")


def _write_json(path: Path, doc: dict[str, Any], exclusive: bool) -> None:
    """Write atomically (temp file, fsync, rename); ``exclusive`` refuses an existing path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if a concurrent register took this version
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[int]:
        found = (ARTEFACT.match(p.name) for p in self.root.iterdir())
        return sorted(int(m[1]) for m in found if m)

    def path(self, version: int) -> Path:
        return self.root / f"v{version:04d}.json"

    def register(self, kind: str, card: PointsCard, metrics: dict[str, Any],
                 baseline: Baseline | None = None, review: dict[str, Any] | None = None) -> Artefact:
        while True:
            version = max(self.versions(), default=0) + 1
            artefact = Artefact(version, kind, card, metrics, baseline, review or {},
                                datetime.now(UTC).isoformat(timespec="seconds"))
            try:
                _write_json(self.path(version), artefact.to_dict(), exclusive=True)
            except FileExistsError:
                continue
            return artefact

    def load(self, version: int) -> Artefact:
        try:
            doc = json.loads(self.path(version).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(f"no model version {version} in {self.root}") from None
        return Artefact.from_dict(doc)

    def _state(self) -> dict[str, Any]:
        path = self.root / "champion.json"
        if not path.exists():
            return {"champion": None, "history": []}
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def champion(self) -> Artefact | None:
        version = self._state()["champion"]
        return None if version is None else self.load(int(version))

    def challenge(self, version: int, rule: ChampionRule | None = None,
                  metrics: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Decision:
        """Decide between the champion and model ``version``, record the decision and promote the
        challenger if it wins. ``metrics`` = (champion's, challenger's) on a common sample; by
        default each model's stored validation metrics."""
        challenger = self.load(version)
        state = self._state()
        current = state["champion"]
        if current == version:
            return Decision(False, "already the champion")
        champion = self.load(int(current)) if current is not None else None
        ours, theirs = metrics if metrics else (champion.metrics if champion else None,
                                                challenger.metrics)
        decision = decide(ours if champion else None, theirs, rule)
        state["history"].append({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "champion": current, "challenger": version,
                                 "promoted": decision.promote, "reason": decision.reason})
        if decision.promote:
            state["champion"] = version
        _write_json(self.root / "champion.json", state, exclusive=False)
        return decision
