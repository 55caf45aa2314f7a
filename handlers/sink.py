"""The ``Sink`` extension point: delivers events somewhere.

``deliver`` must be idempotent on ``event.event_id``: delivery is at-least-once, so the same
event can arrive again after a crash or a retry.  Raise ``RetryableSinkError`` for failures that
may pass and ``PermanentSinkError`` for those that cannot; any other exception counts as
retryable.  A sink may also define ``async check() -> list[str]`` (problems found, empty when
fine) and ``async aclose()``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from handlers.event import Event

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    async def deliver(self, event: Event) -> None:
        """Deliver ``event``; a second call with the same event id must not duplicate it."""
        ...
