"""The ``Poller`` extension point: a vendor that does not push is asked, on a schedule.

A poller has a pydantic ``config_model`` (its ``settings``, validated when it is loaded) and one
method, ``poll(state, context)``: from the state it saved last time (``None`` the first time) to
what it found and its new state.  The host (``receiver.pollers``) runs it on its interval, in one
process at a time, saves the state in the journal after each poll, backs off on the errors
below, and puts what it found into the journal through the same intake as a webhook: durable,
deduped, routed and exported.

A poll finds two kinds of things:

* ``PolledDelivery``: a vendor payload as its webhook would have carried it, for a webhook
  route (``route``); that route's source admits it, so its dedupe key is the webhook's, and a
  late webhook with the same bytes is not a second event.  It is marked as recovered.
* ``PolledEvent``: an event of the poller's own (``task.missing``, ``batch.completed``), routed
  by the poller's ``sinks``/``rules`` like a route's events; ``dedupe_key`` makes a repeat of it
  nothing new.

A poller can also be asked to follow given things (a batch submitted from the command line):
``context.watches()`` are the keys it was asked to follow and has not closed, each with the
detail recorded with it, and a result's ``closed`` are the keys it has seen end; the host
closes them once what the poll found is in the journal.

``context.seen(subjects)`` tells which deliveries the journal holds by *subject* (a source's
name for what a delivery is about, such as ``smartdocumentor:task:42``), so a poller can ask
"did its webhook come?" without reading the journal itself.

Errors (retryable or not, the host decides the wait)::

    PollError
     ├── VendorUnavailable   5xx, timeouts, connection errors: retried with backoff
     │    └── RateLimited    429: retried no sooner than ``retry_after``
     └── PollRejected        the vendor refused for good (bad credentials, 4xx): retried
                             on the slowest schedule, and shown to the operator
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, Field

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Attribute, Event, FileRef, RawDelivery

__all__ = [
    "POLLED_CONTENT_TYPE",
    "RECOVERED_HEADER",
    "PollContext",
    "PollError",
    "PollRejected",
    "PollResult",
    "PolledDelivery",
    "PolledEvent",
    "PolledEventSource",
    "Poller",
    "RateLimited",
    "VendorUnavailable",
    "Watched",
    "polled_body",
]

POLLED_CONTENT_TYPE = "application/vnd.hookdock.polled-event+json"
RECOVERED_HEADER = "hookdock-recovered-by"
"""Kept with a recovered delivery: the poller that pulled it in (no webhook brought it)."""


class PollError(Exception):
    """A poll failed; the poller runs again later.  The message is shown to the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VendorUnavailable(PollError):
    """The vendor did not answer usefully for now (5xx, timeout, connection): back off."""


class RateLimited(VendorUnavailable):
    """429: wait at least ``retry_after`` seconds (the vendor's ``Retry-After``)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PollRejected(PollError):
    """The vendor refused the request itself (credentials, a 4xx): a person must look."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class PolledDelivery(_Frozen):
    """A vendor payload recovered by polling, for webhook route ``route``'s source to admit."""

    route: str
    body: bytes
    content_type: str = "application/json"
    subject: str | None = None
    """What the delivery is about, so a later poll finds it with ``context.seen``."""


class PolledEvent(_Frozen):
    """An event of the poller's own; the host routes it by the poller's sinks and rules."""

    kind: str
    dedupe_key: str = Field(min_length=1)
    """The same key again (the next poll finding the same thing) is not a second event."""
    vendor: str
    task_id: str | None = None
    workspace_id: str | None = None
    batch_id: str | None = None
    external_id: str | None = None
    display_name: str | None = None
    payload: dict[str, Any] = {}
    subject: str | None = None
    files: tuple[FileRef, ...] = ()
    """Files the event links to; fetched into its sinks as a route's ``[files]`` says."""
    attributes: dict[str, Attribute] = {}


class PollResult(_Frozen):
    found: tuple[PolledDelivery | PolledEvent, ...] = ()
    state: dict[str, Any] = {}
    """Saved in the journal, handed to the next poll: JSON-serializable, small."""
    calls: int = 0
    """Requests made to the vendor, for the operator's view and benchmarks."""
    closed: tuple[str, ...] = ()
    """Watched keys (``context.watches()``) seen to end: no longer handed to the next poll."""


class Watched(_Frozen):
    """Something a poller was asked to follow: its key and what was recorded with it."""

    key: str
    detail: dict[str, Any] = {}
    added_at: datetime


@runtime_checkable
class PollContext(Protocol):
    """What the host offers a poll."""

    poller: str
    """This poller's name in config."""

    async def seen(self, subjects: Collection[str]) -> set[str]:
        """The ``subjects`` some journaled delivery has (a webhook's, or a recovered one's)."""
        ...

    async def watches(self) -> list[Watched]:
        """What this poller was asked to follow and has not closed, oldest first."""
        ...


@runtime_checkable
class Poller(Protocol):
    config_model: ClassVar[type[BaseModel]]

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        """Ask the vendor; return what was found and the state for next time.

        Raise a ``PollError`` for a vendor failure; the state is then not changed, so the next
        poll covers the same ground again (what it returns is deduped).
        """
        ...

    async def aclose(self) -> None: ...


class PolledEventSource:
    """The source of a poller's own deliveries: each holds one ``PolledEvent`` as JSON."""

    vendor: ClassVar[str] = "hookdock"
    content_types: ClassVar[tuple[str, ...]] = (POLLED_CONTENT_TYPE,)

    def admit(self, delivery: RawDelivery) -> str:
        try:
            event = PolledEvent.model_validate_json(delivery.body)
        except ValueError as exc:
            raise PayloadRejected("not a polled event", status=422) from exc
        return event.dedupe_key

    def normalize(self, delivery: RawDelivery) -> Sequence[Event]:
        try:
            polled = PolledEvent.model_validate_json(delivery.body)
        except ValueError as exc:
            raise NormalizeError(f"delivery {delivery.delivery_id}: not a polled event") from exc
        return [
            Event(
                event_id=delivery.event_id(0),
                delivery_id=delivery.delivery_id,
                vendor=polled.vendor,
                kind=polled.kind,
                route=delivery.route,
                received_at=delivery.received_at,
                task_id=polled.task_id,
                workspace_id=polled.workspace_id,
                batch_id=polled.batch_id,
                external_id=polled.external_id,
                display_name=polled.display_name,
                files=polled.files,
                attributes=polled.attributes,
                payload=polled.payload,
            )
        ]


def polled_body(event: PolledEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))
