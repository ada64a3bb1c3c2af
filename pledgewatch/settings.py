"""All configuration, in one place: environment variables prefixed ``PLEDGEWATCH_``.

An unset ``PLEDGEWATCH_DATABASE_URL`` or ``PLEDGEWATCH_MQTT_URL`` means the embedded default: the
program starts its own PostgreSQL and MQTT broker under ``state_dir``. Outside development both
must be set explicitly.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notifier.address_policy import DestinationPolicy

# A list setting from the environment: comma-separated (or a JSON list).
ListSetting = Annotated[list[str], NoDecode]

SLOTS_NEED_A_GROUP = ("{slots} gateway slots need PLEDGEWATCH_MQTT_SHARED_GROUP (each slot is one "
                      "member of the shared subscription $share/<group>/...)")


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("pledgewatch"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PLEDGEWATCH_", env_file=None, extra="ignore", validate_default=True
    )

    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses the embedded services"
    )
    database_url: str | None = Field(
        None, description="PostgreSQL/TimescaleDB URL; unset = embedded PostgreSQL"
    )
    mqtt_url: str | None = Field(
        None, description="mqtt://user:pass@host:port (mqtts:// for TLS); unset = embedded broker"
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol of the gateway; the embedded broker always uses 3.1.1"
    )
    mqtt_client_id: str = Field(
        "pledgewatch-gateway-1",
        min_length=1,
        max_length=64,
        description="fixed client id of the gateway's persistent session",
    )
    mqtt_shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="subscribe as $share/<group>/... so several gateways split the load",
    )
    mqtt_tenant_filter: str = Field(
        "+",
        pattern=r"^(\+|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$",
        description="ingest one tenant's topics only (`+` = all tenants)",
    )
    mqtt_session_expiry_s: int = Field(
        7 * 86400, ge=60, le=2**32 - 1, description="MQTT 5 session expiry interval"
    )
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive")
    mqtt_receive_maximum: int = Field(
        5000, ge=1, le=65535, description="MQTT 5 Receive Maximum of each gateway slot: "
        "unacknowledged messages the broker may send it (bounds the gateway's memory)"
    )
    gateway_slots: int = Field(
        1, ge=1, le=64, description="fixed subscription slots (persistent sessions) shared by "
        "every gateway with this client id; more than 1 needs PLEDGEWATCH_MQTT_SHARED_GROUP"
    )
    gateway_lease_poll_s: float = Field(
        1.0, ge=0.05, le=60, description="how often a gateway checks its slot leases and takes "
        "over the slots of a gateway that died"
    )
    engine_shards: int = Field(
        1, ge=1, le=1024, description="shards of the book that lending engines split by leases "
        "in PostgreSQL (every engine of one database must use the same number; 1 = no leases, "
        "each engine assesses everything)"
    )
    engine_lease_poll_s: float = Field(
        1.0, ge=0.05, le=60, description="how often an engine checks its shard leases and takes "
        "over the shards of an engine that died"
    )
    ledger_key_file: Path | None = Field(
        None, description="the ledger's signing key (PKCS#8 PEM, of PLEDGEWATCH_LEDGER_ALGORITHM),"
        " made on first use; every process that signs heads must use the same file (default: "
        "<state_dir>/ledger/signing.key, or signing-sm2.key for sm2)"
    )
    ledger_algorithm: Literal["ed25519", "sm2"] = Field(
        "ed25519", description="how the ledger signs its tree heads: ed25519, or sm2 (SM2 over "
        "SM3, GB/T 32918) for banks that must use national algorithms; the Merkle tree stays "
        "RFC 9162 SHA-256 either way, and heads signed before a change still verify (each key's "
        "algorithm is recorded)"
    )
    ledger_every_entries: int = Field(
        1000, ge=1, le=1_000_000, description="the ledger signs a head when this many entries "
        "are not yet under one"
    )
    ledger_every_s: float = Field(
        10.0, ge=0.1, le=86_400, description="... or when the oldest unsigned entry is this old"
    )
    gateway_statement_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="statement_timeout of the gateway's writer connection "
        "(0 = none)"
    )
    gateway_broker_stats: bool = Field(
        True, description="export Mosquitto's $SYS/broker/store/messages/count as "
                          "pledgewatch_broker_store_messages (not with the embedded broker)")
    gateway_confirm_stored: bool = Field(
        True, description="publish store confirmations to devices after each commit "
                          "(pw/v1/<tenant>/<device>/stored, QoS 0)")
    gateway_lock_timeout_s: float = Field(
        10.0, ge=0, le=3600, description="lock_timeout of the gateway's writer connection "
        "(0 = none)"
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="where the embedded database, broker and device state live",
    )
    batch_max_messages: int = Field(
        2000, ge=1, le=100_000, description="a batch is committed when it holds this many"
    )
    batch_max_age_ms: int = Field(
        20, ge=1, le=60_000, description="... or when its oldest message is this old"
    )
    writer_process: bool = Field(
        True, description="decode and write batches in a writer process beside the network loop"
    )
    max_payload_bytes: int = Field(
        16_384, ge=64, le=1_048_576, description="larger payloads become dead letters"
    )
    max_future_skew_s: int = Field(
        300, ge=0, description="device timestamps further ahead than this are dead letters"
    )
    max_past_age_s: int = Field(
        7 * 86400, ge=60, description="device timestamps older than this are dead letters"
    )
    device_offline_after_s: int = Field(
        120, ge=5, description="a device silent this long is marked offline"
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Prometheus port of `pledgewatch gateway` (0 = off)"
    )
    http_host: str = Field("127.0.0.1", description="HTTP server bind address")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP server port (0 = any free)")
    use_timescaledb: bool = Field(
        True, description="use TimescaleDB features when the extension exists (false = plain tables)"
    )
    timescale_chunk_interval: str = Field("1 day", description="hypertable chunk interval")
    timescale_compress_after: str = Field("7 days", description="compress chunks older than this")
    timescale_retention: str = Field("400 days", description="drop raw readings older than this")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    jwt_secret: SecretStr | None = Field(
        None, description="signs officers' tokens (32+ characters); unset = a random secret kept "
        "under state_dir (development only)"
    )
    token_ttl_s: int = Field(3600, ge=60, le=7 * 86400, description="lifetime of an officer's token")
    auth_cache_s: float = Field(
        2.0, ge=0, le=300, description="how long a checked credential is trusted without a query"
    )
    api_pool_size: int = Field(8, ge=1, le=200, description="database connections of the API")
    demo_password: SecretStr | None = Field(
        None, description="password of the demo's `officer` (unset = one made on the first run "
        "and kept under state_dir)"
    )
    demo_incident_at_s: float | None = Field(
        None, ge=0, le=86_400, description="seconds into `pledgewatch demo` when an incident "
        "scenario strikes (unset = 5)"
    )
    notifier_enabled: bool = Field(
        True, description="run the alert notifier (signed webhooks + MQTT alert topic) in the API "
        "process; several processes share the work"
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="a webhook delivery fails after this many attempts"
    )
    webhook_backoff_base_s: float = Field(
        5.0, gt=0, le=3600, description="delay before the first retry; doubles each attempt "
        "(with jitter)"
    )
    webhook_backoff_max_s: float = Field(
        3600.0, gt=0, le=86400, description="longest delay between two attempts"
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, le=60, description="a webhook receiver must answer within this"
    )
    alert_topic_prefix: str = Field(
        "pw/alerts/v1", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="alert events are published at QoS 1 on <prefix>/<borrower_id>/<facility_id>"
    )
    notifier_mqtt_url: str | None = Field(
        None, description="broker URL of the alert publisher (user pledgewatch-notifier); unset = "
        "PLEDGEWATCH_MQTT_URL"
    )
    webhook_allow: ListSetting = Field(
        default_factory=list, description="webhook receivers allowed although not public: CIDRs "
        "or addresses (10.20.0.0/16, 127.0.0.1) and host names (hooks.bank.internal, "
        "*.bank.internal), comma-separated; everything else must resolve to public addresses"
    )
    http_max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="larger request bodies are refused "
        "with 413 before they are read (the price CSV upload allows its own 2 MiB)"
    )
    http_trusted_proxies: ListSetting = Field(
        default_factory=list, description="reverse proxies (CIDRs) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed: the client address of log-in throttling, and HSTS"
    )
    login_max_failures: int = Field(
        5, ge=1, le=100, description="failed log-ins on one account before it is locked out"
    )
    login_max_failures_per_address: int = Field(
        20, ge=1, le=10_000, description="failed log-ins from one client address before it is "
        "locked out"
    )
    login_lockout_base_s: float = Field(
        1.0, gt=0, le=60, description="the first lockout; it doubles with each further failure"
    )
    login_lockout_max_s: float = Field(
        900.0, ge=1, le=3600, description="the longest lockout"
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = urlsplit(v).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"must start with postgresql:// (got {scheme or 'no'} scheme)")
        return v

    @field_validator("mqtt_url", "notifier_mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {parts.scheme or 'no'} scheme)")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. mqtt://127.0.0.1:1883")
        try:
            parts.port  # noqa: B018 - raises on a non-numeric or out-of-range port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return v

    @field_validator("webhook_allow", "http_trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("is not a JSON list; or write a comma-separated list") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return v

    @field_validator("webhook_allow")
    @classmethod
    def _check_webhook_allow(cls, v: list[str]) -> list[str]:
        DestinationPolicy.parse(v)  # ValueError names the bad entry
        return v

    @field_validator("http_trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a CIDR or an IP address") from None
        return v

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == "":
            return None
        if len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (use `openssl rand -hex 32`)")
        return v

    @field_validator("timescale_chunk_interval", "timescale_compress_after", "timescale_retention")
    @classmethod
    def _check_interval(cls, v: str) -> str:
        if not re.fullmatch(r"\d{1,6} (second|minute|hour|day|week|month|year)s?", v.strip()):
            raise ValueError("must look like '1 day' or '12 hours'")
        return v.strip()

    @model_validator(mode="after")
    def _slots_need_a_group(self) -> Settings:
        if self.gateway_slots > 1 and self.mqtt_shared_group is None:
            raise ValueError(SLOTS_NEED_A_GROUP.format(slots=self.gateway_slots))
        return self

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.environment == "production" and (self.database_url is None or self.mqtt_url is None):
            raise ValueError(
                "production needs PLEDGEWATCH_DATABASE_URL and PLEDGEWATCH_MQTT_URL "
                "(the embedded services are for development only)"
            )
        return self


class SettingsError(RuntimeError):
    """Configuration that cannot be used, with a message fit for the terminal."""


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's error into one that names the variables."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"PLEDGEWATCH_{field.upper()}" if err["loc"] else "settings"
            lines.append(f"  {env}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
