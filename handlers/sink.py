"""The ``Sink`` extension point: delivers events somewhere.

A sink plugin is a class with a pydantic ``config_model`` (frozen, ``extra="forbid"``) for its
``[sinks.NAME]`` options, built as ``SinkClass(config)``.  hookdock reads ``type``, ``retry``
and ``concurrency`` from that table itself; the plugin's model gets the rest.

``deliver`` must be idempotent on ``event.event_id``: delivery is at-least-once, so the same
event can arrive again after a crash or a retry.  Raise ``RetryableSinkError`` for failures that
may pass (with ``retry_after`` when the destination says when), ``PermanentSinkError`` for those
that cannot, and ``SinkGone`` when the destination is gone for good; any other exception counts
as retryable.  A sink may also define ``async check() -> list[str]`` (every problem found, empty
when fine) and ``async aclose()`` (release clients; called once at shutdown, harmless twice).
Clients (HTTP pools, S3 clients) are made on first use, on the running event loop, and reused.
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
