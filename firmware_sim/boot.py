"""The boot counter store: one JSON file per fleet, ``state_dir/sim-boot.json``.

A device's boot counter is part of the server's dedupe key (device id, boot, seq), so it must
never go backwards: the file is written to a temporary file, fsynced and moved into place with
``os.replace``, under an exclusive lock so two simulators sharing a state dir cannot both hand
out the same boot. A corrupt file is an error, not a reset to zero.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

BOOT_FILE = "sim-boot.json"


class BootStore:
    """Boot counters of the devices of one fleet, persisted in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / BOOT_FILE

    def read(self) -> dict[str, int]:
        """The last boot handed out per device (empty when there is no file yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"corrupt boot counter file {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"corrupt boot counter file {self.path}: not an object")
        return {str(device): int(boot) for device, boot in data.items()}

    def next_boot(self, device_id: str) -> int:
        """Increment and persist the boot counter of ``device_id``; the first boot is 1."""
        return self.next_boots([device_id])[device_id]

    def next_boots(self, device_ids: Iterable[str]) -> dict[str, int]:
        """:meth:`next_boot` for many devices with one locked read-modify-write."""
        ids = list(dict.fromkeys(device_ids))
        with self._locked():
            boots = self.read()
            for device_id in ids:
                boots[device_id] = boots.get(device_id, 0) + 1
            self._write(boots)
        return {device_id: boots[device_id] for device_id in ids}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(BOOT_FILE + ".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, boots: dict[str, int]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=BOOT_FILE + ".", suffix=".tmp", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(boots, out, indent=0, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.state_dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
