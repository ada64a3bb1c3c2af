"""The README's layout tree is the code's: every path it names exists, and every module of the
product packages is named (as its own line, or in its folder's ``[a, b, c]`` list)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PRODUCT = ("telemetry", "gateway", "lending", "firmware_sim", "schema", "notifier", "api",
           "pledgewatch", "bench", "ledger", "rating")
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.-]+/?)(?:\s{2,}(?P<about>.*))?$")


@dataclass(frozen=True)
class Entry:
    path: Path
    listed: tuple[str, ...]  # module stems named in a folder line's [a, b, c]


def layout_entries(text: str) -> list[Entry]:
    block = text.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("```")]
    entries: list[Entry] = []
    parents: list[Path] = []
    for line in lines:
        match = ENTRY.match(line)
        assert match, f"not a layout line: {line!r}"
        depth = len(match["indent"]) // 2
        parents = parents[:depth]
        path = (parents[-1] if parents else ROOT) / match["name"].rstrip("/")
        listed = re.search(r"\[([^\]]+)\]", match["about"] or "")
        stems = tuple(s.strip() for s in listed[1].split(",")) if listed else ()
        entries.append(Entry(path, stems))
        if match["name"].endswith("/"):
            parents.append(path)
    return entries


def product_modules() -> set[Path]:
    """Every module and package folder below the product packages (not their dunder files)."""
    found: set[Path] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if "node_modules" in path.parts or "migrations" in path.parts:
                continue
            if not path.name.startswith("__"):
                found.add(path)
            if path.parent != ROOT / package:
                found.add(path.parent)
    return found


def test_every_named_path_exists() -> None:
    entries = layout_entries(README.read_text())
    assert len(entries) > 40
    missing = [str(e.path.relative_to(ROOT)) for e in entries if not e.path.exists()]
    assert not missing, f"the README's layout names paths that do not exist: {missing}"
    for entry in entries:
        for stem in entry.listed:
            assert (entry.path / f"{stem}.py").is_file(), f"{entry.path}/{stem}.py is listed, not there"


def test_every_module_is_named() -> None:
    named: set[Path] = set()
    for entry in layout_entries(README.read_text()):
        named.add(entry.path)
        named.update(entry.path / f"{stem}.py" for stem in entry.listed)
    unnamed = sorted(str(p.relative_to(ROOT)) for p in product_modules() - named)
    assert not unnamed, f"modules missing from the README's layout: {unnamed}"


def test_the_layout_parser_reads_nesting() -> None:
    text = ("<!-- layout:start -->\n```\na/  x\n  b/  y: [c, d]\n  e.py  z\nf.py  w\n```\n"
            "<!-- layout:end -->")
    assert [(str(e.path.relative_to(ROOT)), e.listed) for e in layout_entries(text)] == [
        ("a", ()), ("a/b", ("c", "d")), ("a/e.py", ()), ("f.py", ())]
