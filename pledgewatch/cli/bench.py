"""``pledgewatch bench …``: the benchmarks are tooling and live in the source checkout's ``bench/``
folder, outside the wheel. From a checkout (``make bench``) their commands mount here under the
names, options and output lines the README gives; from an installed package ``bench`` says where
they are instead of failing with an import error."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from pledgewatch.cli.common import fail

BENCH_COMMANDS = "bench.cli"  # defines ``bench_app``


def checkout_root() -> Path:
    """The folder holding this package's source tree (a checkout, or site-packages)."""
    return Path(__file__).resolve().parents[2]


def load_bench_app() -> typer.Typer | None:
    """The benchmarks' Typer app from the checkout, or None where they are not shipped."""
    root = checkout_root()
    if (root / "bench" / "cli.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))
    try:
        module = importlib.import_module(BENCH_COMMANDS)
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", BENCH_COMMANDS):
            raise
        return None
    bench_app: typer.Typer = module.bench_app
    return bench_app


UNAVAILABLE = ("the benchmarks live in the source checkout's bench/ folder, which the installed "
               "package does not ship; run them from a checkout (make bench)")


def _unavailable() -> None:
    """Benchmarks (run from a source checkout: not in the installed package)."""
    raise fail(UNAVAILABLE)


def register_bench(app: typer.Typer) -> None:
    bench_app = load_bench_app()
    if bench_app is not None:
        app.add_typer(bench_app, name="bench")
        return
    # One command that takes any words: `bench`, `bench --help` and `bench ingest …` all say why.
    app.command("bench", context_settings={"allow_extra_args": True,
                                           "ignore_unknown_options": True,
                                           "help_option_names": []})(_unavailable)
