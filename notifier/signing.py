"""Webhook signatures: what a PledgeWatch webhook request carries and how a receiver checks it.

Each POST carries ``X-PledgeWatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>``; a receiver recomputes the MAC over the raw body with its secret and refuses a
timestamp too far from its clock (a replayed request), with :func:`verify` or the same few lines
in its language. The body's ``id`` is the event id: deliveries are at least once, so dedupe on it.

Standard library only (no I/O): bank systems may copy this file as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

EVENT_HEADER = "X-PledgeWatch-Event"
DELIVERY_HEADER = "X-PledgeWatch-Delivery"
TIMESTAMP_HEADER = "X-PledgeWatch-Timestamp"
SIGNATURE_HEADER = "X-PledgeWatch-Signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-PledgeWatch-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(secret: str, signature: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Whether ``signature`` (the header value) signs ``body`` with ``secret`` at a timestamp within
    ``tolerance_s`` of ``now`` (either way), so a captured request cannot be replayed later. Any
    of several ``v1=`` entries may match (a sender rotating its secret)."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in signature.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not macs:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, m) for m in macs)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)
