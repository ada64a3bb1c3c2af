"""The README documents every setting, metric, dead-letter reason, alert type, incident scenario
and command the code has."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from firmware_sim.scenarios import SCENARIOS
from lending.domain.alerts import AlertType
from pledgewatch.cli.bench import load_bench_app
from pledgewatch.cli.main import app
from pledgewatch.settings import Settings
from telemetry.contract.catalogue import CATALOGUE
from telemetry.contract.payload import Reason

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


@pytest.mark.parametrize("alert_type", [t.value for t in AlertType])
def test_every_alert_type_is_documented(alert_type: str) -> None:
    assert f"| `{alert_type}` |" in README


@pytest.mark.parametrize("scenario", sorted((set(SCENARIOS) - {"normal"}) | {"price-crash"}))
def test_every_incident_scenario_is_documented(scenario: str) -> None:
    assert f"| `{scenario}` |" in README


def _commands(group: typer.Typer, prefix: str = "pledgewatch") -> list[str]:
    names = [f"{prefix} {c.name or (c.callback.__name__ if c.callback else '')}".replace("_", "-")
             for c in group.registered_commands]
    for sub in group.registered_groups:
        instance = sub.typer_instance
        if sub.name == "bench" and prefix == "pledgewatch":  # mounted lazily: its real commands
            instance = load_bench_app()
        assert instance is not None
        names += _commands(instance, f"{prefix} {sub.name}")
    return names


@pytest.mark.parametrize("command", _commands(app))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}" in README
