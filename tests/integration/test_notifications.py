"""Alert notifications out, end to end: a real PostgreSQL (the outbox trigger), a real HTTP
receiver on a free port (signed webhooks, retries, the delivery log) and real brokers (the MQTT
alert topic, PUBACK before marking)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.mqtt import MqttTarget, connected_client, parse_mqtt_url
from lending import operations as service
from lending.domain.alerts import Alert, AlertType, PledgeAlertEscalated, Severity
from lending.store import apply_alert_events, insert_alert
from notifier.address_policy import DestinationPolicy
from notifier.config import NotifierConfig
from notifier.signing import verify
from notifier.webhook_store import create_webhook, deactivate_webhook
from notifier.worker import Notifier
from pledgewatch.broker.mosquitto import Mosquitto, mosquitto_binary
from pledgewatch.net import free_port
from pledgewatch.notifier_hooks import NOTIFIER_USER, build_notifier, notifier_config
from pledgewatch.settings import Settings
from tests.support import BrokerUnderTest, unique, wait_until

pytestmark = pytest.mark.integration

SECRET = "receiver-secret-" + "k" * 32
# Webhooks go to public addresses only; these tests' receivers run on 127.0.0.1, allow-listed here.
LOCAL = ("127.0.0.1",)
LOCAL_RECEIVERS = DestinationPolicy.parse(LOCAL)
A, B = "sup-a", "sup-b"
FAC = {A: "fac-a", B: "fac-b"}


# --- a real HTTP receiver ---------------------------------------------------------------------

@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An http.server in a thread; answers each request with the next status of ``script``
    (then 200) after ``delay_s``."""

    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    reply: bytes = b"ok"
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.requests.append(Received(time.monotonic(), dict(self.headers), body))
                    status = receiver.script.pop(0) if receiver.script else 200
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pledgewatch"

    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in list(self.requests)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --- a portfolio and alerts -------------------------------------------------------------------

@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        for borrower in (A, B):
            conn.execute("INSERT INTO borrowers (borrower_id, tenant, name, role)"
                         " VALUES (%s, 'acme', %s, 'supplier')", (borrower, borrower.upper()))
            conn.execute("INSERT INTO facilities (facility_id, borrower_id, currency, line,"
                         " outstanding) VALUES (%s, %s, 'CNY', 1000000, 500000)",
                         (FAC[borrower], borrower))
    return migrated_db


