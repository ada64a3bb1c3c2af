"""The CLI's argument and configuration checks: every refusal is exit code 2 with a message that
says what is wrong, and happens before any service (database, broker) is started.

No I/O: every test runs with the ``PLEDGEWATCH_*`` environment cleared and a state directory that
holds nothing, so a check that slipped past its guard would fail here (no broker, no database)
instead of silently reaching out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from firmware_sim.scenarios import SCENARIOS
from pledgewatch.cli.main import app
from pledgewatch.net import free_port
from pledgewatch.runtime import running_embedded_broker
from pledgewatch.settings import Settings

BOX = re.compile(r"[│╭╮╰╯─]")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    monkeypatch.setenv("PLEDGEWATCH_STATE_DIR", str(state))
    monkeypatch.setenv("COLUMNS", "200")
    return state


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def plain(result: Result) -> str:
    """stdout + stderr without rich's box drawing, whitespace collapsed (boxes wrap lines)."""
    text = result.output + (result.stderr if result.stderr not in result.output else "")
    return " ".join(BOX.sub(" ", text).split())


def assert_refused(result: Result, *fragments: str) -> str:
    text = plain(result)
    assert result.exit_code == 2, f"exit {result.exit_code}: {text}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


HELP_CASES = [
    (["migrate"], ["--help"]),
    (["gateway"], ["--metrics-port"]),
    (["demo"], ["--devices", "--rate", "--duration", "--scenario"]),
    (["sim"], ["--devices", "--rate", "--duration", "--scenario", "--tenant", "--register",
               "--no-register"]),
    (["serve"], ["--help"]),
    (["devices", "add"], ["DEVICE_ID", "--tenant", "--kind", "--bound-to"]),
    (["bench", "ingest"], ["--messages", "--rate", "--latency-seconds", "--repeat", "--workdir"]),
]


@pytest.mark.parametrize(("command", "options"), HELP_CASES, ids=" ".join)
def test_help_lists_the_options(command: list[str], options: list[str]) -> None:
    result = run(*command, "--help")
    text = plain(result)
    assert result.exit_code == 0, text
    assert f"Usage: root {' '.join(command)}" in text
    for option in options:
        assert option.lower() in text.lower(), f"{option} missing from help of {command}: {text}"


def test_top_level_help_lists_every_command() -> None:
    result = run("--help")
    text = plain(result)
    assert result.exit_code == 0, text
    for name in ("migrate", "gateway", "demo", "sim", "serve", "devices", "bench", "drawdown",
                 "blacklist", "programme", "financing"):
        assert re.search(rf"\b{name}\b", text), f"{name} missing: {text}"


def test_no_arguments_shows_help_not_a_crash() -> None:
    result = run()
    # Click's no_args_is_help exits with 2 (usage) since 8.2; earlier versions with 0.
    assert result.exit_code in (0, 2)
    assert "Traceback" not in plain(result)
    assert "migrate" in plain(result)


def bad(*args: str, says: tuple[str, ...]) -> object:
    return pytest.param(list(args), list(says), id=" ".join(args))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        bad("bench", "ingest", "--messages", "10",
            says=("Invalid value for '--messages'", "1000")),
        bad("bench", "ingest", "--messages", "abc",
            says=("Invalid value for '--messages'", "integer")),
        bad("bench", "ingest", "--messages", "5000001", says=("Invalid value for '--messages'",)),
        bad("bench", "ingest", "--repeat", "0", says=("Invalid value for '--repeat'",)),
        bad("demo", "--devices", "0", says=("Invalid value for '--devices'",)),
        bad("demo", "--devices", "5001", says=("Invalid value for '--devices'", "5000")),
        bad("demo", "--rate", "-1", says=("Invalid value for '--rate'", "0.01")),
        bad("demo", "--rate", "fast", says=("Invalid value for '--rate'",)),
        bad("demo", "--duration", "0", says=("Invalid value for '--duration'",)),
        bad("sim", "--devices", "0", says=("Invalid value for '--devices'",)),
        bad("gateway", "--metrics-port", "abc", says=("Invalid value for '--metrics-port'",)),
        bad("nosuch-command", says=("No such command 'nosuch-command'",)),
        bad("drawdown", "request", "fac-1", "0", says=("Invalid value for 'amount'",)),
        bad("drawdown", "request", "fac-1", "nan", says=("Invalid value for 'amount'",)),
        bad("drawdown", "request", "fac-1", "10", "--tenor", "0",
            says=("Invalid value for '--tenor'",)),
        bad("drawdown", "list", "--status", "paid", says=("Invalid value for --status",)),
        bad("programme", "create", "p-1", "--core", "core", "--line", "1e20",
            says=("Invalid value for '--line'",)),
        bad("programme", "create", "p-1", "--core", "core", "--line", "10",
            "--advance-rate", "1.5", says=("Invalid value for '--advance-rate'",)),
        bad("blacklist", "add", "sup-1", says=("Missing option '--reason'",)),
        bad("financing", "sweep", "--every", "-1", says=("Invalid value for '--every'",)),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], fragments: list[str]) -> None:
    text = assert_refused(run(*args), *fragments)
    assert "Usage:" in text


