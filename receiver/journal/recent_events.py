"""Events this process just routed, kept so a send claimed later need not parse them again.

Routing stores each event as JSON; a send its sink could not take at once is claimed from the
journal a moment later, and reading it back meant validating the same document into the same
``Event`` again, the largest single cost of a claim.  The journal remembers the events whose
sends were left waiting, with the exact bytes it stored, and a claim whose row holds those
very bytes takes the event from here.  Anything else (another process's event, one routed
again since, one evicted) is parsed from its row as before, so the journal stays the truth.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from handlers.event import Event

__all__ = ["RecentEvents"]


class RecentEvents:
    """A map of event id to (stored JSON, event), bounded in count and in the bytes of the
    stored JSON (the event in memory takes about as much again), oldest dropped first;
    thread-safe (routing records on the event loop, claims read on the journal's commit
    thread)."""

    def __init__(self, capacity: int = 2048, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._events: OrderedDict[str, tuple[bytes, Event]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, event: Event, body: bytes) -> None:
        if len(body) > self._max_bytes:
            return  # parsed again when claimed: cheaper than what it would push out
        with self._lock:
            self._drop(event.event_id)
            self._events[event.event_id] = (body, event)
            self._bytes += len(body)
            while len(self._events) > self._capacity or self._bytes > self._max_bytes:
                self._drop(next(iter(self._events)))

    def take(self, event_id: str, body: bytes) -> Event | None:
        """The event stored as ``body``, if it is the one remembered; forgotten either way
        (most events go to one sink, and a second claim simply parses it)."""
        with self._lock:
            kept = self._drop(event_id)
        if kept is None or kept[0] != body:
            return None
        return kept[1]

    def _drop(self, event_id: str) -> tuple[bytes, Event] | None:
        kept = self._events.pop(event_id, None)
        if kept is not None:
            self._bytes -= len(kept[0])
        return kept

    def __len__(self) -> int:
        return len(self._events)
