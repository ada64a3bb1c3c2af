"""Log-in (OAuth2 password flow → JWT), bank user accounts and enterprise API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from api import accounts
from api.deps import (
    AdminUser,
    AnyPrincipal,
    ApiConfig,
    ConnDep,
    Page,
    PageDep,
    PrincipalCache,
)
from api.login_throttle import LoginThrottle
from api.middleware import client_address
from api.problems import ApiProblem, found, responses
from api.schemas import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyPublic,
    Me,
    OperatorId,
    Slug,
    Token,
    UserCreate,
    Username,
    UserPublic,
    UserUpdate,
)
from api.security import Role, issue_token

router = APIRouter(tags=["auth"])


@router.post("/auth/token", response_model=Token, responses=responses(401, 422, 429))
def login(request: Request, conn: ConnDep,
          form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """Officers and admins exchange username and password for a bearer token (JWT). After 5
    failed attempts on an account (20 from one address) attempts are refused with 429 and
    `Retry-After`, for a time that doubles with each further failure (a right password too; the
    limits are settings)."""
    config: ApiConfig = request.app.state.api_config
    throttle: LoginThrottle = request.app.state.login_throttle
    username = form.username[:64]
    address = client_address(request.scope, config.trusted_proxies)
    throttle.check(conn, username, address)
    found = accounts.authenticate(conn, username, form.password[:256])
    if found is None:
        raise ApiProblem(401, "wrong username or password, or the account is disabled",
                         {"WWW-Authenticate": "Bearer"})
    throttle.succeeded(conn, username, address)
    role, epoch = found
    token = issue_token(config.jwt_secret, username, Role(role),
                        timedelta(seconds=config.token_ttl_s), epoch=epoch)
    return Token(access_token=token, expires_in=config.token_ttl_s)


@router.get("/auth/me", response_model=Me, responses=responses(401))
def me(principal: AnyPrincipal) -> Me:
    return Me(role=principal.role.value, subject=principal.subject,
              borrower_id=principal.borrower_id, operator_id=principal.operator_id)


def _forget_credentials(request: Request) -> None:
    cache: PrincipalCache = request.app.state.principals
    cache.clear()


@router.post("/users", response_model=UserPublic, status_code=201,
             responses=responses(401, 403, 409, 422))
def create_user(conn: ConnDep, _admin: AdminUser, body: UserCreate) -> dict[str, Any]:
    return accounts.create_user(conn, body.username, body.password, body.role)


@router.get("/users", response_model=Page[UserPublic], responses=responses(401, 403, 422))
def list_users(conn: ConnDep, _admin: AdminUser, page: PageDep) -> Page[Any]:
    return page.page(accounts.users(conn, page.limit + 1, page.offset))


@router.patch("/users/{username}", response_model=UserPublic,
              responses=responses(401, 403, 404, 422))
def update_user(request: Request, conn: ConnDep, admin: AdminUser, username: Username,
                body: UserUpdate) -> dict[str, Any]:
    if username == admin.subject and body.disabled:
        raise ApiProblem(409, "an admin cannot disable their own account")
    row = found(accounts.update_user(conn, username, body.disabled, body.password), "user",
                username)
    _forget_credentials(request)
    return row


@router.post("/api-keys", response_model=ApiKeyIssued, status_code=201,
             responses=responses(401, 403, 409, 422))
def issue_api_key(conn: ConnDep, admin: AdminUser, body: ApiKeyCreate) -> dict[str, Any]:
    """An API key for one borrower's systems or one warehouse operator's (exactly one of
    `borrower_id` and `operator_id`). The secret is in this answer only; store it."""
    key, row = accounts.issue_api_key(conn, body.borrower_id, body.name, admin.subject,
                                      operator_id=body.operator_id)
    return {**row, "api_key": key.secret}


@router.get("/api-keys", response_model=Page[ApiKeyPublic], responses=responses(401, 403, 422))
def list_api_keys(conn: ConnDep, _admin: AdminUser, page: PageDep,
                  borrower_id: Slug | None = None,
                  operator_id: OperatorId | None = None) -> Page[Any]:
    return page.page(accounts.api_keys(conn, borrower_id, page.limit + 1, page.offset,
                                       operator_id=operator_id))


@router.delete("/api-keys/{key_id}", response_model=ApiKeyPublic,
               responses=responses(401, 403, 404, 422))
def revoke_api_key(request: Request, conn: ConnDep, _admin: AdminUser,
                   key_id: Slug) -> dict[str, Any]:
    """Revoke a key; requests with it are refused from now on."""
    row = found(accounts.revoke_api_key(conn, key_id, datetime.now(UTC)), "API key", key_id)
    _forget_credentials(request)
    return row
