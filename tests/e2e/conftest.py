"""Fixtures of the end-to-end tier."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.demo_process import Demo, stop_leftover_postgres


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Starts demos on one state directory; stops them (and a PostgreSQL left behind) afterwards."""
    started: list[Demo] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Demo:
        started.append(Demo(tmp_path / "state", *args, env=env))
        return started[-1]

    yield start
    for demo in started:
        demo.kill()
    stop_leftover_postgres(tmp_path / "state" / "postgres")
