"""Gateways sharing subscription slots: a dead one's slots (and their unacknowledged backlog) are
taken over through PostgreSQL leases, a stopping one hands its slots over, and a gateway that
loses its lease connection lets go of the broker at once.

Real processes (`pledgewatch gateway --slots 2`, killed with SIGKILL), a real Mosquitto with the
project config, a real PostgreSQL; the pure parts (client ids, keys, fair share, the CLI's and the
config's refusals) without I/O at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.consumer import Gateway, GatewayConfig
from gateway.lease import member_key, slot_client_id, slot_key
from gateway.metrics import GatewayMetrics
from gateway.mqtt import parse_mqtt_url
from pledgewatch.broker.mosquitto import Mosquitto, mosquitto_binary
from pledgewatch.cli.main import app
from schema.leases import fair_share, lock_ids
from tests.support import (
    BrokerUnderTest,
    PgServer,
    Publisher,
    Stack,
    device_messages,
    unique,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.once_per_run,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Debian's mosquitto"),
]

POLL_S = 0.2


@pytest.fixture
def mosquitto_stack(pg: PgServer, tmp_path: Path) -> Iterator[Stack]:
    """A database and a Mosquitto of this test's own (sessions die with it)."""
    url = pg.migrated_database()
    with Mosquitto(tmp_path / "broker") as broker:
        yield Stack(pg, url, BrokerUnderTest("mosquitto", parse_mqtt_url(broker.url(), "5"),
                                             1_000_000))
    pg.drop(url)


