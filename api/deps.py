"""Dependencies shared by the routers: a database connection, the caller, pagination."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Concatenate, Generic, ParamSpec, TypeVar

import psycopg
from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from api.login_throttle import ThrottleConfig
from api.middleware import IPNetwork
from api.problems import ApiProblem
from api.security import Principal, Role, TokenError, api_key_digest, read_session
from notifier.address_policy import DestinationPolicy

TOKEN_URL = "/api/v1/auth/token"
oauth2 = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False,
                              description="Officers and admins: a JWT from the password flow")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Enterprises and integrations: an API key")


MIB = 1024 * 1024


@dataclass
class ApiConfig:
    jwt_secret: str
    token_ttl_s: int = 3600
    auth_cache_s: float = 2.0
    max_body_bytes: int = MIB  # larger request bodies get 413 (api.middleware)
    login_throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    webhook_policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    trusted_proxies: tuple[IPNetwork, ...] = ()  # their X-Forwarded-For/-Proto are believed


class PrincipalCache:
    """Credential → principal for a couple of seconds, so a hot API key costs no query. Revoking a
    key or disabling a user in this process clears it at once; other processes follow within the TTL."""

    MAX = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[object, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: object) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: object, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    pool: ConnectionPool = request.app.state.pool
    with pool.connection(timeout=5) as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]

P = ParamSpec("P")
R = TypeVar("R")


async def with_conn(request: Request, fn: Callable[Concatenate[psycopg.Connection, P], R],
                    *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(conn, *args)`` on a pooled connection in one worker thread: for ``async def`` routes on
    the hot path. A sync route with ``ConnDep`` costs several thread hand-offs per request (the
    generator dependency's enter and exit, the route, response validation); this costs one."""
    return await _on_pool(request.app.state.pool, fn, *args, **kwargs)


async def _auth_lookup(request: Request, fn: Callable[Concatenate[psycopg.Connection, P], R],
                       *args: P.args, **kwargs: P.kwargs) -> R:
    """A credential look-up, on the auth pool: never waits for a connection a route holds."""
    return await _on_pool(request.app.state.auth_pool, fn, *args, **kwargs)


# The threads pooled connections are used on: asyncio's run_in_executor costs about half of
# anyio's to_thread (run_in_threadpool) per hand-off, having no capacity limiter, cancel scope or
# event-loop sniffing to go through; as many threads as anyio's default limiter allows.
_DB_THREADS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="api-db")


async def _on_pool(pool: ConnectionPool, fn: Callable[Concatenate[psycopg.Connection, P], R],
                   *args: P.args, **kwargs: P.kwargs) -> R:

    def call() -> R:
        with pool.connection(timeout=5) as conn:
            return fn(conn, *args, **kwargs)

    context = contextvars.copy_context()  # what run_in_threadpool would carry over
    return await asyncio.get_running_loop().run_in_executor(_DB_THREADS, context.run, call)


