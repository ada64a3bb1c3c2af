"""Every class of bad input lands as a dead letter with the right reason; the gateway keeps going.
A bad message is stored once however often it arrives (redelivery, resend), and a payload over
the gateway's limit is kept cut to its first 4 KiB with its full size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from yoyo import get_backend, read_migrations

from gateway.ingest import IngestConfig, Ingestor, RawMessage
from gateway.mqtt import connect_kwargs, new_client
from schema.migrate import MIGRATIONS_DIR, yoyo_url
from telemetry.contract.topics import status_topic, subscription_filters, telemetry_topic
from telemetry.provisioning import set_enabled
from telemetry.writer import DEAD_LETTER_KEEP_BYTES, Batch, DeadLetter, write_batch
from tests.support import Publisher, Stack, running_gateway, telemetry, unique, wait_until

pytestmark = pytest.mark.integration


def now_ms(offset: timedelta = timedelta(0)) -> int:
    return int((datetime.now(UTC) + offset).timestamp() * 1000)


def bad_messages(tenant: str) -> list[tuple[str, bytes, str]]:
    t = telemetry_topic(tenant, "wh-1")
    ok = {"weight_kg": 10.0}
    return [
        (t, b'{"boot": 1, "seq": 1, "ts": 1', "malformed_json"),
        (t, b"\xff\xfe\x00garbage", "not_utf8"),
        (t, b"[" * 20_000, "payload_too_large"),
        # Over the broker's old 64 KiB packet limit: it must still reach the gateway.
        (t, b"{" * 150_000, "payload_too_large"),
        (t, json.dumps({"seq": 1, "ts": now_ms(), "readings": ok}).encode(), "missing_boot_seq"),
        (t, json.dumps({"boot": "x", "seq": 1, "ts": now_ms(), "readings": ok}).encode(),
         "invalid_schema"),
        (telemetry_topic(tenant, "ghost"), telemetry(1, 1, ok), "unknown_device"),
        (telemetry_topic("other-tenant", "wh-1"), telemetry(1, 2, ok), "tenant_mismatch"),
        (t, json.dumps({"boot": 1, "seq": 3, "ts": now_ms(), "device": "wh-2",
                        "readings": ok}).encode(), "device_mismatch"),
        (t, telemetry(1, 4, {"moisture": 3}), "unknown_metric"),
        (t, telemetry(1, 5, {"door_open": "yes"}), "wrong_type"),
        (t, telemetry(1, 12, {"temp_c": [1, 2]}), "invalid_schema"),
        (t, telemetry(1, 6, {"weight_kg": True}), "wrong_type"),
        (t, b'{"boot": 1, "seq": 7, "ts": %d, "readings": {"temp_c": NaN}}' % now_ms(),
         "non_finite_value"),
        (t, b'{"boot": 1, "seq": 8, "ts": %d, "readings": {"temp_c": 1e999}}' % now_ms(),
         "non_finite_value"),
        (t, telemetry(1, 9, {"humidity_pct": 140.0}), "out_of_range"),
        (t, telemetry(1, 10, ok, ts=now_ms(timedelta(hours=2))), "ts_in_future"),
        (t, telemetry(1, 11, ok, ts="2001-01-01T00:00:00Z"), "ts_too_old"),
        (status_topic(tenant, "wh-1"), b'{"state": "sleeping"}', "invalid_schema"),
    ]


def test_each_bad_input_class_is_kept_with_its_reason(stack: Stack) -> None:
    stack.register("wh-1", "wh-2")
    # Register wh-1 under this tenant only; the "other-tenant" topic must not be able to use it.
    bad = bad_messages(stack.tenant) if stack.broker.kind != "external-mqtt" else [
        m for m in bad_messages(stack.tenant) if not m[0].startswith("pw/v1/other-tenant/")
    ]
    good = [(telemetry_topic(stack.tenant, "wh-1"), telemetry(1, 100 + i, {"weight_kg": 5.0}))
            for i in range(3)]
    # Subscribe to every tenant so the tenant-mismatch message reaches this gateway.
    config = stack.gateway_config(tenant_filter="+") if stack.broker.kind != "external-mqtt" \
        else stack.gateway_config()
    with running_gateway(stack, config) as gw, Publisher(stack.broker.target) as pub:
        pub.publish([(topic, payload) for topic, payload, _ in bad] + good)
        assert wait_until(lambda: gw.totals["received"] >= len(bad) + len(good)), gw.totals
        expected: dict[str, int] = {}
        for _, _, reason in bad:
            expected[reason] = expected.get(reason, 0) + 1

        def counted() -> bool:  # the counter moves after the row is stored: poll it
            counts = gw.metrics.dead_letter_counts()
            return all(counts.get(reason, 0) >= n for reason, n in expected.items())

        wait_until(counted)
        counts = gw.metrics.dead_letter_counts()

    with stack.connect() as conn:
        rows = conn.execute(
            "SELECT topic, payload_sha256, reason, detail, device_id, payload, payload_size,"
            " occurrences FROM dead_letters ORDER BY id"
        ).fetchall()
    stored = {(r[0], bytes(r[1])): r for r in rows}
    for topic, payload, reason in bad:
        key = (topic, hashlib.sha256(payload).digest())
        assert key in stored, f"{reason} message was lost"
        row = stored[key]
        assert row[2] == reason, (reason, row[3])
        assert row[3], "a dead letter explains itself"
        assert bytes(row[5]) == payload[:DEAD_LETTER_KEEP_BYTES] and row[6] == len(payload)
        assert row[7] == 1
    # Nothing else of this test's became a dead letter (other tests' retained status messages,
    # delivered to this all-tenant subscription, are not this test's concern).
    mine = {(t, hashlib.sha256(p).digest()) for t, p, _ in bad}
    extra = [r for r in rows if (r[0], bytes(r[1])) not in mine and f"/{stack.tenant}/" in r[0]]
    assert not extra, extra
    assert len(mine & set(stored)) == len(bad)
    assert stack.count() == len(good)  # the gateway kept going
    # at least these: an all-tenant gateway on a shared broker also refuses other runs' messages
    assert all(counts.get(reason, 0) >= n for reason, n in expected.items()), (counts, expected)


def test_a_device_disabled_while_the_gateway_runs_is_refused_and_kept(stack: Stack) -> None:
    """The registry is re-read on every housekeeping pass: no unknown device is needed to notice
    that a known one was disabled (or enabled again)."""
    stack.register("wh-off")
    topic = telemetry_topic(stack.tenant, "wh-off")
    with running_gateway(stack, stack.gateway_config(device_offline_after_s=2)) as gw, \
            Publisher(stack.broker.target) as pub:
        pub.publish([(topic, telemetry(1, 1, {"weight_kg": 1.0}))])
        assert wait_until(lambda: stack.count() == 1)
        with stack.connect() as conn:
            assert set_enabled(conn, "wh-off", False)
        time.sleep(1.5)  # one housekeeping pass (every offline-timeout / 2 = 1 s)
        pub.publish([(topic, telemetry(1, 2, {"weight_kg": 2.0}))])
        assert wait_until(lambda: stack.count("dead_letters") >= 1), gw.totals
        with stack.connect() as conn:
            assert set_enabled(conn, "wh-off", True)
        time.sleep(1.5)
        pub.publish([(topic, telemetry(1, 3, {"weight_kg": 3.0}))])
        assert wait_until(lambda: stack.count() == 2)
    with stack.connect() as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters WHERE device_id ="
                                              " 'wh-off'").fetchall()]
        values = [r[0] for r in conn.execute("SELECT value FROM readings WHERE device_id = 'wh-off'"
                                             " ORDER BY seq").fetchall()]
    assert reasons == ["device_disabled"] and values == [1.0, 3.0]


# --- stored once, however often it arrives --------------------------------------------------------

def dead_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT topic, reason, occurrences, received_at, last_received_at, payload_size"
            " FROM dead_letters ORDER BY reason, id").fetchall()


@pytest.mark.once_per_run
def test_the_same_batch_written_twice_is_one_row_per_bad_message(migrated_db: str) -> None:
    """What a redelivery looks like to the writer: the same bytes on the same topic again. Two
    identical bad messages in one batch are one row too (counted); a different reason for the
    same bytes is a row of its own."""
    t0 = datetime.now(UTC)
    topic = "pw/v1/acme/wh-1/telemetry"
    first = DeadLetter(t0, topic, b"{", "malformed_json", "EOF", "wh-1")
    again = DeadLetter(t0 + timedelta(seconds=1), topic, b"{", "malformed_json", "EOF", "wh-1")
    other = DeadLetter(t0, topic, b"\xff", "not_utf8", "byte 0", "wh-1")
    disabled = DeadLetter(t0, topic, b"{", "device_disabled", "device is disabled", "wh-1")
    with psycopg.connect(migrated_db) as conn:
        r1 = write_batch(conn, Batch(dead=[first, again, other]))
        r2 = write_batch(conn, Batch(dead=[first, again, other]))
        r3 = write_batch(conn, Batch(dead=[disabled]))
    assert (r1.dead_letters, r1.dead_letter_repeats) == (3, 1)
    assert (r2.dead_letters, r2.dead_letter_repeats) == (3, 3)
    assert r3.dead_letter_repeats == 0
    rows = dead_rows(migrated_db)
    assert [(r[1], r[2]) for r in rows] == [
        ("device_disabled", 1), ("malformed_json", 4), ("not_utf8", 2)]
    assert rows[1][3] == t0 and rows[1][4] == t0 + timedelta(seconds=1)


def _ingest_without_ack(stack: Stack, client_id: str, messages: list[tuple[str, bytes]]) -> int:
    """A gateway that crashes between commit and PUBACK: subscribe on the gateway's persistent
    session, receive ``messages``, commit them through the real ingest path, then drop the
    connection without acknowledging. Returns how many were received."""
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    client = new_client(stack.broker.target, client_id, persistent=True, manual_ack=True)
    client.on_message = lambda _c, _u, msg: got.append(msg)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(**connect_kwargs(stack.broker.target, persistent=True,  # type: ignore[arg-type]
                                    session_expiry_s=600, keepalive=30))
    client.loop_start()
    try:
        client.subscribe([(f, 1) for f in subscription_filters(None, stack.tenant)])
        assert subscribed.wait(10)
        with Publisher(stack.broker.target) as pub:
            pub.publish(messages)
        if not wait_until(lambda: len(got) >= len(messages), timeout=20):
            return len(got)
        ingestor = Ingestor(stack.database_url, IngestConfig())
        try:
            raw: list[RawMessage] = [(m.topic, bytes(m.payload), time.time(), bool(m.retain))
                                     for m in got]
            ingestor.ingest(raw, lambda _e: False)
        finally:
            ingestor.close()
    finally:
        client.loop_stop()  # no ack, no DISCONNECT: the broker redelivers to the next connection
        sock = client.socket()
        if sock is not None:
            sock.close()
    return len(got)


def test_a_bad_message_redelivered_after_a_gateway_crash_is_stored_once(stack: Stack) -> None:
    stack.register("wh-1")
    client_id = unique("gw")
    topic = telemetry_topic(stack.tenant, "wh-1")
    bad = [(topic, b'{"boot": 1, "seq": 1, "ts": 1'), (topic, telemetry(1, 2, {"temp_c": 500.0}))]
    assert _ingest_without_ack(stack, client_id, bad) == len(bad)
    assert [(r[1], r[2]) for r in dead_rows(stack.database_url)] == [
        ("malformed_json", 1), ("out_of_range", 1)]
    config = stack.gateway_config(client_id=client_id, writer_process=False)
    with running_gateway(stack, config) as gw:  # the same session: the broker redelivers
        assert wait_until(lambda: gw.totals["received"] >= len(bad)), gw.totals
    rows = dead_rows(stack.database_url)
    assert [(r[1], r[2]) for r in rows] == [("malformed_json", 2), ("out_of_range", 2)], rows


@pytest.mark.once_per_run
def test_migration_merges_dead_letters_stored_twice_and_cuts_big_payloads(empty_db: str) -> None:
    """Rows an older gateway stored again on every redelivery become one row, counted."""
    backend = get_backend(yoyo_url(empty_db))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            backend.apply_migrations(backend.to_apply(
                migrations.filter(lambda m: m.id != "0012_dead_letter_dedupe")))
        t0 = datetime.now(UTC)
        big = b"x" * 10_000
        with psycopg.connect(empty_db) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (received_at, topic, payload, reason, detail, device_id)"
                " VALUES (%s, %s, %s, %s, 'd', 'wh-1')",
                [(t0, "pw/v1/a/wh-1/telemetry", b"{", "malformed_json"),
                 (t0 + timedelta(seconds=5), "pw/v1/a/wh-1/telemetry", b"{", "malformed_json"),
                 (t0, "pw/v1/a/wh-1/telemetry", big, "payload_too_large"),
                 (t0 + timedelta(seconds=9), "pw/v1/a/wh-1/telemetry", b"{", "malformed_json")])
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
    finally:
        backend.connection.close()
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute(
            "SELECT reason, occurrences, received_at, last_received_at, length(payload),"
            " payload_size, payload_sha256, dedupe_key FROM dead_letters ORDER BY id").fetchall()
    assert [(r[0], r[1], r[4], r[5]) for r in rows] == [
        ("malformed_json", 3, 1, 1), ("payload_too_large", 1, DEAD_LETTER_KEEP_BYTES, 10_000)]
    assert rows[0][2] == t0 and rows[0][3] == t0 + timedelta(seconds=9)
    assert bytes(rows[1][6]) == hashlib.sha256(big).digest()
    written = DeadLetter(t0, "pw/v1/a/wh-1/telemetry", big, "payload_too_large", "d", "wh-1")
    assert bytes(rows[1][7]) == written.dedupe_key, "the writer and the migration agree"
