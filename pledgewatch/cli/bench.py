"""``pledgewatch bench …``: the benchmarks are tooling and live in the source checkout's ``bench/``
folder, outside the wheel. From a checkout (``make bench``) their commands mount here under the
names, options and output lines the README gives; from an installed package ``bench`` says where
they are instead of failing with an import error.

The benchmarks import most of the product (the API, the engine, numpy), so they are mounted
lazily: ``pledgewatch --help`` lists ``bench`` with :data:`BENCH_HELP`, and ``bench.cli`` is
imported only when a ``bench`` command line is parsed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from pledgewatch.cli.common import fail

BENCH_COMMANDS = "bench.cli"  # defines ``bench_app``
# bench_app's help, which `pledgewatch --help` shows without importing it (a unit test keeps the
# two the same).
BENCH_HELP = "Benchmarks: print figures, the baseline and the ratio."


def checkout_root() -> Path:
    """The folder holding this package's source tree (a checkout, or site-packages)."""
    return Path(__file__).resolve().parents[2]


def _find_checkout_bench() -> None:
    root = checkout_root()
    if (root / "bench" / "cli.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))


def bench_available() -> bool:
    """Whether ``bench.cli`` can be imported, without importing it (only the ``bench`` package)."""
    _find_checkout_bench()
    try:
        return importlib.util.find_spec(BENCH_COMMANDS) is not None
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", BENCH_COMMANDS):
            raise
        return False


def load_bench_app() -> typer.Typer | None:
    """The benchmarks' Typer app from the checkout, or None where they are not shipped."""
    _find_checkout_bench()
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


class LazyBenchGroup(TyperGroup):
    """``bench`` as its parent's help lists it; parsing a ``bench`` command line (its commands,
    ``--help``, shell completion) hands over to the benchmarks' own group, imported then.

    The context types are ``Any``: Typer's click classes are private to it."""

    _loaded: TyperGroup | None = None

    def _bench_group(self) -> TyperGroup:
        if self._loaded is None:
            bench_app = load_bench_app()
            if bench_app is None:  # pragma: no cover - bench_available() said it was there
                raise fail(UNAVAILABLE)
            # mounted in a parent, as add_typer would have: no completion options of a root
            parent = typer.Typer(add_completion=False)
            parent.add_typer(bench_app, name="bench")
            root = typer.main.get_command(parent)
            assert isinstance(root, TyperGroup)
            group = root.commands["bench"]
            assert isinstance(group, TyperGroup)
            self._loaded = group
        return self._loaded

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        return self._bench_group().make_context(info_name, args, parent=parent, **extra)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return self._bench_group().get_command(ctx, cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        return self._bench_group().list_commands(ctx)


def register_bench(app: typer.Typer) -> None:
    if bench_available():
        app.add_typer(typer.Typer(cls=LazyBenchGroup, help=BENCH_HELP, no_args_is_help=True),
                      name="bench")
        return
    # One command that takes any words: `bench`, `bench --help` and `bench ingest …` all say why.
    app.command("bench", context_settings={"allow_extra_args": True,
                                           "ignore_unknown_options": True,
                                           "help_option_names": []})(_unavailable)