def slot_holders(stack: Stack, group: str, base: str, slots: int) -> dict[int, str]:
    """Which lease connection (its application_name) holds each slot's lock right now."""
    wanted = {lock_ids(slot_key(group, slot_client_id(base, slots, i))): i for i in range(slots)}
    with stack.connect() as conn:
        rows = conn.execute(
            "SELECT l.classid::bigint, l.objid::bigint, a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
            " AND l.granted AND l.objsubid = 1 AND l.mode = 'ExclusiveLock'"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return {wanted[(c, o)]: name for c, o, name in rows if (c, o) in wanted}


def holder_pids(stack: Stack, group: str, base: str, slots: int) -> dict[int, int]:
    """Slot -> OS pid of the gateway process holding it (its lease connection names it)."""
    return {slot: int(name.rsplit(" ", 1)[1])
            for slot, name in slot_holders(stack, group, base, slots).items()}


def distinct_messages(stack: Stack) -> int:
    with stack.connect() as conn:
        row = conn.execute("SELECT count(DISTINCT (device_id, boot, seq)) FROM readings").fetchone()
    return int(row[0]) if row else 0


# --- two `pledgewatch gateway --slots 2` processes ------------------------------------------

def gateway_process(stack: Stack, client_id: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update({
        "PLEDGEWATCH_DATABASE_URL": stack.database_url,
        "PLEDGEWATCH_MQTT_URL": stack.broker.url,
        "PLEDGEWATCH_MQTT_CLIENT_ID": client_id,
        "PLEDGEWATCH_MQTT_SHARED_GROUP": group,
        "PLEDGEWATCH_MQTT_TENANT_FILTER": stack.tenant,
        "PLEDGEWATCH_MQTT_SESSION_EXPIRY_S": "600",
        "PLEDGEWATCH_GATEWAY_LEASE_POLL_S": str(POLL_S),
        "PLEDGEWATCH_METRICS_PORT": "0",
        # inline writer: spawning the writer process re-imports the whole CLI (seconds)
        "PLEDGEWATCH_WRITER_PROCESS": "false",
        "PLEDGEWATCH_STATE_DIR": str(log.parent / f"state-{log.stem}"),
    })
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pledgewatch", "gateway", "--slots", "2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def totals(log: Path) -> dict[str, int]:
    """The totals a gateway logs when it stops."""
    found = re.findall(r"gateway stopped: (\{.*\})", log.read_text(errors="replace"))
    assert found, log.read_text(errors="replace")[-2000:]
    return {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", found[-1])}


def test_sigkilled_gateway_backlog_is_stored_once_through_its_peer(
        mosquitto_stack: Stack, tmp_path: Path) -> None:
    stack = mosquitto_stack
    devices = [f"wh-{i}" for i in range(4)]
    stack.register(*devices)
    group, base = unique("ingest"), unique("gw")
    warmup = device_messages(stack.tenant, devices, per_device=50, boot=1)
    backlog = device_messages(stack.tenant, devices, per_device=500, boot=2)  # 2,000 messages
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [gateway_process(stack, base, group, log) for log in logs]
    try:
        # the two share the slots: one each, once both are up
        assert wait_until(
            lambda: sorted(holder_pids(stack, group, base, 2).values())
            == sorted(p.pid for p in procs), timeout=30), holder_pids(stack, group, base, 2)
        victim, survivor = procs
        victim_slot = next(s for s, pid in holder_pids(stack, group, base, 2).items()
                           if pid == victim.pid)
        assert wait_until(lambda: all(b"connected to" in log.read_bytes() for log in logs), 15)
        with Publisher(stack.broker.target) as pub:
            pub.publish(warmup)
            assert wait_until(lambda: stack.count() == 2 * len(warmup), timeout=15)
            # A hung gateway, then a dead one: what the broker routed to its session waits there.
            victim.send_signal(signal.SIGSTOP)
            pub.publish(backlog)  # every message PUBACKed by the broker
        stored_at_kill = stack.count()
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(10)
        expected = 2 * (len(warmup) + len(backlog))
        assert stored_at_kill < expected, "nothing waited in the dead gateway's session"
        assert wait_until(lambda: stack.count() >= expected, timeout=POLL_S + 10, interval=0.02), (
            stack.count(), expected)
        failover_s = time.monotonic() - killed_at
        assert holder_pids(stack, group, base, 2) == {0: survivor.pid, 1: survivor.pid}
        assert not wait_until(lambda: stack.count() > expected, timeout=0.5)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(30) == 0, logs[1].read_text(errors="replace")[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert stack.count() == expected
    assert distinct_messages(stack) == len(warmup) + len(backlog)
    text = logs[1].read_text(errors="replace")
    assert f"took slot {victim_slot}" in text, text[-2000:]
    survived = totals(logs[1])
    print(f"\nfailover: {failover_s:.2f} s from SIGKILL to the whole backlog stored; "
          f"{expected - stored_at_kill} readings waited in the dead gateway's session; "
          f"survivor totals {survived}")


# --- in-process gateways (inline writer: no writer process to spawn) -------------------------

@contextmanager
def gateways(stack: Stack, *configs: GatewayConfig) -> Iterator[list[Gateway]]:
    """Gateways running in threads; a standby one never subscribes, so nothing waits for that."""
    gws = [Gateway(stack.database_url, stack.broker.target, c, GatewayMetrics()) for c in configs]
    errors: list[BaseException] = []

    def run(gw: Gateway) -> None:
        try:
            gw.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(gw,), daemon=True) for gw in gws]
    for t in threads:
        t.start()
    try:
        yield gws
    finally:
        for gw in gws:
            gw.stop()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a gateway did not stop"
        assert not errors, errors


def test_graceful_stop_hands_the_slot_over_within_one_poll(mosquitto_stack: Stack) -> None:
    stack = mosquitto_stack
    devices = [f"wh-{i}" for i in range(4)]
    stack.register(*devices)
    group, base = unique("ingest"), unique("gw")
    config = stack.gateway_config(client_id=base, shared_group=group, slots=2,
                                  lease_poll_s=POLL_S, writer_process=False)
    messages = device_messages(stack.tenant, devices, per_device=500)  # 2,000 messages
    with gateways(stack, config, config) as (first, second):
        assert wait_until(lambda: first.held_slots() != [] and second.held_slots() != []
                          and len(first.held_slots() + second.held_slots()) == 2, timeout=15)
        assert wait_until(lambda: first.subscribed.is_set() and second.subscribed.is_set(), 10)
        with Publisher(stack.broker.target) as pub:
            sender = threading.Thread(target=pub.publish, args=(messages,),
                                      kwargs={"rate": 2000.0})
            sender.start()
            assert wait_until(lambda: stack.count() >= len(messages) // 2, timeout=15)
            stopping = time.monotonic()
            first.stop()  # what SIGTERM does: flush, commit, ack, disconnect, release
            assert wait_until(lambda: first.held_slots() == [], timeout=10)
            released = time.monotonic()
            assert wait_until(lambda: second.held_slots() == [0, 1], timeout=POLL_S + 2,
                              interval=0.01)
            taken = time.monotonic()
            handover_s = taken - released
            sender.join(30)
        assert wait_until(lambda: stack.count() >= 2 * len(messages), timeout=10), stack.count()
        assert holder_pids(stack, group, base, 2) == {0: os.getpid(), 1: os.getpid()}
        assert not wait_until(lambda: stack.count() > 2 * len(messages), timeout=0.5)
    assert handover_s <= POLL_S + 0.3, f"handover took {handover_s:.2f} s (poll {POLL_S} s)"
    assert distinct_messages(stack) == len(messages)
    dupes = first.totals["duplicates"] + second.totals["duplicates"]
    # everything the first one wrote it acknowledged, and the broker had the acknowledgements
    # before the peer took the session: nothing is sent twice
    assert dupes == 0, (first.totals, second.totals)
    print(f"\ngraceful stop: {released - stopping:.2f} s to flush and release, slot taken "
          f"{handover_s:.2f} s later, {taken - stopping:.2f} s after stop() (poll {POLL_S} s); "
          f"duplicate readings {dupes}; "
          f"first {first.totals}, second {second.totals}")


def test_losing_the_lease_connection_never_leaves_two_connections_on_a_slot(
        mosquitto_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """One slot, two gateways with the same client id: the holder's lease connection is cut; it
    keeps the slot until the standby takes the lease and the session (the broker then drops the
    holder) or its lease is back; one of the two holds the slot, and messages flow through
    exactly one connection."""
    stack = mosquitto_stack
    stack.register("wh-1")
    base = unique("gw")
    config = stack.gateway_config(client_id=base, lease_poll_s=POLL_S, writer_process=False)
    key = lock_ids(slot_key(None, base))
    with gateways(stack, config) as (holder,):
        assert holder.subscribed.wait(10)
        with gateways(stack, config) as (standby,):
            assert wait_until(lambda: standby.metrics.live_gateways._value.get() == 2, 5)
            assert standby.held_slots() == []
            with stack.connect() as conn:
                cut = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype ="
                    " 'advisory' AND mode = 'ExclusiveLock' AND granted AND objsubid = 1"
                    " AND classid = %s::bigint::oid AND objid = %s::bigint::oid", key).fetchone()
            cut_at = time.time()
            assert cut is not None and cut[0] == 1
            assert wait_until(lambda: holder.metrics.lease_losses._value.get() == 1, timeout=2)
            lost = [r for r in caplog.records if "lost the lease connection" in r.getMessage()]
            assert len(lost) == 1 and "keeping slot(s) 0 until" in lost[0].getMessage()
            assert lost[0].created - cut_at <= POLL_S + 0.5
            assert standby.metrics.lease_losses._value.get() == 0
            assert wait_until(lambda: len(holder.held_slots() + standby.held_slots()) == 1, 5)
            owner = holder if holder.held_slots() else standby
            assert wait_until(owner.subscribed.is_set, timeout=5)
            with Publisher(stack.broker.target) as pub:
                pub.publish(device_messages(stack.tenant, ["wh-1"], per_device=100))
            assert wait_until(lambda: stack.count() == 200, timeout=10)
            assert not (holder.connected.is_set() and standby.connected.is_set())
            assert holder.totals["received"] + standby.totals["received"] >= 100


def test_a_gateway_with_more_slots_than_its_share_hands_the_extra_over(
        mosquitto_stack: Stack) -> None:
    """The first gateway takes every slot; a second one joining gets its fair share."""
    stack = mosquitto_stack
    group, base = unique("ingest"), unique("gw")
    config = stack.gateway_config(client_id=base, shared_group=group, slots=3,
                                  lease_poll_s=POLL_S, writer_process=False)
    with gateways(stack, config) as (first,):
        assert wait_until(lambda: first.held_slots() == [0, 1, 2], timeout=5)
        with gateways(stack, config) as (second,):
            assert wait_until(lambda: len(second.held_slots()) == 1
                              and len(first.held_slots()) == 2, timeout=5)
            assert not set(first.held_slots()) & set(second.held_slots())
        assert wait_until(lambda: first.held_slots() == [0, 1, 2], timeout=5)


# --- no I/O: the pure parts and the refusals --------------------------------------------------

def test_slot_client_ids_keep_the_configured_id_for_one_slot() -> None:
    assert slot_client_id("gw", 1, 0) == "gw"
    assert [slot_client_id("gw", 3, i) for i in range(3)] == ["gw-slot-0", "gw-slot-1", "gw-slot-2"]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="out of range"):
            slot_client_id("gw", 3, bad)


@pytest.mark.parametrize(("slots", "live", "share"), [
    (1, 1, 1), (1, 2, 1), (2, 1, 2), (2, 2, 1), (2, 3, 1), (3, 2, 2), (5, 2, 3), (4, 0, 4),
    (64, 7, 10),
])
def test_fair_share(slots: int, live: int, share: int) -> None:
    assert fair_share(slots, live) == share


def test_lease_keys_are_stable_distinct_64_bit_and_map_to_pg_locks() -> None:
    keys = {slot_key("g", slot_client_id("gw", 8, i)) for i in range(8)}
    keys |= {slot_key("h", "gw-slot-0"), slot_key(None, "gw"), member_key("g", "gw")}
    assert len(keys) == 11
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert slot_key("g", "gw-slot-0") == slot_key("g", "gw-slot-0")
    assert member_key("g", "gw") != slot_key("g", "gw")
    assert lock_ids(-1) == (2**32 - 1, 2**32 - 1)
    assert lock_ids(2**32 + 5) == (1, 5)


@pytest.mark.parametrize(("overrides", "says"), [
    ({"slots": 0}, "slots must be between 1 and 64"),
    ({"slots": 65, "shared_group": "g"}, "slots must be between 1 and 64"),
    ({"slots": 2}, "need a shared subscription group"),
    ({"receive_maximum": 0}, "receive_maximum"),
    ({"receive_maximum": 65536}, "receive_maximum"),
    ({"lease_poll_s": 0}, "lease_poll_s"),
    ({"lease_poll_s": float("nan")}, "lease_poll_s"),
    ({"lock_timeout_s": -1}, "timeouts"),
])
def test_gateway_config_refuses_out_of_range_values(overrides: dict[str, object],
                                                    says: str) -> None:
    with pytest.raises(ValueError, match=says):
        GatewayConfig(**overrides)  # type: ignore[arg-type]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    monkeypatch.setenv("PLEDGEWATCH_STATE_DIR", str(state))
    return state


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--slots", "0"], {}, "--slots must be a whole number from 1 to 64 (got '0')"),
    (["--slots", "65"], {}, "--slots must be a whole number from 1 to 64"),
    (["--slots", "-1"], {}, "--slots must be a whole number"),
    (["--slots", "two"], {}, "(got 'two')"),
    (["--slots", "1.5"], {}, "(got '1.5')"),
    (["--slots", ""], {}, "--slots must be a whole number"),
    (["--slots", "9" * 40], {}, "--slots must be a whole number"),
    (["--slots", "2"], {}, "2 gateway slots need PLEDGEWATCH_MQTT_SHARED_GROUP"),
    ([], {"PLEDGEWATCH_GATEWAY_SLOTS": "3"}, "PLEDGEWATCH_MQTT_SHARED_GROUP"),
    ([], {"PLEDGEWATCH_GATEWAY_SLOTS": "0"}, "PLEDGEWATCH_GATEWAY_SLOTS"),
    ([], {"PLEDGEWATCH_GATEWAY_LEASE_POLL_S": "0"}, "PLEDGEWATCH_GATEWAY_LEASE_POLL_S"),
    ([], {"PLEDGEWATCH_MQTT_RECEIVE_MAXIMUM": "70000"}, "PLEDGEWATCH_MQTT_RECEIVE_MAXIMUM"),
    ([], {"PLEDGEWATCH_GATEWAY_LOCK_TIMEOUT_S": "-1"}, "PLEDGEWATCH_GATEWAY_LOCK_TIMEOUT_S"),
    ([], {"PLEDGEWATCH_GATEWAY_STATEMENT_TIMEOUT_S": "soon"},
     "PLEDGEWATCH_GATEWAY_STATEMENT_TIMEOUT_S"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_gateway_refuses_bad_slots_in_one_line_before_starting_anything(
        args: list[str], env: dict[str, str], says: str, clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["gateway", *args], env=env)
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert text.startswith("error:") and says in text, text
    if not env:
        assert "\n" not in text, text
    assert "Traceback" not in text
    assert not clean_env.exists(), "refused before any embedded service starts"


def test_gateway_help_documents_slots(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["gateway", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--slots" in result.output and "PLEDGEWATCH_MQTT_SHARED_GROUP" in result.output