UNAUTHORIZED = {"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'}


def _key_principals(conn: psycopg.Connection, digests: list[bytes]) -> dict[bytes, Principal]:
    """The principals of those keys that exist and are not revoked: an enterprise's key (one
    borrower) or a warehouse operator's (one operator); a key names exactly one of the two
    (migration 0021)."""
    found = {}
    for digest, key_id, borrower_id, operator_id in conn.execute(
            "SELECT key_sha256, key_id, borrower_id, operator_id FROM api_keys"
            " WHERE key_sha256 = ANY(%s) AND revoked_at IS NULL", (digests,)):
        if operator_id is not None and borrower_id is None:
            found[bytes(digest)] = Principal(Role.OPERATOR, key_id, operator_id=operator_id)
        elif borrower_id is not None and operator_id is None:
            found[bytes(digest)] = Principal(Role.ENTERPRISE, key_id, borrower_id)
    return found


class KeyLookups:
    """API keys missing from the principal cache, looked up in batches: while one batch is being
    looked up (on the auth pool, in a worker thread), the keys that miss meanwhile wait for it
    and go together in the next one, a thread hop and a query for all of them. With many keys
    (an enterprise each) nearly every request misses the short-lived cache; under concurrent
    requests this is one look-up for several of them, and no request waits longer than the batch
    in flight and its own. One batch at a time: at most one of the auth pool's connections."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._waiting: dict[bytes, list[asyncio.Future[Principal | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def principal(self, key: str) -> Principal | None:
        if not 0 < len(key) <= 200:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Principal | None] = loop.create_future()
        self._waiting.setdefault(api_key_digest(key), []).append(future)
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                found = await _on_pool(self._pool, _key_principals, list(batch))
            except BaseException as exc:
                # e.g. the pool's timeout: each waiting request fails with it; cancelled (the
                # loop is closing): so are they
                for futures in batch.values():
                    for future in futures:
                        if future.done():
                            pass
                        elif isinstance(exc, Exception):
                            future.set_exception(exc)
                        else:
                            future.cancel()
                if not isinstance(exc, Exception):
                    raise
                continue
            for digest, futures in batch.items():
                for future in futures:
                    if not future.done():  # not a request that went away meanwhile
                        future.set_result(found.get(digest))


def _key_lookups(request: Request) -> KeyLookups:
    lookups: KeyLookups = request.app.state.key_lookups  # api.app.create_app, on the auth pool
    return lookups


def _user_principal(conn: psycopg.Connection, username: str, role: Role,
                    epoch: int) -> Principal | None:
    row = conn.execute("SELECT role, token_epoch FROM users WHERE username = %s AND NOT disabled",
                       (username,)).fetchone()
    if row is None or row[0] != role or row[1] != epoch:
        # disabled, deleted or demoted, or its password changed or it was disabled and enabled
        # again since the token was issued (token_epoch, migration 0011)
        return None
    return Principal(role, username)


async def current_principal(
    request: Request,
    token: Annotated[str | None, Depends(oauth2)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The caller. A credential checked within the cache TTL costs no query and no thread: this
    runs on the event loop and only a cache miss looks the key or user up in a worker thread (on a
    connection of its own, so a long-lived response such as /events does not pin one)."""
    return await _principal(request, token, api_key)


async def _principal(request: Request, token: str | None, api_key: str | None) -> Principal:
    cache: PrincipalCache = request.app.state.principals
    config: ApiConfig = request.app.state.api_config
    if api_key is not None or (token is not None and token.startswith("pwk_")):
        key = api_key if api_key is not None else token
        assert key is not None
        found = cache.get(("key", key))
        if found is None:
            found = await _key_lookups(request).principal(key)
            if found is None:
                raise ApiProblem(401, "the API key is unknown or revoked", UNAUTHORIZED)
            cache.put(("key", key), found)
        return found
    if token is None:
        raise ApiProblem(401, "authentication required: a bearer token or an X-API-Key header",
                         UNAUTHORIZED)
    found = cache.get(("jwt", token))
    if found is None:
        try:
            session = read_session(config.jwt_secret, token)
        except TokenError as exc:
            raise ApiProblem(401, str(exc), UNAUTHORIZED) from None
        found = await _auth_lookup(request, _user_principal, session.username, session.role,
                                   session.epoch)
        if found is None:
            raise ApiProblem(401, "this token is no longer valid (the account was disabled, "
                                  "changed its password or is gone); log in again", UNAUTHORIZED)
        cache.put(("jwt", token), found)
    return found


AnyPrincipal = Annotated[Principal, Depends(current_principal)]
"""Any caller, warehouse operators included: only for the routes an operator may use (its
identity, the ledger, the lots it operates), each of which scopes its answer to ``scope``."""


async def party_principal(principal: AnyPrincipal) -> Principal:
    """A bank user or an enterprise. A warehouse operator is refused (403) everywhere but on the
    routes that take :data:`AnyPrincipal` or :data:`BankOrOperator`, so a route added later is
    closed to operators until it says otherwise."""
    return _party(principal)


def _party(principal: Principal) -> Principal:
    if principal.role is Role.OPERATOR:
        raise ApiProblem(403, "a warehouse operator's key may not do this")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(party_principal)]


async def bank_user(principal: CurrentPrincipal) -> Principal:
    if not principal.is_bank:
        raise ApiProblem(403, "only bank officers and admins may do this")
    return principal


async def admin_user(principal: CurrentPrincipal) -> Principal:
    if principal.role is not Role.ADMIN:
        raise ApiProblem(403, "only admins may do this")
    return principal


async def bank_or_operator(principal: AnyPrincipal) -> Principal:
    """A bank user, or a warehouse operator acting on its own lots (enterprises: 403)."""
    if not (principal.is_bank or principal.role is Role.OPERATOR):
        raise ApiProblem(403, "only bank officers and admins, or a warehouse operator, may do this")
    return principal


BankUser = Annotated[Principal, Depends(bank_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
BankOrOperator = Annotated[Principal, Depends(bank_or_operator)]


async def caller(request: Request) -> Principal:
    """:data:`CurrentPrincipal` as one plain dependency, for the hot write paths (a drawdown, a
    voucher transfer): FastAPI resolves each nested dependency with a context and a pass over its
    parameters of its own, so the four of ``party_principal`` → ``current_principal`` → ``oauth2``
    and ``api_key_header`` were a large part of such a request's CPU. This reads the same
    headers the same way (it calls the two schemes itself) and decides the same. A route taking
    it declares the two schemes in its OpenAPI operation with ``openapi_extra=CALLER_SECURITY``
    (the schemes themselves are in the document through the routes that depend on them).
    tests/unit/test_sdk_schema.py compares the document with the SDK's copy."""
    return _party(await _principal(request, await oauth2(request), await api_key_header(request)))


Caller = Annotated[Principal, Depends(caller)]
"""A bank user or an enterprise (:data:`CurrentPrincipal`), resolved in one dependency."""
# The security requirement FastAPI writes for a route that depends on oauth2 and api_key_header.
CALLER_SECURITY: dict[str, Any] = {
    "security": [{oauth2.scheme_name: []}, {api_key_header.scheme_name: []}]}


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; ask again with ``offset=next_offset`` while it is not null."""

    items: list[T]
    limit: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    offset: int

    def page(self, rows: list[T]) -> Page[T]:
        """``rows`` fetched with LIMIT limit + 1: the extra row says there is a next page."""
        more = len(rows) > self.limit
        return Page[T](items=rows[: self.limit], limit=self.limit, offset=self.offset,
                       next_offset=self.offset + self.limit if more else None)


async def page_params(
    limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


PageDep = Annotated[PageParams, Depends(page_params)]
