"""`pledgewatch users|api-keys`: bank user accounts (Argon2 passwords) and enterprise API keys
(SHA-256, scoped to one borrower, revocable). Secrets are printed once and never stored in clear."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

from pledgewatch.cli.common import fail, now, run

users_app = typer.Typer(help="Bank user accounts (admins and loan officers).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys, each scoped to one borrower or one warehouse operator.",
                       no_args_is_help=True)


def _read_password(from_stdin: bool, generate: bool, username: str) -> tuple[str, bool]:
    """The new password and whether it must be shown (generated); exit 2 when the password
    policy (api.password_policy: length, not the user name, zxcvbn strength) refuses it."""
    from api.password_policy import password_problem

    if generate:
        return secrets.token_urlsafe(18), True
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password, username)
    if problem is not None:
        raise fail(problem)
    return password, False


PasswordStdin = Annotated[bool, typer.Option("--password-stdin",
                                             help="read the password from the first line of stdin")]
Generate = Annotated[bool, typer.Option("--generate", help="generate a password and print it once")]


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="login name (letters, digits, . _ @ -)")],
    role: Annotated[str, typer.Option(help="officer or admin")] = "officer",
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Create a user who logs in to the dashboard and the API (OAuth2 password flow)."""
    from api.accounts import create_user
    from api.schemas import UserCreate

    if role not in ("officer", "admin"):
        raise fail(f"--role must be officer or admin, got {role!r}")
    password, show = _read_password(password_stdin, generate, username)
    try:
        UserCreate(username=username, password=password, role=role)  # type: ignore[arg-type]
    except ValueError:
        raise fail(f"username {username!r} must be 1-64 letters, digits, '.', '_', '@' or '-'"
                   ) from None
    run(lambda conn: create_user(conn, username, password, role))
    typer.echo(f"user {username} ({role}) created")
    if show:
        typer.echo(f"password: {password}   (shown once; only an Argon2 hash is stored)")


@users_app.command("list")
def users_list() -> None:
    """Every user with role and state."""
    from api.accounts import users

    for row in run(lambda conn: users(conn, 10_000, 0)):
        state = "disabled" if row["disabled"] else "active"
        typer.echo(f"{row['username']:<24} {row['role']:<8} {state:<8} since "
                   f"{row['created_at']:%Y-%m-%d}")


def _set_disabled(username: str, disabled: bool) -> None:
    from api.accounts import update_user

    if run(lambda conn: update_user(conn, username, disabled, None)) is None:
        raise fail(f"no user {username!r}")
    typer.echo(f"user {username} " + ("disabled: its tokens are refused" if disabled else
                                      "enabled (tokens issued before stay refused: log in again)"))


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Refuse the user's log-ins and the tokens already issued to them."""
    _set_disabled(username, True)


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Let a disabled user log in again."""
    _set_disabled(username, False)


@users_app.command("password")
def users_password(
    username: Annotated[str, typer.Argument(help="login name")],
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Set a new password (the user's tokens issued before it are refused from then on)."""
    from api.accounts import update_user

    password, show = _read_password(password_stdin, generate, username)
    if run(lambda conn: update_user(conn, username, None, password)) is None:
        raise fail(f"no user {username!r}")
    typer.echo(f"password of {username} changed")
    if show:
        typer.echo(f"password: {password}   (shown once)")


@keys_app.command("issue")
def keys_issue(
    name: Annotated[str, typer.Option(help="what the key is for, e.g. 'ERP integration'")],
    borrower_id: Annotated[str | None, typer.Argument(
        help="the borrower whose data the key may see", show_default=False)] = None,
    operator: Annotated[str | None, typer.Option(
        "--operator", help="a warehouse operator's key instead: its lots, their ledger entries "
                           "and its stock ledger")] = None,
) -> None:
    """Issue an API key for an enterprise (BORROWER) or a warehouse operator (--operator), exactly
    one of the two; the secret is printed once."""
    from api.accounts import issue_api_key
    from lending.operations import InvalidRequest
    from lending.operators import check_operator_id

    if (borrower_id is None) == (operator is None):
        raise fail("give exactly one of BORROWER and --operator")
    if not 0 < len(name) <= 200:
        raise fail("--name must be 1-200 characters")
    if operator is not None:
        try:
            check_operator_id(operator)
        except InvalidRequest as exc:
            raise fail(f"--operator: {exc}") from None
    key, _row = run(lambda conn: issue_api_key(conn, borrower_id, name, "cli",
                                               operator_id=operator))
    party = f"borrower {borrower_id}" if operator is None else f"warehouse operator {operator}"
    typer.echo(f"key {key.key_id} for {party}")
    typer.echo(f"api key: {key.secret}   (shown once; send it as the X-API-Key header)")


@keys_app.command("list")
def keys_list(
    borrower: Annotated[str | None, typer.Option(help="only this borrower's keys")] = None,
    operator: Annotated[str | None, typer.Option(
        "--operator", help="only this warehouse operator's keys")] = None,
) -> None:
    """Keys with their borrower or operator and state (never the secret)."""
    from api.accounts import api_keys

    for row in run(lambda conn: api_keys(conn, borrower, 10_000, 0, operator_id=operator)):
        state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
        party = row["borrower_id"] or f"op:{row['operator_id']}"
        typer.echo(f"{row['key_id']}  {party:<20} {state:<24} {row['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id `api-keys list` shows")]
                ) -> None:
    """Revoke a key: requests with it are refused (at once here, within `auth_cache_s` elsewhere)."""
    from api.accounts import revoke_api_key

    if run(lambda conn: revoke_api_key(conn, key_id, now())) is None:
        raise fail(f"no API key {key_id!r}")
    typer.echo(f"key {key_id} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="api-keys")
