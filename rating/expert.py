"""The expert scorecard: bins and points per indicator in a versioned YAML file that credit officers
edit. Loading validates everything a hand edit can break (an unknown indicator, a missing bin, bins
that overlap or leave a gap, points that are not finite numbers, a duplicate value) and says where;
a valid file becomes a :class:`PointsCard`, scored like the fitted logistic scorecard."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from rating.indicators import INDICATORS, Indicator
from rating.points import CategoricalFeature, NumericFeature, PointsCard
from rating.scale import Scaling

EXPERT_V1 = Path(__file__).with_name("expert_v1.yaml")


class ExpertFileError(ValueError):
    """The file is not a valid expert scorecard; the message names each problem and where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Bin(_Strict):
    """A numeric bin ``[from, to)`` or a categorical bin ``values``, and its points."""

    lower: FiniteFloat | None = Field(None, alias="from")
    upper: FiniteFloat | None = Field(None, alias="to")
    values: list[str] | None = Field(None, min_length=1)
    points: FiniteFloat

    @model_validator(mode="after")
    def _one_kind(self) -> Bin:
        if self.values is not None and (self.lower is not None or self.upper is not None):
            raise ValueError("a bin has either 'from'/'to' (numeric) or 'values' (categorical)")
        return self

    @property
    def categorical(self) -> bool:
        return self.values is not None

    def label(self) -> str:
        lower = "-inf" if self.lower is None else f"{self.lower:g}"
        upper = "inf" if self.upper is None else f"{self.upper:g}"
        return f"[{lower}, {upper})"


class IndicatorSpec(_Strict):
    name: str
    missing_points: FiniteFloat
    other_points: FiniteFloat | None = None
    bins: list[Bin] = Field(min_length=1)

    @property
    def categorical(self) -> bool:
        return self.bins[0].categorical

    @model_validator(mode="after")
    def _bins_fit(self) -> IndicatorSpec:
        if len({b.categorical for b in self.bins}) > 1:
            raise ValueError("mixes numeric ('from'/'to') and categorical ('values') bins")
        if not self.categorical:
            _check_numeric(self.bins)
            if self.other_points is not None:
                raise ValueError("other_points is for categorical indicators")
            return self
        seen: set[str] = set()
        for b in self.bins:
            twice = seen.intersection(b.values or ())
            if twice:
                raise ValueError(f"value(s) {sorted(twice)} in more than one bin")
            seen.update(b.values or ())
        return self


def _check_numeric(bins: list[Bin]) -> None:
    if bins[0].lower is not None:
        raise ValueError(f"the first bin must have no 'from' (it starts at -inf), got {bins[0].lower}")
    if bins[-1].upper is not None:
        raise ValueError(f"the last bin must have no 'to' (it runs to +inf), got {bins[-1].upper}")
    for i, (a, b) in enumerate(itertools.pairwise(bins), start=1):
        if a.upper is None or b.lower is None:
            raise ValueError(f"bins {i} and {i + 1}: an inner edge is missing ('to' of bin {i}, "
                             f"'from' of bin {i + 1})")
        if b.lower < a.upper:
            raise ValueError(f"bins {i} and {i + 1} overlap: {a.label()} and {b.label()}")
        if b.lower > a.upper:
            raise ValueError(f"gap between bins {i} and {i + 1}: nothing covers "
                             f"[{a.upper:g}, {b.lower:g})")
        if b.upper is not None and b.upper <= b.lower:
            raise ValueError(f"bin {i + 1} is empty: {b.label()}")


class ScalingSpec(_Strict):
    base_points: FiniteFloat
    base_odds: FiniteFloat = Field(gt=0)
    pdo: FiniteFloat = Field(gt=0)


class ExpertFile(_Strict):
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    base_points: FiniteFloat
    scaling: ScalingSpec
    indicators: list[IndicatorSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _indicators_known(self) -> ExpertFile:
        names = [i.name for i in self.indicators]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"indicator(s) listed twice: {twice}")
        return self


def _kind_matches(spec: IndicatorSpec, known: Indicator) -> str | None:
    if spec.categorical != (known.kind == "categorical"):
        return (f"indicator {spec.name!r} is {known.kind}: give "
                + ("'from'/'to' bins" if known.kind == "numeric" else "'values' bins"))
    return None


def _describe(error: ValidationError, doc: Any) -> str:
    """One line per problem: where (with the indicator's name when there is one) and what."""
    lines = []
    for e in error.errors():
        loc = e["loc"]
        where = ".".join(str(p) for p in loc) or "file"
        if len(loc) >= 2 and loc[0] == "indicators" and isinstance(loc[1], int):
            with contextlib.suppress(KeyError, IndexError, TypeError):
                where += f" ({doc['indicators'][loc[1]]['name']})"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_expert(doc: Any, source: str = "expert file",
                 indicators: Mapping[str, Indicator] = INDICATORS) -> PointsCard:
    try:
        spec = ExpertFile.model_validate(doc)
    except ValidationError as exc:
        raise ExpertFileError(f"{source} is not a valid expert scorecard:\n{_describe(exc, doc)}") from None
    problems = []
    for i, ind in enumerate(spec.indicators):
        known = indicators.get(ind.name)
        if known is None:
            problems.append(f"  indicators.{i}: unknown indicator {ind.name!r} "
                            f"(known: {', '.join(sorted(indicators))})")
        elif (wrong := _kind_matches(ind, known)) is not None:
            problems.append(f"  indicators.{i}: {wrong}")
    if problems:
        raise ExpertFileError(f"{source} is not a valid expert scorecard:\n" + "\n".join(problems))
    return PointsCard(f"{spec.name}_v{spec.version}", tuple(_feature(i) for i in spec.indicators),
                      spec.base_points, Scaling(spec.scaling.base_points, spec.scaling.base_odds,
                                                spec.scaling.pdo))


def _feature(spec: IndicatorSpec) -> NumericFeature | CategoricalFeature:
    points = tuple(b.points for b in spec.bins)
    if not spec.categorical:
        splits = tuple(b.lower for b in spec.bins[1:] if b.lower is not None)
        return NumericFeature(spec.name, splits, points, spec.missing_points)
    groups = tuple(tuple(b.values or ()) for b in spec.bins)
    other = spec.other_points if spec.other_points is not None else min(points)
    return CategoricalFeature(spec.name, groups, points, spec.missing_points, other)


def load_expert(path: Path = EXPERT_V1, indicators: Mapping[str, Indicator] = INDICATORS) -> PointsCard:
    """Read and validate an expert file; :class:`ExpertFileError` says what is wrong and where."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ExpertFileError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise ExpertFileError(f"{path}: expected a mapping at the top, got {type(doc).__name__}")
    return parse_expert(doc, str(path), indicators)

