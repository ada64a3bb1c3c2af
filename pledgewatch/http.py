"""The HTTP app of a process, configured from :class:`Settings`: see :mod:`api.app`."""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api.app import Hook
from api.app import create_app as create_api
from api.deps import ApiConfig
from api.login_throttle import ThrottleConfig
from api.middleware import parse_networks
from notifier.address_policy import DestinationPolicy
from pledgewatch.runtime import kept_secret
from pledgewatch.settings import Settings, SettingsError, load_settings


def jwt_secret(settings: Settings) -> str:
    """The configured secret, or a development secret kept (0600) under the state directory so that
    tokens survive a restart and several local processes agree."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.environment == "production":
        raise SettingsError("invalid configuration:\n  PLEDGEWATCH_JWT_SECRET: production needs a "
                            "secret of at least 32 characters to sign officers' tokens")
    return kept_secret(settings.state_dir / "jwt_secret", lambda: secrets.token_hex(32))


def api_config(settings: Settings) -> ApiConfig:
    return ApiConfig(
        jwt_secret=jwt_secret(settings), token_ttl_s=settings.token_ttl_s,
        auth_cache_s=settings.auth_cache_s, max_body_bytes=settings.http_max_body_bytes,
        login_throttle=ThrottleConfig(
            max_failures=settings.login_max_failures,
            max_failures_per_address=settings.login_max_failures_per_address,
            base_s=settings.login_lockout_base_s,
            max_s=max(settings.login_lockout_max_s, settings.login_lockout_base_s)),
        webhook_policy=DestinationPolicy.parse(settings.webhook_allow),
        trusted_proxies=parse_networks(settings.http_trusted_proxies))


def create_app(database_url: str, registry: CollectorRegistry | None = None,
               settings: Settings | None = None, *, live: bool = True,
               on_start: list[Hook] | None = None, on_stop: list[Hook] | None = None) -> FastAPI:
    settings = settings or load_settings()
    return create_api(database_url, api_config(settings), registry=registry,
                      pool_size=settings.api_pool_size, live=live, on_start=on_start,
                      on_stop=on_stop)
