"""Log-in throttling: failed log-ins per account and per client address, with an exponential
lockout, kept in the ``login_throttle`` table (migration 0011).

Every attempt is counted *before* its password is checked (a success takes its count back), so a
burst of parallel guesses cannot slip past the limit while their hashes are being verified. From
the ``max_failures``-th counted attempt on, each one locks the key for ``base_s × 2^(n −
max_failures)`` seconds (capped at ``max_s``); an attempt while a key is locked is answered 429
with ``Retry-After``, without checking the password (a correct one too), and is logged. A
successful log-in clears its account's count; an address's count only falls back by that one
attempt, so guessing from one address cannot be laundered by logging in to an account one owns.
A streak is forgotten :data:`FORGET_AFTER_S` after its last counted attempt.

Kept in the database rather than in memory: the lockout survives a restart and holds across
several API processes, at the price of one or two small writes per log-in (which already spends
~50 ms on Argon2).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import psycopg

from api.problems import ApiProblem

log = logging.getLogger(__name__)

FORGET_AFTER_S = 3600.0
KEY_MAX = 256


@dataclass(frozen=True)
class ThrottleConfig:
    max_failures: int = 5  # per account
    max_failures_per_address: int = 20
    base_s: float = 1.0
    max_s: float = 900.0


# One key's attempt: counted unless the key is locked; from the limit on, the count locks the key.
# `streak` is the count so far, or 0 when the last counted attempt is older than `forget`.
_STREAK = ("(CASE WHEN t.last_failure_at < now() - make_interval(secs => %(forget)s) THEN 0"
           " ELSE t.failures END)")
_LOCK = ("now() + make_interval(secs => least(%(max)s::float8, %(base)s::float8"
         " * power(2::float8, least({n} - %(limit)s, 40))))")
ADMIT = f"""
INSERT INTO login_throttle AS t (scope, key, failures, last_failure_at, locked_until)
VALUES (%(scope)s, %(key)s, 1, now(), CASE WHEN 1 >= %(limit)s THEN {_LOCK.format(n="1")} END)
ON CONFLICT (scope, key) DO UPDATE SET
    failures = CASE WHEN t.locked_until > now() THEN t.failures ELSE {_STREAK} + 1 END,
    last_failure_at = CASE WHEN t.locked_until > now() THEN t.last_failure_at ELSE now() END,
    locked_until = CASE WHEN t.locked_until > now() THEN t.locked_until
                        WHEN {_STREAK} + 1 >= %(limit)s THEN {_LOCK.format(n=_STREAK + " + 1")}
                   END
RETURNING t.locked_until > now() AND t.last_failure_at <> now() AS refused,
          extract(epoch FROM t.locked_until - now())::float8 AS locked_for
"""
# A success takes its own count back: an account starts afresh, an address only loses that one.
FORGIVE_ACCOUNT = "DELETE FROM login_throttle WHERE scope = 'account' AND key = %(key)s"
FORGIVE_ADDRESS = """
UPDATE login_throttle SET failures = greatest(failures - 1, 0),
    locked_until = CASE WHEN failures - 1 >= %(limit)s THEN locked_until END
WHERE scope = 'address' AND key = %(key)s
"""
FORGET = """
DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => %(forget)s)
    AND (locked_until IS NULL OR locked_until < now())
"""


@dataclass(frozen=True)
class Refusal:
    scope: str  # "account" or "address"
    retry_after_s: int


def _key(value: str) -> str:
    return (value or "-")[:KEY_MAX]


class LoginThrottle:
    """Counts and locks log-in attempts; see the module's description."""

    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config

    def _admit(self, conn: psycopg.Connection, scope: str, key: str, limit: int) -> Refusal | None:
        row = conn.execute(ADMIT, {"scope": scope, "key": _key(key), "limit": limit,
                                   "forget": FORGET_AFTER_S, "base": self.config.base_s,
                                   "max": self.config.max_s}).fetchone()
        assert row is not None
        refused, locked_for = row
        if refused:
            return Refusal(scope, max(1, math.ceil(float(locked_for))))
        return None

    def admit(self, conn: psycopg.Connection, username: str, address: str) -> Refusal | None:
        """Count this attempt, or say why it is refused (nothing is counted then)."""
        refusal: Refusal | None = None
        with conn.transaction():
            refusal = self._admit(conn, "address", address,
                                  self.config.max_failures_per_address)
            if refusal is None:
                refusal = self._admit(conn, "account", username, self.config.max_failures)
                if refusal is not None:
                    raise psycopg.Rollback()  # the address is not charged for a locked account
        return refusal

    def check(self, conn: psycopg.Connection, username: str, address: str) -> None:
        """:meth:`admit`, answering a refusal with 429 + ``Retry-After`` (and a log line)."""
        refusal = self.admit(conn, username, address)
        if refusal is None:
            return
        log.warning("log-in throttled: account %r from %s (%s locked for %d s more)",
                    username[:64], address, refusal.scope, refusal.retry_after_s)
        what = "this account" if refusal.scope == "account" else "this address"
        raise ApiProblem(429, f"too many failed log-ins for {what}; try again in "
                              f"{refusal.retry_after_s} s",
                         {"Retry-After": str(refusal.retry_after_s)})

    def succeeded(self, conn: psycopg.Connection, username: str, address: str) -> None:
        with conn.transaction():
            conn.execute(FORGIVE_ACCOUNT, {"key": _key(username)})
            conn.execute(FORGIVE_ADDRESS, {"key": _key(address),
                                           "limit": self.config.max_failures_per_address})
            conn.execute(FORGET, {"forget": FORGET_AFTER_S})
