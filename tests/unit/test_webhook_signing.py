"""Webhook signatures, URL checks, backoff and the event body (pure, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.events import alert_topic, backoff_s, check_webhook_url, event_body
from notifier.signing import new_secret, sign, verify

ROOT = Path(__file__).resolve().parents[2]
IO_PACKAGES = ("httpx", "paho", "psycopg", "fastapi")

SECRET = "s" * 40
BODY = b'{"id":1,"type":"alert.raised"}'
T = 1_700_000_000


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_a_fresh_signature_verifies() -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T)
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T + 299)
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T - 299)  # sender clock a bit ahead


def test_a_tampered_body_is_refused() -> None:
    signature = sign(SECRET, T, BODY)
    assert not verify(SECRET, signature, BODY.replace(b"raised", b"resolved"), now=T)
    assert not verify(SECRET, signature, BODY + b" ", now=T)


def test_a_wrong_secret_is_refused() -> None:
    assert not verify("x" * 40, sign(SECRET, T, BODY), BODY, now=T)


def test_a_replay_outside_the_window_is_refused() -> None:
    signature = sign(SECRET, T, BODY)
    assert not verify(SECRET, signature, BODY, now=T + 301)
    assert not verify(SECRET, signature, BODY, now=T - 301)
    assert verify(SECRET, signature, BODY, now=T + 3000, tolerance_s=3600)


def test_moving_the_timestamp_breaks_the_signature() -> None:
    mac = sign(SECRET, T, BODY).split(",v1=")[1]
    assert not verify(SECRET, f"t={T + 60},v1={mac}", BODY, now=T + 60)


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", f"t={T}", "v1=00", f"t={T},v0=00",
                                    f"t={T},v1=", "garbage"])
def test_malformed_headers_are_refused(header: str) -> None:
    assert not verify(SECRET, header, BODY, now=T)


def test_any_of_several_v1_entries_may_match() -> None:
    good = sign(SECRET, T, BODY).split(",v1=")[1]
    assert verify(SECRET, f"t={T},v1={'0' * 64},v1={good}", BODY, now=T)


def test_generated_secrets_are_long_and_distinct() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and len(a) >= 32 and a.startswith("whsec_")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://bank.example/pw?x=1",
                                 "HTTPS://bank.example"])
def test_http_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize("url", ["ftp://bank.example/x", "file:///etc/passwd", "bank.example/hook",
                                 "javascript:alert(1)", "http://", "https://user:pw@bank.example/",
                                 "http://bank.example:99999/", " http://bank.example/",
                                 "http://bank .example/"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_webhook_url(url)


def test_backoff_grows_with_jitter_and_never_shrinks() -> None:
    for attempt in range(1, 10):
        low = backoff_s(attempt, 1.0, 1e9, rand=lambda: 0.0)
        high = backoff_s(attempt, 1.0, 1e9, rand=lambda: 1.0)
        assert low == 2.0 ** (attempt - 1) / 2 and high == 2.0 ** (attempt - 1)
        assert backoff_s(attempt + 1, 1.0, 1e9, rand=lambda: 0.0) >= high


def test_backoff_is_capped() -> None:
    assert backoff_s(40, 5.0, 60.0, rand=lambda: 1.0) == 60.0
    assert 30.0 <= backoff_s(10_000, 5.0, 60.0) <= 60.0


def test_the_body_is_compact_json_with_id_type_and_payload() -> None:
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    body = event_body(7, "escalated", created, {"alert": {"id": 3, "severity": "critical"}})
    assert json.loads(body) == {"id": 7, "type": "alert.escalated",
                                "created_at": "2024-05-01T12:00:00+00:00",
                                "alert": {"id": 3, "severity": "critical"}}
    assert b" " not in body
    assert json.loads(event_body(8, "ping", created, {"webhook_id": 1}))["type"] == "ping"


def test_topics_carry_borrower_and_facility_without_wildcards() -> None:
    assert alert_topic("pw/alerts/v1", "sup-a", "fac-1") == "pw/alerts/v1/sup-a/fac-1"
    assert alert_topic("pw/alerts/v1/", "a/b", "c+#") == "pw/alerts/v1/a_b/c__"
    assert alert_topic("x", None, "f") == "x/_/f"


@pytest.mark.parametrize("module", ["notifier.signing", "notifier.events"])
def test_signing_and_shaping_load_no_io_library(module: str) -> None:
    """A receiver verifying a signature imports neither HTTP, MQTT, database nor API code."""
    script = (f"import sys, {module}\n"
              f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_PACKAGES!r}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
