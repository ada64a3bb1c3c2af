"""Subscription slots and their leases in PostgreSQL.

Several gateway processes share ``N`` fixed slots. A slot is one persistent MQTT session (a fixed
client id) in the shared subscription group; whoever holds the slot's lease connects with that
client id. A lease is a session-level advisory lock (``pg_try_advisory_lock``) on a connection of
its own: when the holder dies its connection closes, the lock goes with it, and a peer that polls
takes the slot over (``clean_start=False``), inheriting the session and its unacknowledged backlog.

Each process also holds a shared "member" lock on the same connection; counting those in
``pg_locks`` tells how many gateways are alive, and each holds at most its fair share
``ceil(N / live)`` of the slots.

The pure part (client ids, keys) is plain functions; the leases themselves, the fair share and
the one connection that holds them are :mod:`schema.leases` (the engines share them too).
"""

from __future__ import annotations

from schema.leases import advisory_key


def slot_client_id(base: str, slots: int, slot: int) -> str:
    """The MQTT client id of ``slot``: the configured id itself when there is one slot (today's
    session keeps working), ``<base>-slot-<i>`` for every slot when there are several."""
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} out of range 0..{slots - 1}")
    return base if slots == 1 else f"{base}-slot-{slot}"


def slot_key(group: str | None, client_id: str) -> int:
    """The advisory-lock key of a slot: derived from the group and the slot's client id (the
    session it protects)."""
    return advisory_key("pledgewatch-gateway-slot", group or "", client_id)


def member_key(group: str | None, base_client_id: str) -> int:
    """The advisory-lock key every live gateway of one slot set holds in shared mode."""
    return advisory_key("pledgewatch-gateway-member", group or "", base_client_id)


