"""The MQTT topic scheme, version 1.

Devices publish on ``pw/v1/<tenant>/<device_id>/telemetry`` and ``pw/v1/<tenant>/<device_id>/status``
(the status topic also carries the device's last will). Tenant and device ids are short slugs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

PREFIX = "pw/v1"
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # use with fullmatch
Channel = Literal["telemetry", "status"]
CHANNELS: tuple[Channel, ...] = ("telemetry", "status")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    tenant: str
    device_id: str
    channel: Channel


def telemetry_topic(tenant: str, device_id: str) -> str:
    return f"{PREFIX}/{tenant}/{device_id}/telemetry"


def status_topic(tenant: str, device_id: str) -> str:
    return f"{PREFIX}/{tenant}/{device_id}/status"


def subscription_filters(shared_group: str | None = None, tenant: str = "+") -> list[str]:
    """The filters a gateway subscribes to (all tenants by default, or one); with a group, as an
    MQTT shared subscription."""
    filters = [f"{PREFIX}/{tenant}/+/{channel}" for channel in CHANNELS]
    if shared_group:
        return [f"$share/{shared_group}/{f}" for f in filters]
    return filters


@lru_cache(maxsize=65_536)
def parse_topic(topic: str) -> DeviceTopic | None:
    """Split a device topic; ``None`` when it is not one of ours or its ids are not slugs."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return None
    tenant, device_id, channel = parts[2], parts[3], parts[4]
    if channel not in CHANNELS or not SLUG.fullmatch(tenant) or not SLUG.fullmatch(device_id):
        return None
    return DeviceTopic(tenant, device_id, channel)
