"""Every command fails cleanly: a database or broker that cannot be reached, a port that is taken
or an address that is not this machine's is one line on stderr and exit code 2, never a
traceback. Real processes (`python -m pledgewatch …`), started together to save time; "nothing
listening" is a free port nobody took, "taken" is a socket this test binds and listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from pledgewatch.cli.common import one_line
from pledgewatch.cli.main import app as cli
from pledgewatch.embedded import EmbeddedError, EmbeddedPostgres
from pledgewatch.net import free_port
from pledgewatch.serve import BindError, HttpServer
from tests.conftest import Started
from tests.integration.test_cli import ROOT
from tests.support import BrokerUnderTest

pytestmark = pytest.mark.integration

Cases = dict[str, tuple[list[str], dict[str, str]]]


def environment(state_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_METRICS_PORT="0",
               PLEDGEWATCH_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    env.update(settings)
    return env


def run_together(cases: Cases, tmp_path: Path, timeout: float = 120
                 ) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each case as its own process (own state directory), all at once; their results."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, (args, settings) in cases.items():
            env = environment(tmp_path / name, **settings)
            procs[name] = subprocess.Popen([sys.executable, "-m", "pledgewatch", *args], env=env,
                                           cwd=ROOT, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=timeout)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def one_error_line(name: str, proc: subprocess.CompletedProcess[str], *says: str) -> str:
    """Exit 2, exactly one line on stderr saying ``says``, nothing on stdout, no traceback."""
    text = f"{name}: exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, text
    assert "Traceback" not in proc.stdout + proc.stderr, text
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, text
    assert proc.stdout == "", text
    for part in says:
        assert part in lines[0], text
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    """serve and demo as real processes: they crashed with a traceback here (migrate and gateway:
    test_cli.py; every other command: in-process below)."""
    db = {"PLEDGEWATCH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/pw"}
    cases: Cases = {"serve": (["serve"], db), "demo": (["demo", "--duration", "1"], db)}
    for name, proc in run_together(cases, tmp_path).items():
        one_error_line(name, proc, "error: cannot reach the database: ", "Connection refused")


@pytest.mark.once_per_run
def test_an_unreachable_broker_and_taken_ports_are_one_line(
        db_kind: str, migrated_db: str, taken_port: int, tmp_path: Path) -> None:
    broker_port = free_port()
    nobody = {"PLEDGEWATCH_DATABASE_URL": migrated_db,
              "PLEDGEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}"}
    cases: Cases = {
        "gateway-broker": (["gateway"], nobody),
        "serve-port": (["serve"], {**nobody, "PLEDGEWATCH_HTTP_PORT": str(taken_port)}),
        "gateway-metrics": (["gateway", "--metrics-port", str(taken_port)], nobody),
    }
    results = run_together(cases, tmp_path)
    one_error_line("gateway-broker", results["gateway-broker"],
                   f"error: cannot reach the MQTT broker at 127.0.0.1:{broker_port}: ")
    one_error_line("serve-port", results["serve-port"],
                   f"error: port {taken_port} on 127.0.0.1 is in use")
    one_error_line("gateway-metrics", results["gateway-metrics"],
                   f"error: cannot serve metrics: port {taken_port} on 127.0.0.1 is in use")


def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
           **settings: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (Typer's runner): no interpreter start, same code."""
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    env = {k: v for k, v in environment(tmp_path / "state", **settings).items()
           if k.startswith("PLEDGEWATCH_")}
    result = CliRunner().invoke(cli, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r}") from result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


LENDING_AND_ACCOUNTS = [
    ["engine"], ["devices", "add", "wh-1", "--tenant", "acme"], ["users", "list"],
    ["api-keys", "list"], ["facility", "limit", "fac-1"], ["alerts", "list"],
    ["inspection", "list"], ["release", "approve", "rel-1"], ["repay", "fac-1", "10"],
    ["drawdown", "request", "fac-1", "10"], ["drawdown", "list"], ["blacklist", "list"],
    ["programme", "list"], ["financing", "sweep"],
]


