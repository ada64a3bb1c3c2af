"""A `python -m pledgewatch demo` subprocess for the end-to-end tests: its own state directory
(embedded PostgreSQL and broker on free ports, never 1883/5432), its output read line by line with
deadlines, and a clean stop."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTP = re.compile(r"^http: (?P<url>http://127\.0\.0\.1:(?P<port>\d+))/health ")
DASHBOARD = re.compile(r"^dashboard: (?P<url>http://127\.0\.0\.1:(?P<port>\d+)/dashboard/)  "
                       r"\((?P<username>[^ ]+) / (?P<password>[^ )]+)\)$")


class Demo:
    """A `python -m pledgewatch demo` subprocess whose output is read line by line, with deadlines."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
        env.update(extra)
        env.update(PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_HTTP_PORT="0",
                   PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pledgewatch", "demo", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(self.lines[-1])
        self._new.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        for line in self.lines:
            if m := pattern.search(line):
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                new = self._new.get(timeout=left)
            except queue.Empty:
                break
            if new is None:
                pytest.fail(f"demo exited ({self.proc.poll()}) before {pattern.pattern!r}:\n"
                            f"{self.output}")
            if m := pattern.search(new):
                return m
        pytest.fail(f"no {pattern.pattern!r} within {timeout}s:\n{self.output}")

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo still running after {timeout}s:\n{self.output}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGTERM first (the demo stops its embedded services cleanly), SIGKILL if that hangs."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def pledgewatch_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_STATE_DIR=str(state_dir), PLEDGEWATCH_LOG_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pledgewatch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def stop_leftover_postgres(data_dir: Path) -> None:
    """pg_ctl daemonizes: a demo killed hard leaves its PostgreSQL running. Stop that postmaster
    (the one whose pid its own data directory records) with SIGQUIT, PostgreSQL's immediate
    shutdown, and wait for it to go."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)




def login(base: str, username: str, password: str) -> str:
    """An officer's bearer token from the password flow."""
    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/auth/token", data=form, timeout=10) as response:
        return str(json.loads(response.read())["access_token"])


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())
