"""Credentials without I/O: Argon2 passwords, SHA-256 API keys, JWTs that expire and cannot be
forged, and the principal's scope."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from api.deps import PageParams, PrincipalCache
from api.security import (
    API_KEY_PREFIX,
    Principal,
    Role,
    TokenError,
    api_key_digest,
    hash_password,
    issue_token,
    new_api_key,
    read_token,
    verify_password,
)

SECRET = "s" * 40
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_password_verifies_only_itself_and_is_stored_as_argon2() -> None:
    digest = hash_password("correct horse battery staple")
    assert digest.startswith("$argon2id$")
    assert "correct horse" not in digest
    assert verify_password(digest, "correct horse battery staple")
    assert not verify_password(digest, "correct horse battery stapler")
    assert not verify_password(None, "anything")  # unknown user
    assert not verify_password("not-a-hash", "anything")


def test_api_keys_are_random_prefixed_and_stored_as_sha256() -> None:
    one, two = new_api_key(), new_api_key()
    assert one.secret != two.secret and one.key_id != two.key_id
    assert one.secret.startswith(f"{API_KEY_PREFIX}{one.key_id}_")
    assert len(one.secret) > 40  # 32 random bytes behind the prefix
    assert one.sha256 == api_key_digest(one.secret) and len(one.sha256) == 32
    assert api_key_digest(one.secret + "x") != one.sha256
    assert api_key_digest("\ud800") is not None  # a lone surrogate from a hostile header hashes


def test_a_token_names_its_user_and_role_until_it_expires() -> None:
    token = issue_token(SECRET, "olga", Role.OFFICER, timedelta(minutes=5))
    assert read_token(SECRET, token) == ("olga", Role.OFFICER)
    old = issue_token(SECRET, "olga", Role.OFFICER, timedelta(minutes=5),
                      now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(TokenError, match="expired"):
        read_token(SECRET, old)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("forge", ["other-secret", "alg-none", "tampered", "enterprise-role",
                                   "no-exp", "garbage", "empty", "wrong-issuer"])
def test_forged_tokens_are_refused(forge: str) -> None:
    good = issue_token(SECRET, "olga", Role.OFFICER, timedelta(minutes=5))
    exp = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    claims = {"sub": "olga", "role": "admin", "iss": "pledgewatch", "iat": exp - 300, "exp": exp}
    token = {
        "other-secret": jwt.encode(claims, "x" * 40, algorithm="HS256"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "tampered": ".".join([good.split(".")[0], _b64(claims), good.split(".")[2]]),
        "enterprise-role": jwt.encode({**claims, "role": "enterprise"}, SECRET, algorithm="HS256"),
        "no-exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET,
                             algorithm="HS256"),
        "garbage": "not.a.token",
        "empty": "",
        "wrong-issuer": jwt.encode({**claims, "iss": "elsewhere"}, SECRET, algorithm="HS256"),
    }[forge]
    with pytest.raises(TokenError):
        read_token(SECRET, token)


def test_bank_users_see_the_portfolio_and_enterprises_their_borrower() -> None:
    assert Principal(Role.ADMIN, "a").scope is None
    assert Principal(Role.OFFICER, "o").scope is None
    assert Principal(Role.ENTERPRISE, "k1", "sup-a").scope == "sup-a"
    assert not Principal(Role.ENTERPRISE, "k1", "sup-a").is_bank


def test_a_warehouse_operator_is_scoped_to_its_ledger_party_never_the_portfolio() -> None:
    operator = Principal(Role.OPERATOR, "k2", operator_id="op-north")
    assert operator.scope == "op:op-north" and not operator.is_bank
    # A caller outside the bank without its party would have scope None: the whole book.
    for role, borrower, op in [(Role.OPERATOR, None, None), (Role.OPERATOR, "sup-a", "op-north"),
                               (Role.OPERATOR, None, ""), (Role.ENTERPRISE, None, None),
                               (Role.ENTERPRISE, "sup-a", "op-north"), (Role.ENTERPRISE, "", None),
                               (Role.OFFICER, "sup-a", None), (Role.ADMIN, None, "op-north")]:
        with pytest.raises(ValueError):
            Principal(role, "k", borrower, op)


def test_a_token_cannot_claim_an_api_key_role() -> None:
    for role in (Role.ENTERPRISE, Role.OPERATOR):
        with pytest.raises(TokenError):
            read_token(SECRET, issue_token(SECRET, "mallory", role, timedelta(minutes=5)))


def test_the_principal_cache_expires_and_clears() -> None:
    cache = PrincipalCache(ttl_s=60)
    who = Principal(Role.OFFICER, "o")
    cache.put("k", who)
    assert cache.get("k") == who
    cache.clear()
    assert cache.get("k") is None
    off = PrincipalCache(ttl_s=0)
    off.put("k", who)
    assert off.get("k") is None


def test_a_page_says_whether_there_is_more() -> None:
    params = PageParams(limit=2, offset=4)
    full = params.page([1, 2, 3])
    assert full.items == [1, 2] and full.next_offset == 6
    last = params.page([1])
    assert last.items == [1] and last.next_offset is None
