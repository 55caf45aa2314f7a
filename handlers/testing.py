"""Fakes for tests of sources, sinks and the host: a sink that records what it is given."""

from __future__ import annotations

from handlers.errors import PermanentSinkError, RetryableSinkError
from handlers.event import Event

__all__ = ["RecordingSink"]


class RecordingSink:
    """Keeps every event by id (idempotent like a real sink) and can be told to fail.

    ``fail_next`` failures are raised before anything is recorded: retryable ones unless
    ``permanent`` is set.
    """

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.calls = 0
        self.fail_next = 0
        self.permanent = False
        self.closed = False

    async def deliver(self, event: Event) -> None:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            if self.permanent:
                raise PermanentSinkError("recording sink: told to fail for good")
            raise RetryableSinkError("recording sink: told to fail")
        self.events.setdefault(event.event_id, event)

    async def aclose(self) -> None:
        self.closed = True
