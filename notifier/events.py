"""What an event looks like on the way out (pure, standard library only): its name, its JSON body
(the same bytes on a webhook and on MQTT), its MQTT topic, which URLs may receive webhooks, and the
backoff between delivery attempts. Events are alert changes, webhook pings and the ledger's signed
tree heads."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit


def check_webhook_url(url: str) -> str:
    """``url`` if it may receive webhooks (http or https, a host, no credentials); else ValueError."""
    if url != url.strip() or any(c.isspace() for c in url):
        raise ValueError("must not contain whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise ValueError("needs a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; receivers authenticate the signature")
    return url


def backoff_s(attempt: int, base_s: float, max_s: float,
              rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1 = after the first failure): ``base × 2^(attempt−1)``
    capped at ``max_s``, with "equal jitter" (half fixed, half random), so successive delays
    never shrink while retries from many deliveries spread out."""
    full = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    return full / 2 + full / 2 * rand()


PING = "ping"  # a test delivery to one webhook (never published on MQTT)
LEDGER_HEAD = "ledger_head"  # a signed tree head of the ledger (notifier.ledger_heads)


def event_name(kind: str) -> str:
    """The ``type`` of the body and the ``X-PledgeWatch-Event`` header: ``ping``,
    ``ledger.head`` or ``alert.<kind>``."""
    if kind == PING:
        return "ping"
    if kind == LEDGER_HEAD:
        return "ledger.head"
    return f"alert.{kind}"


def event_body(event_id: int, kind: str, created_at: datetime, payload: Mapping[str, Any]) -> bytes:
    """The JSON body of a webhook delivery and of the MQTT message (the same bytes for both)."""
    body = {"id": event_id, "type": event_name(kind), "created_at": created_at.isoformat(),
            **payload}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def topic_segment(value: str | None) -> str:
    if not value:
        return "_"
    return "".join("_" if c in "/+#\0" else c for c in value)


def alert_topic(prefix: str, borrower_id: str | None, facility_id: str | None) -> str:
    return f"{prefix.rstrip('/')}/{topic_segment(borrower_id)}/{topic_segment(facility_id)}"


def event_topic(config_prefix: str, heads_topic: str, kind: str, borrower_id: str | None,
                facility_id: str | None) -> tuple[str, bool]:
    """Where an event goes on MQTT and whether the broker retains it: a signed head on the
    heads topic, retained (a party subscribing later gets the latest head at once); an alert
    event on its alert topic, not retained."""
    if kind == LEDGER_HEAD:
        return heads_topic, True
    return alert_topic(config_prefix, borrower_id, facility_id), False
