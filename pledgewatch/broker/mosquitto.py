"""Run Debian's ``mosquitto`` with the project's own configuration on a free port.

Used by the tests and benchmarks to exercise the production topology without Docker: the same
config file docker-compose mounts, with only the listener, paths and (optionally) auth changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pledgewatch.net import free_port, wait_for_port

CONFIG = Path(__file__).parent / "mosquitto.conf"
ACL = Path(__file__).parent / "acl"
GATEWAY_USER = "pledgewatch-gateway"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def render_config(port: int, workdir: Path, password_file: Path | None,
                  overrides: Mapping[str, str] | None = None) -> str:
    """The project config with this instance's listener, data dir and auth files; ``overrides``
    replace (or add) other settings by name, e.g. ``{"autosave_interval": "5"}``."""
    for name, value in (overrides or {}).items():
        if not re.fullmatch(r"[a-z_]+", name) or "\n" in value:
            raise ValueError(f"not a mosquitto setting: {name!r} {value!r}")
    replaced = {
        **{name: f"{name} {value}" for name, value in (overrides or {}).items()},
        "listener": f"listener {port} 127.0.0.1",
        "persistence_location": f"persistence_location {workdir}/",
        "password_file": f"password_file {password_file}" if password_file else "",
        "acl_file": f"acl_file {ACL}" if password_file else "",
        "allow_anonymous": f"allow_anonymous {'false' if password_file else 'true'}",
    }
    lines = CONFIG.read_text().splitlines()
    out = [replaced.get(line.split(" ", 1)[0], line) for line in lines]
    present = {line.split(" ", 1)[0] for line in lines}
    out += [f"{name} {value}" for name, value in (overrides or {}).items() if name not in present]
    out.append(f"log_dest file {workdir}/mosquitto.log")
    if os.geteuid() == 0:
        out.append("user root")  # keep access to the per-run files a root test run creates
    return "\n".join(out) + "\n"


def write_password_file(path: Path, users: dict[str, str]) -> None:
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True,
                       capture_output=True)


@dataclass
class Mosquitto:
    """A mosquitto process; ``users`` switches on password auth and the project ACL."""

    workdir: Path
    port: int = 0
    users: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # settings replacing the project's
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian package `mosquitto`)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        password_file = None
        if self.users:
            password_file = self.workdir / "passwd"
            write_password_file(password_file, self.users)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(self.port, self.workdir, password_file, self.overrides))
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port, 10, self.process):
            self.stop()
            raise RuntimeError(f"mosquitto did not start; see {self.workdir}/mosquitto.log")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def url(self, user: str | None = None) -> str:
        if user is None:
            return f"mqtt://127.0.0.1:{self.port}"
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


