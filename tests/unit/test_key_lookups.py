"""API keys missing from the principal cache are looked up in batches (api.deps.KeyLookups): the
keys that miss while a look-up is under way go together in the next one, each caller gets its own
key's principal (or None), and a failed look-up fails every request that waited for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from api.deps import KeyLookups
from api.security import Principal, Role, api_key_digest

# key → (key_id, borrower_id, operator_id) of api_keys
KEYS: dict[str, tuple[str, str | None, str | None]] = {
    **{f"pwk_key{n}": (f"key-{n}", f"borrower-{n}", None) for n in range(6)},
    "pwk_operator": ("key-op", None, "operator-1")}


class FakeConn:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    def execute(self, _query: str, params: tuple[list[bytes]]) -> list[tuple[Any, ...]]:
        digests = params[0]
        self.pool.batches.append(len(digests))
        self.pool.started.set()
        self.pool.release.wait(5)
        if self.pool.fail is not None:
            raise self.pool.fail
        by_digest = {api_key_digest(k): row for k, row in KEYS.items()}
        return [(d, *by_digest[d]) for d in digests if d in by_digest]


class FakePool:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail: Exception | None = None

    @contextmanager
    def connection(self, timeout: float) -> Iterator[FakeConn]:
        yield FakeConn(self)


async def _first_then_rest(pool: FakePool, lookups: KeyLookups,
                           rest: list[str]) -> list[Principal | None]:
    """One look-up under way (held until the others queue up), then ``rest`` while it is."""
    first = asyncio.ensure_future(lookups.principal("pwk_key0"))
    await asyncio.get_running_loop().run_in_executor(None, pool.started.wait, 5)
    others = [asyncio.ensure_future(lookups.principal(k)) for k in rest]
    await asyncio.sleep(0)
    pool.release.set()
    return [await first, *[await o for o in others]]


def test_keys_missing_meanwhile_go_in_one_batch_and_each_caller_gets_its_own() -> None:
    pool = FakePool()
    lookups = KeyLookups(cast(ConnectionPool, pool))
    found = asyncio.run(_first_then_rest(
        pool, lookups, ["pwk_key1", "pwk_key2", "pwk_unknown", "pwk_key1", "pwk_operator"]))
    assert pool.batches == [1, 4]  # the first alone, then the four distinct keys together
    assert found == [Principal(Role.ENTERPRISE, "key-0", "borrower-0"),
                     Principal(Role.ENTERPRISE, "key-1", "borrower-1"),
                     Principal(Role.ENTERPRISE, "key-2", "borrower-2"),
                     None,
                     Principal(Role.ENTERPRISE, "key-1", "borrower-1"),
                     Principal(Role.OPERATOR, "key-op", operator_id="operator-1")]


def test_a_key_of_no_plausible_length_is_not_looked_up() -> None:
    pool = FakePool()
    lookups = KeyLookups(cast(ConnectionPool, pool))
    assert asyncio.run(lookups.principal("")) is None
    assert asyncio.run(lookups.principal("pwk_" + "x" * 300)) is None
    assert pool.batches == []


def test_a_failed_look_up_fails_every_request_waiting_for_it_and_the_next_ones_proceed() -> None:
    pool = FakePool()
    pool.fail = PoolTimeout("no connection within 5 s")
    lookups = KeyLookups(cast(ConnectionPool, pool))

    async def run() -> None:
        first = asyncio.ensure_future(lookups.principal("pwk_key0"))
        await asyncio.get_running_loop().run_in_executor(None, pool.started.wait, 5)
        second = asyncio.ensure_future(lookups.principal("pwk_key1"))
        third = asyncio.ensure_future(lookups.principal("pwk_key2"))
        await asyncio.sleep(0)
        pool.release.set()
        with pytest.raises(PoolTimeout):
            await first
        for waiting in (second, third):  # the batch after it: fails the same way
            with pytest.raises(PoolTimeout):
                await waiting
        assert pool.batches == [1, 2]
        pool.fail = None
        assert await lookups.principal("pwk_key3") == Principal(Role.ENTERPRISE, "key-3",
                                                                "borrower-3")

    asyncio.run(run())
