"""A device's outbox: every message stays until the broker has acknowledged it (PUBACK).

Pure data structure, no I/O. The sender takes messages in order with :meth:`Outbox.next_unsent`
and reports PUBACKs with :meth:`Outbox.ack`; after a reconnect :meth:`Outbox.rewind` queues every
unacknowledged message again, in order and with unchanged bytes. The outbox is bounded: when it is
full the oldest message is dropped and counted.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    key: int
    topic: str
    payload: bytes


class Outbox:
    """Unacknowledged messages of one device, oldest first."""

    def __init__(self, max_messages: int = 5_000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.max_messages = max_messages
        self.added = 0
        self.acked = 0
        self.resent = 0
        self.dropped = 0
        self._pending: OrderedDict[int, OutboxMessage] = OrderedDict()
        self._unsent: deque[int] = deque()
        self._sent_before: set[int] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[OutboxMessage]:
        return iter(list(self._pending.values()))

    def put(self, topic: str, payload: bytes) -> OutboxMessage:
        """Keep a new message; drops (and counts) the oldest one when the outbox is full."""
        while len(self._pending) >= self.max_messages:
            old_key, _ = self._pending.popitem(last=False)
            self._sent_before.discard(old_key)
            self.dropped += 1
        message = OutboxMessage(self.added, topic, payload)
        self.added += 1
        self._pending[message.key] = message
        self._unsent.append(message.key)
        return message

    def next_unsent(self) -> OutboxMessage | None:
        """The oldest message not yet sent on this connection, now counted as sent."""
        while self._unsent:
            key = self._unsent.popleft()
            message = self._pending.get(key)
            if message is None:  # acknowledged or dropped meanwhile
                continue
            if key in self._sent_before:
                self.resent += 1
            self._sent_before.add(key)
            return message
        return None

    def ack(self, key: int) -> bool:
        """The broker acknowledged ``key``; ``False`` when it is no longer here (dropped)."""
        if self._pending.pop(key, None) is None:
            return False
        self._sent_before.discard(key)
        self.acked += 1
        return True

    def rewind(self) -> int:
        """After a reconnect: queue every unacknowledged message again; returns how many."""
        self._unsent = deque(self._pending)
        return len(self._unsent)

    @property
    def unsent(self) -> int:
        """How many messages still wait to be sent on this connection."""
        return sum(1 for key in self._unsent if key in self._pending)
