"""Which passwords bank users may choose: 12-256 characters, not containing their own user name,
and not easy to guess by zxcvbn (Dropbox's estimator: common-password, name and word lists,
keyboard patterns, repeats, sequences, dates, l33t), which must rate it at least
:data:`MIN_SCORE` of 4. Used by the API (422) and the CLI (exit 2)."""

from __future__ import annotations

from zxcvbn import zxcvbn

MIN_LENGTH = 12
MAX_LENGTH = 256
MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable", about 10^8 guesses or more
JUDGED = 72  # zxcvbn judges at most 72 characters (its time grows fast with length)
CONTEXT = ("pledgewatch", "pledge", "watch", "officer", "admin", "bank")


class WeakPassword(ValueError):
    """A password the policy refuses; the message says why, in one line."""


def password_problem(password: str, username: str = "") -> str | None:
    """Why ``password`` may not be used by ``username``, or None when it may."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password may have at most {MAX_LENGTH} characters"
    name = username.strip().lower()
    if len(name) >= 3 and name in password.lower():
        return "a password must not contain the user name"
    result = zxcvbn(password[:JUDGED], user_inputs=[u for u in (username, *CONTEXT) if u])
    score = int(result["score"])
    if score < MIN_SCORE:
        feedback = result.get("feedback") or {}
        hint = str(feedback.get("warning") or "").strip().rstrip(".")
        hint = hint or "add another uncommon word or two"
        return (f"the password is too easy to guess ({hint}; strength {score} of 4, at least "
                f"{MIN_SCORE} needed)")
    return None


def check_password(password: str, username: str = "") -> str:
    """``password`` if the policy accepts it for ``username``; else WeakPassword."""
    problem = password_problem(password, username)
    if problem is not None:
        raise WeakPassword(problem)
    return password
