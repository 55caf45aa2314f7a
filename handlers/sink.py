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
A sink class may set ``default_concurrency`` (an int): its slots when its table sets no
``concurrency`` (else ``[dispatcher] concurrency``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from handlers.event import Event
from handlers.files import IncomingFile

__all__ = ["FileSink", "Sink"]


@runtime_checkable
class Sink(Protocol):
    async def deliver(self, event: Event) -> None:
        """Deliver ``event``; a second call with the same event id must not duplicate it."""
        ...


@runtime_checkable
class FileSink(Protocol):
    """A sink that also stores the files events refer to (SAS links, result downloads).

    For each file of an event the route fetches, the host calls ``deliver_file`` with the
    download as an ``IncomingFile`` stream, then ``deliver`` with the event, whose ``files``
    now record each stored file's size, SHA-256, content type and name.  Read the stream once,
    to the end, into the destination, next to where ``deliver`` puts the event (name it with
    ``handlers.files.stored_name``); never hold it whole in memory.  Like ``deliver``,
    ``deliver_file`` must be idempotent on (``event.event_id``, ``file.role``).  Errors raised
    by the stream are the download's: let them propagate.
    """

    async def deliver(self, event: Event) -> None: ...

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        """Store ``file`` (read to its end) beside where ``event`` will go."""
        ...
