"""Signed heads out as they are signed, over a real PostgreSQL, a real HTTP receiver and real
brokers: a webhook that asked for heads receives each one signed (HMAC header) and the head
verifies (signature, and today's log extends it); a subscriber that connects afterwards gets the
latest head at once (retained, QoS 1); heads never feed the log they sign (no capture loop); and
the sequencer as a process runs it (with SM2 heads)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.mqtt import MqttTarget, connected_client
from ledger import store, verify
from ledger.appender import HeadPolicy, append_pending, drain
from ledger.signing import Signer
from lending.store import insert_alert
from notifier.config import NotifierConfig
from notifier.ledger_heads import enqueue_head
from notifier.signing import EVENT_HEADER, SIGNATURE_HEADER
from notifier.signing import verify as verify_hmac
from notifier.webhook_store import create_webhook
from pledgewatch.runtime import start_ledger
from pledgewatch.settings import Settings
from tests.integration.test_ledger_log import FAC, SUP_A, drawdown, seed
from tests.integration.test_notifications import (
    LOCAL_RECEIVERS,
    SECRET,
    Receiver,
    an_alert,
    config,
    running,
)
from tests.support import BrokerUnderTest, unique, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed(conn)
    return migrated_db


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def heads_config() -> NotifierConfig:
    return config(heads_topic=f"pwtest/{unique('ledger')}/heads")


def add_webhook(url: str, target: str, *, heads: bool, borrower_id: str | None = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(create_webhook(conn, target, SECRET, borrower_id, "", "officer",
                                  policy=LOCAL_RECEIVERS, ledger_heads=heads)["id"])


def count(url: str, query: str, *params: Any) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@contextmanager
def subscribed(target: MqttTarget, topic: str) -> Iterator[list[Message]]:
    got: list[Message] = []
    with connected_client(target, unique("party"), persistent=False) as client:
        acked = threading.Event()
        client.on_message = lambda _c, _u, m: got.append(
            Message(m.topic, bytes(m.payload), m.qos, bool(m.retain)))
        client.on_subscribe = lambda *_a: acked.set()
        client.subscribe(topic, qos=1)
        assert acked.wait(10), "no SUBACK"
        yield got


def sign_a_head(url: str, signer: Signer, amount: float, key: str) -> store.SignedHead:
    with psycopg.connect(url, autocommit=True) as conn:
        drawdown(conn, SUP_A, amount, key)
        head = drain(conn, signer, on_head=enqueue_head).head
    assert head is not None
    return head


def test_a_signed_head_reaches_the_webhooks_that_asked_and_the_retained_heads_topic(
        db: str, receiver: Receiver, broker: BrokerUnderTest) -> None:
    signer = Signer.generate()
    scoped = add_webhook(db, receiver.url + "/scoped", heads=True, borrower_id=SUP_A)
    alerts_only = add_webhook(db, receiver.url + "/alerts", heads=False)
    cfg = heads_config()
    first = sign_a_head(db, signer, 4321, "heads-key-0001")
    second = sign_a_head(db, signer, 99, "heads-key-0002")
    assert second.tree_size > first.tree_size
    with running(db, cfg, broker.target):
        assert wait_until(lambda: len(receiver.requests) == 2 and count(
            db, "SELECT count(*) FROM alert_events WHERE kind = 'ledger_head'"
                " AND mqtt_published_at IS NULL") == 0, 15)
        # a party that subscribes now gets the latest head at once: it is retained
        with subscribed(broker.target, cfg.heads_topic) as late:
            assert wait_until(lambda: len(late) >= 1, 10), "no retained head"
    assert late[0].topic == cfg.heads_topic and late[0].retain
    published = json.loads(late[0].payload)
    assert published["type"] == "ledger.head"
    assert store.SignedHead.from_json(published["head"]) == second

    assert count(db, "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s",
                 alerts_only) == 0
    assert count(db, "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s"
                     " AND status = 'delivered'", scoped) == 2
    kept = []
    for request in receiver.requests:
        assert request.headers[EVENT_HEADER] == "ledger.head"
        assert verify_hmac(SECRET, request.headers[SIGNATURE_HEADER], request.body)
        event = request.event
        assert event["type"] == "ledger.head" and set(event) == {"id", "type", "created_at",
                                                                  "head"}
        head = store.SignedHead.from_json(event["head"])
        head.verify(signer.public_key)  # the key the party pinned
        kept.append(head)
    assert sorted(kept, key=lambda h: h.tree_size) == [first, second]
    with psycopg.connect(db, autocommit=True) as conn:
        for head in kept:  # today's log extends every head the party kept
            assert verify.check_kept_head(conn, head, public_key=signer.public_key) == second


def test_heads_never_feed_the_log_they_sign(db: str, receiver: Receiver,
                                            broker: BrokerUnderTest) -> None:
    """Heads go through the alert outbox, which the ledger captures: they must not be captured,
    or each head would append an entry that makes the next head, for ever."""
    signer = Signer.generate()
    add_webhook(db, receiver.url, heads=True)
    eager = HeadPolicy(every_entries=1, every_seconds=0.0)
    head = sign_a_head(db, signer, 10, "loop-key-0001")
    with running(db, heads_config(), broker.target):
        assert wait_until(lambda: len(receiver.requests) == 1 and count(
            db, "SELECT count(*) FROM alert_events WHERE mqtt_published_at IS NULL") == 0, 15)
    assert count(db, "SELECT count(*) FROM ledger_outbox") == 0
    with psycopg.connect(db, autocommit=True) as conn:
        for _ in range(3):
            again = append_pending(conn, signer, eager, force_head=True, on_head=enqueue_head)
            assert again.appended == 0 and again.head is None
        assert store.tree_size(conn) == head.tree_size
        assert store.latest_head(conn) == head
        # alert events themselves are still captured
        insert_alert(conn, an_alert(FAC[SUP_A]))
        captured = conn.execute("SELECT count(*) FROM ledger_outbox WHERE source = 'alert_events'"
                                ).fetchone()
        assert captured == (1,)
        report = verify.check_database(conn)
        assert report.ok, report.problems


def test_the_sequencer_process_publishes_sm2_heads(db: str, receiver: Receiver,
                                                   tmp_path: Path) -> None:
    """start_ledger (as `pledgewatch engine` runs it) with PLEDGEWATCH_LEDGER_ALGORITHM=sm2."""
    add_webhook(db, receiver.url, heads=True)
    settings = Settings(state_dir=tmp_path / "state", ledger_algorithm="sm2",
                        ledger_every_entries=1, ledger_every_s=0.1)
    stop = threading.Event()
    thread = start_ledger(db, settings, stop)
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            drawdown(conn, SUP_A, 777, "sm2-key-0001")
        with running(db, heads_config()):
            assert wait_until(lambda: bool(receiver.requests), 20), "no head delivered"
    finally:
        stop.set()
        thread.join(30)
    assert (tmp_path / "state" / "ledger" / "signing-sm2.key").exists()
    head = store.SignedHead.from_json(receiver.requests[0].event["head"])
    assert head.algorithm == "sm2" and len(head.public_key) == 65
    head.verify()
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT algorithm FROM ledger_keys WHERE key_id = %s",
                            (head.key_id,)).fetchone() == ("sm2",)
        report = verify.check_database(conn)
        assert report.ok and report.heads >= 1, report.problems
