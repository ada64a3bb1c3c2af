"""Live updates: one LISTEN connection per process fans the engine's ``pw_limits`` and
``pw_alerts`` notifications out to the server-sent-event streams of the dashboard and API clients.

Each subscriber sees only the facilities its caller may see: enterprises their borrower's."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg

from lending.store import ALERTS_CHANNEL, LIMITS_CHANNEL

log = logging.getLogger(__name__)

EVENT_NAMES = {LIMITS_CHANNEL: "limit", ALERTS_CHANNEL: "alert"}
QUEUE_MAX = 1000


@dataclass(eq=False)
class Subscriber:
    scope: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: int = 0

    def offer(self, event: str, data: dict[str, Any]) -> None:
        """Runs on the subscriber's loop. A client too slow to keep up loses events, not memory."""
        try:
            self.queue.put_nowait((event, data))
        except asyncio.QueueFull:
            self.dropped += 1


class LiveHub:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owners: dict[str, str] = {}  # facility id -> borrower id
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def subscribe(self, scope: str | None) -> Subscriber:
        sub = Subscriber(scope, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def _owner(self, conn: psycopg.Connection, facility_id: str) -> str | None:
        if facility_id not in self._owners:
            row = conn.execute("SELECT borrower_id FROM facilities WHERE facility_id = %s",
                               (facility_id,)).fetchone()
            if row is None:
                return None
            self._owners[facility_id] = row[0]
        return self._owners[facility_id]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    for channel in EVENT_NAMES:
                        conn.execute(f"LISTEN {channel}")
                    self.connected.set()
                    while not self._stop.is_set():
                        # The generator holds the connection: drain it before querying.
                        notes = list(conn.notifies(timeout=0.5, stop_after=1))
                        for note in notes:
                            self._dispatch(conn, note.channel, note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("live updates: %s; reconnecting", exc)
                self._stop.wait(1.0)

    def _dispatch(self, conn: psycopg.Connection, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            facility_id = str(data["facility_id"])
        except (ValueError, KeyError, TypeError):
            return
        owner = self._owner(conn, facility_id)
        data["borrower_id"] = owner
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.scope is None or sub.scope == owner:
                sub.loop.call_soon_threadsafe(sub.offer, EVENT_NAMES[channel], data)
