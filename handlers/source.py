"""The ``Source`` extension point: turns a vendor's raw delivery into events.

A source is pure and synchronous.  ``admit`` runs in the request, before the journal write,
and must be cheap: it rejects bodies that can never be valid (raising ``PayloadRejected``) and
names the dedupe key.  ``normalize`` runs later in the dispatcher and may be retried after a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from handlers.event import Event, RawDelivery

__all__ = ["HasSubject", "Source"]


@runtime_checkable
class Source(Protocol):
    vendor: ClassVar[str]
    content_types: ClassVar[tuple[str, ...]]
    """Media types (without parameters) this source accepts, such as ``application/json``."""

    def admit(self, delivery: RawDelivery) -> str:
        """Check the minimal shape, return the dedupe key; raise ``PayloadRejected`` if invalid."""
        ...

    def normalize(self, delivery: RawDelivery) -> Sequence[Event]:
        """Turn a journaled delivery into events; raise ``NormalizeError`` if it cannot."""
        ...


@runtime_checkable
class HasSubject(Protocol):
    """A source that names what each delivery is about (its *subject*), from its dedupe key.

    The journal keeps the subject with the delivery, so a poller can ask whether a webhook
    for, say, ``smartdocumentor:task:42`` came (``PollContext.seen``).  Optional: a source
    without it stores no subject.
    """

    def subject(self, dedupe_key: str) -> str | None: ...
