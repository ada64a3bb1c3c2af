"""The canonical encoding of a ledger entry and of a signed tree head, pure.

Canonical JSON here: UTF-8; object keys sorted by Unicode code point; no whitespace; strings
escaped as JSON requires (``"`` ``\\`` and control characters; other characters kept as they
are); ``true``/``false``/``null``; and numbers written as their exact text — the text PostgreSQL
gives (``numeric(20, 2)`` keeps its scale: ``100.00``; a double in its shortest round-trip form),
never re-formatted through a float. Timestamps are strings, ISO 8601 in UTC as PostgreSQL writes
them (``2026-03-01T08:00:00.123456+00:00``). Parse with :func:`loads` to keep numbers exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

LOG_ID = "pledgewatch"
ENTRY_VERSION = 1


class Number(str):
    """A JSON number kept as the text it was written with."""

    __slots__ = ()


def loads(text: str | bytes) -> Any:
    """JSON with every number kept as its exact text (:class:`Number`)."""
    return json.loads(text, parse_float=Number, parse_int=Number)


_encode_str = json.JSONEncoder(ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value`` (dicts, lists, str, bool, None, int, :class:`Number`)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, Number):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no canonical JSON form (floats are not "
                        "allowed: give numbers as Number text)")


def entry_text(table: str, op: str, key: str, parties: list[str], time: str, row: Any) -> str:
    """The canonical entry: what the leaf hash covers (RFC 9162 leaf = SHA-256(0x00 || UTF-8))."""
    return dumps({"v": ENTRY_VERSION, "table": table, "op": op, "key": key,
                  "parties": sorted(set(parties)), "time": time, "row": row})


def head_message(tree_size: int, root_hash: bytes, timestamp_ms: int) -> bytes:
    """The bytes a tree head's signature covers."""
    return dumps({"log": LOG_ID, "tree_size": tree_size, "root_hash": root_hash.hex(),
                  "timestamp": timestamp_ms}).encode()
