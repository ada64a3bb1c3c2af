"""A device's outbox: every message stays until it is stored end to end.

Pure data structure, no I/O. The sender takes messages in order with :meth:`Outbox.next_unsent`
and reports PUBACKs with :meth:`Outbox.ack`; after a reconnect :meth:`Outbox.rewind` queues every
unacknowledged message again, in order and with unchanged bytes. The outbox is bounded: when it is
full the oldest message is dropped and counted.

A PUBACK means the broker has the message, not that the store does: a broker that crashes before
its next autosave loses what it acknowledged. So a numbered message (one with a ``seq``) stays,
after its PUBACK, until the gateway's store confirmation covers it
(:mod:`telemetry.contract.confirm`). :meth:`Outbox.overdue` sends again whatever stays
unconfirmed for ``confirm_timeout_s``; a rewind sends it again at once. A gateway that never
confirms must not make devices resend forever: until the first confirmation arrives, a PUBACKed
message is released after the timeout, as a PUBACK alone released it before.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass

from telemetry.contract.confirm import Confirmation


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    key: int
    topic: str
    payload: bytes
    seq: int | None = None  # set on telemetry: the store confirms it by (boot, seq)


class Outbox:
    """Messages of one device not yet stored end to end, oldest first."""

    def __init__(self, max_messages: int = 5_000, *, boot: int = 0,
                 confirm_timeout_s: float | None = None) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        if confirm_timeout_s is not None and not confirm_timeout_s > 0:
            raise ValueError("confirm_timeout_s must be > 0")
        self.max_messages = max_messages
        self.boot = boot
        self.confirm_timeout_s = confirm_timeout_s
        self.added = 0
        self.acked = 0
        self.resent = 0
        self.dropped = 0
        self.confirmed = 0
        self.resent_unconfirmed = 0
        self.released_unconfirmed = 0
        self.confirming = False  # a store confirmation has arrived at least once
        self._pending: OrderedDict[int, OutboxMessage] = OrderedDict()
        self._unsent: deque[int] = deque()
        self._sent_before: set[int] = set()
        self._unconfirmed: OrderedDict[int, float] = OrderedDict()  # key -> PUBACK time
        self._by_seq: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[OutboxMessage]:
        return iter(list(self._pending.values()))

    def _forget(self, key: int) -> OutboxMessage | None:
        message = self._pending.pop(key, None)
        if message is not None:
            self._sent_before.discard(key)
            self._unconfirmed.pop(key, None)
            if message.seq is not None:
                self._by_seq.pop(message.seq, None)
        return message

    def put(self, topic: str, payload: bytes, seq: int | None = None) -> OutboxMessage:
        """Keep a new message; drops (and counts) the oldest one when the outbox is full."""
        while len(self._pending) >= self.max_messages:
            self._forget(next(iter(self._pending)))
            self.dropped += 1
        message = OutboxMessage(self.added, topic, payload, seq)
        self.added += 1
        self._pending[message.key] = message
        if seq is not None:
            self._by_seq[seq] = message.key
        self._unsent.append(message.key)
        return message

    def next_unsent(self) -> OutboxMessage | None:
        """The oldest message not yet sent on this connection, now counted as sent."""
        while self._unsent:
            key = self._unsent.popleft()
            message = self._pending.get(key)
            if message is None or key in self._unconfirmed:  # done, dropped or waiting
                continue
            if key in self._sent_before:
                self.resent += 1
            self._sent_before.add(key)
            return message
        return None

    def ack(self, key: int, now: float = 0.0) -> bool:
        """The broker acknowledged ``key``; ``False`` when it is no longer here (dropped)."""
        message = self._pending.get(key)
        if message is None:
            return False
        self.acked += 1
        if self.confirm_timeout_s is not None and message.seq is not None:
            self._unconfirmed[key] = now
        else:
            self._forget(key)
        return True

    def confirm(self, confirmation: Confirmation) -> int:
        """The store has these messages; returns how many left the outbox."""
        self.confirming = True
        if confirmation.boot != self.boot:
            return 0
        done = 0
        for lo, hi in confirmation.ranges:
            if hi - lo + 1 > len(self._by_seq):
                seqs = [s for s in list(self._by_seq) if lo <= s <= hi]
            else:
                seqs = [s for s in range(lo, hi + 1) if s in self._by_seq]
            for seq in seqs:
                if self._forget(self._by_seq[seq]) is not None:
                    done += 1
        self.confirmed += done
        return done

    def overdue(self, now: float) -> int:
        """Resend (or, before any confirmation, release) what waited too long; returns how many."""
        if self.confirm_timeout_s is None:
            return 0
        cutoff = now - self.confirm_timeout_s
        late = []
        for key, acked_at in self._unconfirmed.items():
            if acked_at > cutoff:
                break
            late.append(key)
        for key in late:
            if self.confirming:
                del self._unconfirmed[key]
                self._unsent.append(key)
                self.resent_unconfirmed += 1
            else:
                self._forget(key)
                self.released_unconfirmed += 1
        return len(late)

    def rewind(self) -> int:
        """After a reconnect: queue every message not stored end to end again; returns how many.

        PUBACKed but unconfirmed messages go again too once the store is known to confirm: the
        connection may have dropped because the broker crashed and lost them."""
        if self.confirming:
            self.resent_unconfirmed += len(self._unconfirmed)
            self._unconfirmed.clear()
        self._unsent = deque(k for k in self._pending if k not in self._unconfirmed)
        return len(self._unsent)

    @property
    def unsent(self) -> int:
        """How many messages still wait to be sent on this connection."""
        return sum(1 for key in self._unsent if key in self._pending)

    @property
    def unconfirmed(self) -> int:
        """PUBACKed messages still waiting for the store's confirmation."""
        return len(self._unconfirmed)

    @property
    def waiting(self) -> int:
        """Messages not yet where they are going: not PUBACKed, or (once the store confirms)
        not confirmed."""
        return len(self._pending) - (0 if self.confirming else len(self._unconfirmed))

    @property
    def settled(self) -> bool:
        """Nothing waits for the broker, nor (once the store confirms) for the store."""
        waiting = len(self._pending) - len(self._unconfirmed)
        return waiting == 0 and (not self.confirming or not self._unconfirmed)