@pytest.mark.parametrize(("args", "says"), [
    (["wh-1"], "DEVICE_ID and --tenant, or --file"),
    (["--tenant", "acme"], "DEVICE_ID and --tenant, or --file"),
    ([], "DEVICE_ID and --tenant, or --file"),
    (["wh-1", "--tenant", "acme", "--file", "devices.csv"], "no DEVICE_ID, --tenant or --bound-to"),
])
def test_devices_add_needs_one_device_or_a_file(args: list[str], says: str) -> None:
    assert_refused(run("devices", "add", *args), says)


@pytest.mark.parametrize("command", ["demo", "sim"])
def test_unknown_scenario_lists_the_valid_ones(command: str) -> None:
    text = assert_refused(run(command, "--scenario", "nosuch"), "unknown scenario 'nosuch'")
    for name in SCENARIOS:
        assert name in text.split("choose from", 1)[1]


@pytest.mark.parametrize("tenant", ["bad tenant", "a/b", "#", "+", "x" * 65, "-lead", ""])
def test_sim_refuses_a_tenant_that_is_not_a_slug(tenant: str, clean_env: Path) -> None:
    # No broker is configured or running: the tenant must be refused before the broker is looked
    # for (otherwise the message would be "no broker").
    text = assert_refused(run("sim", "--tenant", tenant, "--duration", "1"), "tenant")
    assert "no broker" not in text
    assert not clean_env.exists() or not any(clean_env.iterdir())


def test_sim_without_a_broker_says_how_to_get_one() -> None:
    assert_refused(run("sim", "--duration", "1"), "no broker", "PLEDGEWATCH_MQTT_URL")


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_gateway_metrics_port_out_of_range(port: str, clean_env: Path) -> None:
    assert_refused(run("gateway", "--metrics-port", port), "--metrics-port", "65535")
    assert not clean_env.exists(), "the check must come before any embedded service starts"


@pytest.mark.parametrize("command", [["migrate"], ["gateway"], ["serve"], ["demo"],
                                     ["devices", "add", "wh-1", "--tenant", "acme"]])
@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"PLEDGEWATCH_DATABASE_URL": "mysql://x"}, ["PLEDGEWATCH_DATABASE_URL", "postgresql://"]),
        ({"PLEDGEWATCH_MQTT_URL": "http://broker:1883"}, ["PLEDGEWATCH_MQTT_URL"]),
        ({"PLEDGEWATCH_MQTT_URL": "mqtt://host:notaport"}, ["PLEDGEWATCH_MQTT_URL", "port"]),
        ({"PLEDGEWATCH_BATCH_MAX_MESSAGES": "0"}, ["PLEDGEWATCH_BATCH_MAX_MESSAGES"]),
        ({"PLEDGEWATCH_BATCH_MAX_MESSAGES": "many"}, ["PLEDGEWATCH_BATCH_MAX_MESSAGES"]),
        ({"PLEDGEWATCH_HTTP_PORT": "70000"}, ["PLEDGEWATCH_HTTP_PORT"]),
        ({"PLEDGEWATCH_LOG_LEVEL": "chatty"}, ["PLEDGEWATCH_LOG_LEVEL"]),
        ({"PLEDGEWATCH_TIMESCALE_RETENTION": "forever"}, ["PLEDGEWATCH_TIMESCALE_RETENTION"]),
        ({"PLEDGEWATCH_ENVIRONMENT": "production"},
         ["production", "PLEDGEWATCH_DATABASE_URL", "PLEDGEWATCH_MQTT_URL"]),
        ({"PLEDGEWATCH_ENVIRONMENT": "production",
          "PLEDGEWATCH_DATABASE_URL": "postgresql://db/x"}, ["PLEDGEWATCH_MQTT_URL"]),
    ],
    ids=lambda v: ",".join(f"{k.removeprefix('PLEDGEWATCH_')}={x}" for k, x in v.items())
    if isinstance(v, dict) else None,
)
def test_invalid_configuration_is_refused_by_name(command: list[str], env: dict[str, str],
                                                  fragments: list[str], clean_env: Path) -> None:
    text = assert_refused(run(*command, env=env), "invalid configuration", *fragments)
    assert text.startswith("error:")
    assert not clean_env.exists(), "no embedded service may start on a refused configuration"


def test_one_message_names_every_bad_variable() -> None:
    env = {"PLEDGEWATCH_DATABASE_URL": "mysql://x", "PLEDGEWATCH_BATCH_MAX_MESSAGES": "0"}
    assert_refused(run("migrate", env=env), "PLEDGEWATCH_DATABASE_URL",
                   "PLEDGEWATCH_BATCH_MAX_MESSAGES")


def test_sim_ignores_the_note_of_an_embedded_broker_that_is_gone(tmp_path: Path) -> None:
    """A gateway killed with SIGKILL leaves state_dir/embedded.json behind; sim must not use it."""
    settings = Settings(state_dir=tmp_path)
    (tmp_path / "embedded.json").write_text(f'{{"mqtt_url": "mqtt://127.0.0.1:{free_port()}"}}')
    assert running_embedded_broker(settings) is None
