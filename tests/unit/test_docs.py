"""The README documents every setting, metric and dead-letter reason the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalogue import CATALOGUE
from gateway.payload import Reason
from pledgewatch.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`PLEDGEWATCH_{field.upper()}`" in README


@pytest.mark.parametrize("metric", sorted(CATALOGUE))
def test_every_metric_is_documented(metric: str) -> None:
    assert f"| `{metric}` |" in README


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_every_dead_letter_reason_is_documented(reason: str) -> None:
    assert f"| `{reason}` |" in README
