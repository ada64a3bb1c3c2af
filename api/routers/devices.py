"""Devices: the sensors a caller may see (enterprises: those verifying their own lots); admins
provision a device (its MQTT password is in that answer only), rotate its credential, disable it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api import scoped_reads
from api.deps import AdminUser, ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import ApiProblem, found, not_found, responses
from api.schemas import (
    DeviceCreate,
    DeviceCredentials,
    DeviceId,
    DevicePublic,
    Slug,
)
from telemetry import provisioning

router = APIRouter(prefix="/devices", tags=["devices"])

DevicePath = Annotated[DeviceId, Path(description="device id (its MQTT username)")]


@router.get("", response_model=Page[DevicePublic], responses=responses(401, 422))
def list_devices(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
                 lot_id: Annotated[Slug | None, Query()] = None,
                 facility_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    """Devices with their status. Enterprises see the sensors bound to their own lots."""
    return page.page(scoped_reads.devices(conn, principal.scope, page.limit + 1, page.offset,
                                     lot_id=lot_id, facility_id=facility_id))


def _visible(conn: ConnDep, scope: str | None, device_id: str) -> dict[str, Any]:
    return found(scoped_reads.device(conn, scope, device_id), "device", device_id)


@router.get("/{device_id}", response_model=DevicePublic, responses=responses(401, 404, 422))
def get_device(conn: ConnDep, principal: CurrentPrincipal, device_id: DevicePath) -> dict[str, Any]:
    return _visible(conn, principal.scope, device_id)


@router.post("", response_model=DeviceCredentials, status_code=201,
             responses=responses(401, 403, 409, 422))
def provision_device(conn: ConnDep, _admin: AdminUser, body: DeviceCreate) -> dict[str, Any]:
    """Register a device and issue its MQTT credential. The password is in this answer only
    (an Argon2 hash is stored); rotate it if it is lost."""
    try:
        password = provisioning.provision(conn, body.device_id, body.tenant, body.kind, body.bound_to)
    except provisioning.DeviceError as exc:
        raise ApiProblem(409, str(exc)) from None
    return {"device": _visible(conn, None, body.device_id), "mqtt_username": body.device_id,
            "mqtt_password": password}


@router.post("/{device_id}/rotate", response_model=DeviceCredentials,
             responses=responses(401, 403, 404, 422))
def rotate_credentials(conn: ConnDep, _admin: AdminUser, device_id: DevicePath) -> dict[str, Any]:
    """A new MQTT password replaces the old one (shown in this answer only)."""
    password = provisioning.rotate(conn, device_id)
    if password is None:
        raise not_found("device", device_id)
    return {"device": _visible(conn, None, device_id), "mqtt_username": device_id,
            "mqtt_password": password}


def _set_enabled(conn: ConnDep, device_id: str, enabled: bool) -> dict[str, Any]:
    if not provisioning.set_enabled(conn, device_id, enabled):
        raise not_found("device", device_id)
    return _visible(conn, None, device_id)


@router.post("/{device_id}/disable", response_model=DevicePublic,
             responses=responses(401, 403, 404, 422))
def disable_device(conn: ConnDep, _admin: AdminUser, device_id: DevicePath) -> dict[str, Any]:
    """Stop accepting the device's telemetry: the gateway dead-letters it as `device_disabled`."""
    return _set_enabled(conn, device_id, False)


@router.post("/{device_id}/enable", response_model=DevicePublic,
             responses=responses(401, 403, 404, 422))
def enable_device(conn: ConnDep, _admin: AdminUser, device_id: DevicePath) -> dict[str, Any]:
    """Accept the device's telemetry again."""
    return _set_enabled(conn, device_id, True)
