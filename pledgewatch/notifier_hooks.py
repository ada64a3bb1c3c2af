"""Wiring of the alert notifier (:mod:`notifier.worker`) into a process, from :class:`Settings`.

The API process starts it with its app::

    on_start, on_stop = notifier_hooks(settings, database_url, endpoints.mqtt)
    app = create_app(database_url, settings=settings, on_start=on_start, on_stop=on_stop)

Every API process may run one: they share the outbox through ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.app import Hook
from gateway.mqtt import MqttTarget, parse_mqtt_url
from notifier.config import NotifierConfig
from notifier.worker import Notifier
from pledgewatch.settings import Settings

NOTIFIER_USER = "pledgewatch-notifier"  # its broker account; the ACL lets it write pw/alerts/#


def notifier_config(settings: Settings) -> NotifierConfig:
    return NotifierConfig(
        max_attempts=settings.webhook_max_attempts,
        backoff_base_s=settings.webhook_backoff_base_s,
        backoff_max_s=max(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s),
        timeout_s=settings.webhook_timeout_s,
        topic_prefix=settings.alert_topic_prefix,
        webhook_allow=tuple(settings.webhook_allow),
    )


def notifier_target(settings: Settings, mqtt: MqttTarget | None) -> MqttTarget | None:
    """``PLEDGEWATCH_NOTIFIER_MQTT_URL`` when set, else the process's own broker target."""
    if settings.notifier_mqtt_url is not None:
        return parse_mqtt_url(settings.notifier_mqtt_url, protocol=settings.mqtt_protocol)
    return mqtt


def build_notifier(settings: Settings, database_url: str,
                   mqtt: MqttTarget | None) -> Notifier | None:
    """A notifier (not started) for this process; None when ``notifier_enabled`` is off.
    ``mqtt=None`` and no notifier URL: webhooks only."""
    if not settings.notifier_enabled:
        return None
    return Notifier(database_url, notifier_config(settings), notifier_target(settings, mqtt))


def notifier_hooks(settings: Settings, database_url: str,
                   mqtt: MqttTarget | None) -> tuple[list[Hook], list[Hook]]:
    """``on_start``/``on_stop`` hooks for :func:`pledgewatch.http.create_app`; the running
    notifier is ``app.state.notifier`` (None when disabled)."""
    notifier = build_notifier(settings, database_url, mqtt)

    def start(app: FastAPI) -> None:
        app.state.notifier = notifier
        if notifier is not None:
            app.state.extra_registries.append(notifier.metrics.registry)
            notifier.start()

    def stop(_app: FastAPI) -> None:
        if notifier is not None:
            notifier.stop()

    return [start], [stop]