@pytest.mark.parametrize("args", LENDING_AND_ACCOUNTS, ids=lambda a: "-".join(a[:2]))
def test_every_other_command_says_an_unreachable_database_in_one_line(
        args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/pw"
    proc = invoke(args, monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=nobody)
    one_error_line(" ".join(args), proc, "error: cannot reach the database: ",
                   "Connection refused")


def test_sim_says_an_unreachable_database_in_one_line(
        brokers: Started[BrokerUnderTest], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/pw"
    proc = invoke(["sim", "--duration", "1"], monkeypatch, tmp_path,
                  PLEDGEWATCH_DATABASE_URL=nobody, PLEDGEWATCH_MQTT_URL=brokers["mosquitto"].url)
    one_error_line("sim", proc, "error: could not register devices: ", "Connection refused")


@pytest.mark.once_per_run
@pytest.mark.parametrize("args", [["serve"], ["demo", "--duration", "1"],
                                  ["sim", "--duration", "1"]], ids=lambda a: a[0])
def test_an_unreachable_broker_is_one_line(args: list[str], db_kind: str, migrated_db: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    port = free_port()
    proc = invoke(args, monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=migrated_db,
                  PLEDGEWATCH_MQTT_URL=f"mqtt://127.0.0.1:{port}", PLEDGEWATCH_HTTP_PORT="0")
    one_error_line(args[0], proc, f"error: cannot reach the MQTT broker at 127.0.0.1:{port}: ")


@pytest.mark.once_per_run
@pytest.mark.parametrize(
    ("host", "says"),
    [("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1, RFC 5737
     ("127.0.0.1 ; rm -rf /", "'127.0.0.1 ; rm -rf /' is not a host name or address")],
    ids=["foreign", "hostile"])
def test_serve_refuses_a_host_it_cannot_listen_on(host: str, says: str, db_kind: str,
                                                  migrated_db: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    proc = invoke(["serve"], monkeypatch, tmp_path, PLEDGEWATCH_DATABASE_URL=migrated_db,
                  PLEDGEWATCH_HTTP_HOST=host, PLEDGEWATCH_NOTIFIER_ENABLED="false")
    one_error_line("serve", proc, f"error: {says}")


def hello() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def _hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def test_the_demo_http_server_moves_off_a_taken_port_and_says_so(taken_port: int) -> None:
    server = HttpServer(hello(), "127.0.0.1", taken_port).start()
    try:
        assert server.moved_from == taken_port
        assert server.port not in (0, taken_port)
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(f"{server.url}/hello").json() == {"hello": "world"}
    finally:
        server.stop()


def test_a_strict_http_server_refuses_a_taken_port(taken_port: int) -> None:
    with pytest.raises(BindError) as refused:
        HttpServer(hello(), "127.0.0.1", taken_port, fallback=False)
    assert str(refused.value) == f"port {taken_port} on 127.0.0.1 is in use"


def test_a_state_directory_that_is_a_file_is_one_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No database URL: the embedded PostgreSQL would start under the state directory."""
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file")
    result = CliRunner().invoke(cli, ["users", "list"],
                                env={"PLEDGEWATCH_STATE_DIR": str(not_a_folder)})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot start the embedded PostgreSQL in {not_a_folder}"), \
        lines


def test_a_failed_embedded_start_leaves_the_process_environment_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime folder is set for a start only: a failed start once left XDG_RUNTIME_DIR
    pointing under a file, and every later embedded start in the process failed."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file")
    with pytest.raises(EmbeddedError):
        EmbeddedPostgres(not_a_folder / "pg" / "data").start()
    assert "XDG_RUNTIME_DIR" not in os.environ


@pytest.mark.parametrize(
    ("text", "expected"),
    [("connection failed: refused\n\tIs the server running?",
      "connection failed: refused; Is the server running?"),
     ("All failures were:\n- host: a: refused\n- host: b: refused\n",
      "All failures were:; - host: a: refused; - host: b: refused"),
     ("  \n\n", "ValueError")],
    ids=["hint", "several-addresses", "blank"],
)
def test_one_line_joins_libpq_messages(text: str, expected: str) -> None:
    assert one_line(ValueError(text)) == expected


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "officer-password", "short"])
def test_the_demo_refuses_a_weak_officer_password_in_one_line(
        password: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proc = invoke(["demo", "--duration", "1"], monkeypatch, tmp_path,
                  PLEDGEWATCH_DEMO_PASSWORD=password)
    one_error_line("demo", proc, "error: PLEDGEWATCH_DEMO_PASSWORD: ")