def an_alert(facility_id: str, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(key=unique("test"), type=AlertType.SENSOR_TAMPER, severity=severity,
                 facility_id=facility_id, lot_id=None, message="seal broken",
                 evidence={"device": "wh-1", "opened_at": "02:13"}, raised_at=datetime.now(UTC),
                 auto_resolve=False)


def raise_alert(url: str, borrower: str = A) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        alert_id = insert_alert(conn, an_alert(FAC[borrower]))
    assert alert_id is not None
    return alert_id


def add_webhook(url: str, target: str, borrower_id: str | None = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(create_webhook(conn, target, SECRET, borrower_id, "", "officer",
                                  policy=LOCAL_RECEIVERS)["id"])


def config(**overrides: Any) -> NotifierConfig:
    base: dict[str, Any] = {"max_attempts": 5, "backoff_base_s": 0.05, "timeout_s": 2.0,
                            "poll_s": 0.5, "topic_prefix": f"pwtest/{unique('alerts')}",
                            "webhook_allow": LOCAL}
    base.update(overrides)
    return NotifierConfig(**base)


@contextmanager
def running(url: str, cfg: NotifierConfig, target: MqttTarget | None = None,
            **kwargs: Any) -> Iterator[Notifier]:
    notifier = Notifier(url, cfg, target, **kwargs).start()
    try:
        assert wait_until(notifier.ready.is_set, 15), "notifier did not start"
        if notifier.publisher is not None:
            assert wait_until(notifier.publisher.connected.is_set, 15), "publisher not connected"
        yield notifier
    finally:
        notifier.stop()


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def delivery_log(url: str, webhook_id: int) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT d.status, d.attempts, d.last_status_code, d.last_error"
                     " FROM webhook_deliveries d WHERE webhook_id = %s ORDER BY id", webhook_id)


# --- an MQTT subscriber -----------------------------------------------------------------------

class Subscriber:
    def __init__(self, target: MqttTarget, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cm = connected_client(target, unique("bank"), persistent=False)
        self.client = self._cm.__enter__()
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.subscribe(topic_filter, qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _t, p in list(self.messages)]

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


@contextmanager
def subscribed(target: MqttTarget, topic_filter: str) -> Iterator[Subscriber]:
    sub = Subscriber(target, topic_filter)
    try:
        yield sub
    finally:
        sub.close()


# --- the outbox trigger -----------------------------------------------------------------------

def test_every_alert_change_becomes_one_event(db: str) -> None:
    alert_id = raise_alert(db)
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        stored = service.get_alert(conn, alert_id)
        worse = replace(an_alert(FAC[A], Severity.CRITICAL), id=alert_id, key=stored.key)
        apply_alert_events(conn, [PledgeAlertEscalated(worse)])
        conn.execute("UPDATE alerts SET cleared = true WHERE id = %s", (alert_id,))  # no event
        service.acknowledge_alert(conn, alert_id, "officer", now)
        service.resolve_alert(conn, alert_id, "officer", "sealed again", now)
    events = rows(db, "SELECT kind, status, severity, borrower_id, facility_id, payload"
                      " FROM alert_events WHERE alert_id = %s ORDER BY id", alert_id)
    assert [e[:3] for e in events] == [("raised", "open", "warning"),
                                       ("escalated", "open", "critical"),
                                       ("acknowledged", "acknowledged", "critical"),
                                       ("resolved", "resolved", "critical")]
    assert {(e[3], e[4]) for e in events} == {(A, FAC[A])}
    last = events[-1][5]
    assert last["alert"]["resolved_by"] == "officer" and last["alert"]["comment"] == "sealed again"
    assert last["previous"] == {"status": "acknowledged", "severity": "critical"}
    assert events[0][5]["previous"] is None and events[0][5]["alert"]["evidence"]["device"] == "wh-1"


def test_webhooks_get_only_their_borrowers_events(db: str) -> None:
    only_a = add_webhook(db, "http://127.0.0.1:9/a", A)
    everything = add_webhook(db, "http://127.0.0.1:9/all")
    raise_alert(db, A)
    raise_alert(db, B)
    assert len(delivery_log(db, only_a)) == 1
    assert len(delivery_log(db, everything)) == 2


# --- webhooks ---------------------------------------------------------------------------------

def test_an_alert_is_signed_to_the_webhook_and_published_on_mqtt(
        db: str, receiver: Receiver, broker: BrokerUnderTest) -> None:
    webhook_id = add_webhook(db, receiver.url)
    cfg = config(poll_s=5.0)  # deliveries below come from the NOTIFY, not the poll
    with subscribed(broker.target, f"{cfg.topic_prefix}/#") as bank, \
            running(db, cfg, broker.target):
        started = time.monotonic()
        alert_id = raise_alert(db)
        assert wait_until(lambda: bool(receiver.requests and bank.messages), 10)
        assert time.monotonic() - started < 3
        with psycopg.connect(db, autocommit=True) as conn:
            service.acknowledge_alert(conn, alert_id, "officer", datetime.now(UTC))
        assert wait_until(lambda: len(receiver.requests) == 2 and len(bank.messages) == 2, 10)

    first = receiver.requests[0]
    headers = {k.lower(): v for k, v in first.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-pledgewatch-event"] == "alert.raised"
    assert verify(SECRET, headers["x-pledgewatch-signature"], first.body)
    assert headers["x-pledgewatch-signature"].startswith(f"t={headers['x-pledgewatch-timestamp']},v1=")
    assert not verify("another-secret-" + "x" * 32, headers["x-pledgewatch-signature"], first.body)
    delivery_id = int(headers["x-pledgewatch-delivery"])
    assert rows(db, "SELECT status, attempts, last_status_code FROM webhook_deliveries WHERE id = %s",
                delivery_id) == [("delivered", 1, 200)]
    assert delivery_log(db, webhook_id)[1][0] == "delivered"

    event = first.event
    assert event["type"] == "alert.raised" and event["alert"]["id"] == alert_id
    assert event["alert"]["borrower_id"] == A and event["alert"]["facility_id"] == FAC[A]
    assert [e["type"] for e in receiver.events()] == ["alert.raised", "alert.acknowledged"]

    topic, payload = bank.messages[0]
    assert topic == f"{cfg.topic_prefix}/{A}/{FAC[A]}"
    assert payload == first.body  # the same bytes on both channels
    assert [e["type"] for e in bank.events()] == ["alert.raised", "alert.acknowledged"]
    assert rows(db, "SELECT count(*) FROM alert_events WHERE mqtt_published_at IS NULL") == [(0,)]


def test_a_failing_receiver_is_retried_until_it_answers(db: str) -> None:
    receiver = Receiver(script=[500, 500, 200], reply=b"bad\x00gateway")
    try:
        webhook_id = add_webhook(db, receiver.url)
        with running(db, config()) as notifier:
            raise_alert(db)
            assert wait_until(lambda: delivery_log(db, webhook_id)[0][0] == "delivered", 15)
    finally:
        receiver.close()
    assert delivery_log(db, webhook_id) == [("delivered", 3, 200, None)]
    registry = notifier.metrics.registry
    assert [registry.get_sample_value("pledgewatch_webhook_deliveries_total", {"status": s})
            for s in ("pending", "delivered", "failed")] == [2, 1, 0]
    attempts = rows(db, "SELECT a.attempt, a.status_code, a.error FROM webhook_attempts a"
                        " JOIN webhook_deliveries d ON d.id = a.delivery_id"
                        " WHERE d.webhook_id = %s ORDER BY a.attempt", webhook_id)
    assert [a[:2] for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert attempts[0][2] == "HTTP 500" and attempts[2][2] is None  # the reply is never stored
    assert len({r.event["id"] for r in receiver.requests}) == 1
    # each attempt is signed afresh
    assert all(verify(SECRET, r.headers["X-PledgeWatch-Signature"], r.body) for r in receiver.requests)


def test_a_dead_receiver_fails_after_max_attempts_with_growing_backoff(db: str) -> None:
    webhook_id = add_webhook(db, f"http://127.0.0.1:{free_port()}/nobody-home")
    cfg = config(max_attempts=4, backoff_base_s=0.4)
    with running(db, cfg, rand=lambda: 0.5) as notifier:  # delays 0.3, 0.6, 1.2 s
        raise_alert(db)
        assert wait_until(lambda: delivery_log(db, webhook_id)[0][0] == "failed", 20)
    failed = notifier.metrics.registry.get_sample_value("pledgewatch_webhook_deliveries_total",
                                                        {"status": "failed"})
    assert failed == 1
    status, attempts, code, error = delivery_log(db, webhook_id)[0]
    assert (status, attempts, code) == ("failed", 4, None)
    assert "Connect" in error
    started = [r[0] for r in rows(
        db, "SELECT a.started_at FROM webhook_attempts a JOIN webhook_deliveries d"
            " ON d.id = a.delivery_id WHERE d.webhook_id = %s ORDER BY a.attempt", webhook_id)]
    assert len(started) == 4
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started)]
    for gap, delay in zip(gaps, (0.3, 0.6, 1.2), strict=True):
        assert delay - 0.02 <= gap < delay + 1.0, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps


def test_a_slow_receiver_times_out_and_is_retried(db: str) -> None:
    receiver = Receiver(delay_s=1.0)
    try:
        webhook_id = add_webhook(db, receiver.url)
        with running(db, config(timeout_s=0.3, max_attempts=2)):
            raise_alert(db)
            assert wait_until(lambda: delivery_log(db, webhook_id)[0][0] == "failed", 15)
    finally:
        receiver.close()
    assert "Timeout" in delivery_log(db, webhook_id)[0][3]


def test_a_deactivated_webhook_gets_nothing_more(db: str, receiver: Receiver) -> None:
    webhook_id = add_webhook(db, receiver.url)
    raise_alert(db)  # pending: no notifier runs
    with psycopg.connect(db, autocommit=True) as conn:
        assert deactivate_webhook(conn, webhook_id) is not None
    raise_alert(db)
    with running(db, config()):
        time.sleep(1.0)
    assert receiver.requests == []
    assert [d[0] for d in delivery_log(db, webhook_id)] == ["cancelled"]


# --- the outbox: nothing lost while no notifier runs, shared work -----------------------------

def test_events_raised_while_the_notifier_is_down_are_sent_when_it_starts(
        db: str, receiver: Receiver, broker: BrokerUnderTest) -> None:
    add_webhook(db, receiver.url)
    cfg = config()
    with subscribed(broker.target, f"{cfg.topic_prefix}/#") as bank:
        with running(db, cfg, broker.target):
            first = raise_alert(db)
            assert wait_until(lambda: len(receiver.requests) == 1 and len(bank.messages) == 1, 10)
        # the notifier is down: the engine and officers carry on
        raised = [raise_alert(db, A), raise_alert(db, B)]
        with psycopg.connect(db, autocommit=True) as conn:
            service.resolve_alert(conn, first, "officer", "sensor replaced", datetime.now(UTC))
        time.sleep(0.3)
        assert len(receiver.requests) == 1 and len(bank.messages) == 1
        with running(db, cfg, broker.target):
            assert wait_until(lambda: len(receiver.requests) == 4 and len(bank.messages) == 4, 15)
    expected = {(first, "alert.raised"), (first, "alert.resolved"),
                (raised[0], "alert.raised"), (raised[1], "alert.raised")}
    assert {(e["alert"]["id"], e["type"]) for e in receiver.events()} == expected
    assert {(e["alert"]["id"], e["type"]) for e in bank.events()} == expected
    assert {t.rsplit("/", 2)[1] for t, _p in bank.messages} == {A, B}


def test_two_notifiers_racing_send_each_event_once(
        db: str, receiver: Receiver, broker: BrokerUnderTest) -> None:
    webhook_id = add_webhook(db, receiver.url)
    cfg = config(batch=4, concurrency=2)
    n = 40
    with subscribed(broker.target, f"{cfg.topic_prefix}/#") as bank, \
            running(db, cfg, broker.target), running(db, cfg, broker.target):
        for i in range(n):
            raise_alert(db, A if i % 2 else B)
        assert wait_until(lambda: len(receiver.requests) >= n and len(bank.messages) >= n, 30)
        time.sleep(0.5)  # a duplicate would arrive now
    webhook_ids = Counter(e["id"] for e in receiver.events())
    mqtt_ids = Counter(e["id"] for e in bank.events())
    assert len(webhook_ids) == n and set(webhook_ids.values()) == {1}
    assert len(mqtt_ids) == n and set(mqtt_ids.values()) == {1}
    assert {d[:2] for d in delivery_log(db, webhook_id)} == {("delivered", 1)}
    assert rows(db, "SELECT count(*) FROM webhook_attempts") == [(n,)]


# --- MQTT through the production ACL ----------------------------------------------------------

def test_the_notifier_account_publishes_and_bank_systems_read_through_the_acl(
        db: str, tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make test` installs it")
    users = {NOTIFIER_USER: "notifier-secret-1", "pledgewatch-bank": "bank-secret-1",
             "wh-a": "device-secret-1"}
    with Mosquitto(tmp_path / "mosquitto", users=users) as secured:
        settings = Settings(state_dir=tmp_path / "state",
                            notifier_mqtt_url=secured.url(NOTIFIER_USER))
        prefix = settings.alert_topic_prefix
        assert notifier_config(settings).topic_prefix == "pw/alerts/v1"
        device_target = parse_mqtt_url(secured.url("wh-a"))
        with subscribed(parse_mqtt_url(secured.url("pledgewatch-bank")), f"{prefix}/#") as bank, \
                subscribed(device_target, f"{prefix}/#") as device:
            notifier = build_notifier(settings, db, mqtt=None)
            assert notifier is not None and notifier.publisher is not None
            notifier.start()
            try:
                assert wait_until(notifier.publisher.connected.is_set, 10)
                alert_id = raise_alert(db)
                assert wait_until(lambda: len(bank.messages) == 1, 10)
                time.sleep(0.3)
            finally:
                notifier.stop()
            assert bank.messages[0][0] == f"{prefix}/{A}/{FAC[A]}"
            assert bank.events()[0]["alert"]["id"] == alert_id
            assert device.messages == []  # devices may not read alerts


def test_events_the_broker_refuses_stay_in_the_outbox(db: str, tmp_path: Path) -> None:
    """An account without `topic write pw/alerts/#`: MQTT 5 PUBACKs say "not authorized", so
    nothing is marked published."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make test` installs it")
    with Mosquitto(tmp_path / "mosquitto", users={"wh-a": "device-secret-1"}) as secured:
        cfg = config(topic_prefix="pw/alerts/v1", poll_s=0.2)
        with running(db, cfg, parse_mqtt_url(secured.url("wh-a"), protocol="5")):
            raise_alert(db)
            time.sleep(1.0)
    assert rows(db, "SELECT count(*) FROM alert_events WHERE mqtt_published_at IS NULL") == [(1,)]


def test_the_notifier_can_be_switched_off(tmp_path: Path) -> None:
    off = Settings(state_dir=tmp_path, notifier_enabled=False)
    assert build_notifier(off, "postgresql://unused/x", None) is None


def test_webhooks_go_out_while_the_broker_is_unreachable(db: str) -> None:
    """No broker: webhooks still go out; events wait for MQTT in the outbox."""
    target = MqttTarget("127.0.0.1", free_port(), protocol="3.1.1")
    receiver = Receiver()
    try:
        add_webhook(db, receiver.url)
        notifier = Notifier(db, config(), target).start()
        try:
            raise_alert(db)
            assert wait_until(lambda: len(receiver.requests) == 1, 10)
        finally:
            notifier.stop()
    finally:
        receiver.close()
    assert rows(db, "SELECT count(*) FROM alert_events WHERE mqtt_published_at IS NULL") == [(1,)]
