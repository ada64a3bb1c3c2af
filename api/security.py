"""Credentials: Argon2 for passwords, SHA-256 for API keys, HS256 JWTs for officer sessions.

API keys are high-entropy secrets (32 random bytes), so a fast hash is enough to store them and
lets every request look its key up by hash; Argon2 is for the low-entropy secrets people choose.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_PREFIX = "pwk_"
ISSUER = "pledgewatch"
ALGORITHM = "HS256"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps an unknown username as slow as a wrong password. Made on first
    use, not at import: every CLI start and worker process imports this module."""
    return _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    ADMIN = "admin"
    OFFICER = "officer"
    ENTERPRISE = "enterprise"
    OPERATOR = "operator"  # a warehouse operator: its lots, their ledger entries, its stock ledger


OPERATOR_PARTY = "op:"  # a ledger party naming a warehouse operator: 'op:<operator_id>'


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a bank user (admin/officer), an enterprise API key scoped to a borrower, or
    a warehouse operator's API key scoped to the lots in its warehouses."""

    role: Role
    subject: str  # username, or the API key id
    borrower_id: str | None = None  # set for enterprises: the only borrower they may see
    operator_id: str | None = None  # set for warehouse operators

    def __post_init__(self) -> None:
        # A caller outside the bank always has a party: a scope of None is the whole portfolio.
        wants = {Role.ENTERPRISE: (True, False), Role.OPERATOR: (False, True)}.get(
            self.role, (False, False))
        if ((self.borrower_id is not None, self.operator_id is not None) != wants
                or self.borrower_id == "" or self.operator_id == ""):
            raise ValueError(f"a {self.role} principal needs exactly its own party")

    @property
    def is_bank(self) -> bool:
        return self.role in (Role.ADMIN, Role.OFFICER)

    @property
    def scope(self) -> str | None:
        """The party every query is limited to: the borrower, or ``'op:<operator_id>'`` for a
        warehouse operator (no borrower has that id); None means the whole portfolio (the bank)."""
        if self.is_bank:
            return None
        if self.role is Role.OPERATOR:
            return f"{OPERATOR_PARTY}{self.operator_id}"
        return self.borrower_id


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key_id: str
    secret: str  # shown once
    sha256: bytes


def new_api_key() -> NewApiKey:
    key_id = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key_id, secret, api_key_digest(secret))


def api_key_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def issue_token(secret: str, username: str, role: Role, ttl: timedelta,
                now: datetime | None = None, *, epoch: int = 0) -> str:
    """A signed token; ``epoch`` is the user's ``token_epoch`` (the ``ver`` claim): a password
    change, a disable or a role change raises it and the token is refused from then on."""
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {"sub": username, "role": str(role), "iss": ISSUER, "ver": epoch,
                              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp())}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid officer's token says."""

    username: str
    role: Role
    epoch: int


def read_session(secret: str, token: str) -> Session:
    """The user, role and token epoch a valid token names; TokenError if it is expired, forged or
    malformed. A token without ``ver`` (issued before epochs existed) counts as epoch 0."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"]})
        role = Role(claims["role"])
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired; log in again") from None
    except (jwt.InvalidTokenError, KeyError, ValueError):
        raise TokenError("the token is not valid") from None
    epoch = claims.get("ver", 0)
    if role in (Role.ENTERPRISE, Role.OPERATOR) or not isinstance(claims["sub"], str) \
            or type(epoch) is not int or not 0 <= epoch < 2**31:
        raise TokenError("the token is not valid")
    return Session(claims["sub"], role, epoch)


def read_token(secret: str, token: str) -> tuple[str, Role]:
    """The username and role a valid token names; TokenError if it is expired, forged or malformed."""
    session = read_session(secret, token)
    return session.username, session.role
