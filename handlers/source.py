"""The ``Source`` extension point: turns a vendor's raw delivery into events.

A source is pure and synchronous.  ``admit`` runs in the request, before the journal write,
and must be cheap: it rejects bodies that can never be valid (raising ``PayloadRejected``) and
names the dedupe key.  ``normalize`` runs later in the dispatcher and may be retried after a fix.

What a source may declare besides, each optional (``SourceBase`` has the defaults):

* ``settings_model``: a pydantic model (``frozen=True, extra="forbid"``) for the route's
  ``settings`` table.  hookdock validates it at startup, naming the route and the key
  (``routes[2].settings.kind_path: ...``), and builds the source with the validated model:
  ``Source(settings)``.  A source without one is built with no arguments and takes no settings.
* ``kept_headers``: the request headers (lower case) it reads, kept with the raw delivery in
  the journal.  Credentials (``Authorization``, signatures) are never kept, whatever it asks.
* ``default_auth``: the verification scheme of its vendor, as an ``auth`` table without the
  secret (``{"type": "hmac", "header": "X-SuperOffice-Signature", ...}``).  A route whose
  ``auth`` gives no ``type`` gets this one, with the route's keys on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from handlers.errors import NormalizeError
from handlers.event import Event, RawDelivery

__all__ = ["HasSubject", "NoSettings", "Source", "SourceBase", "SourceSettings", "event_of"]


class SourceSettings(BaseModel):
    """A base for a source's settings model: frozen, strict (no unknown keys, no coercion)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


class NoSettings(SourceSettings):
    """The settings of a source that takes none: any key is an error."""


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


class SourceBase:
    """Defaults for what a source may declare; subclassing it is optional.

    A subclass with settings sets ``settings_model`` and takes the validated model in
    ``__init__`` (it is ``None`` when a test builds the source bare: use the defaults).
    """

    settings_model: ClassVar[type[BaseModel]] = NoSettings
    default_auth: ClassVar[Mapping[str, Any] | None] = None
    kept_headers: frozenset[str] = frozenset()

    def __init__(self, settings: BaseModel | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_model()


@runtime_checkable
class HasSubject(Protocol):
    """A source that names what each delivery is about (its *subject*), from its dedupe key.

    The journal keeps the subject with the delivery, so a poller can ask whether a webhook
    for, say, ``smartdocumentor:task:42`` came (``PollContext.seen``).  Optional: a source
    without it stores no subject.
    """

    def subject(self, dedupe_key: str) -> str | None: ...


def event_of(delivery: RawDelivery, what: str, **fields: Any) -> Event:
    """The one event of ``delivery``, with ``fields`` (vendor, kind, payload...) on top of the
    ids and times every event takes from its delivery.

    A field a source could not coerce is a bug in that source; pydantic's error would quote the
    offending input (possibly a SAS URL), so ``NormalizeError`` names only the locations.
    ``what`` names the delivery in that message (``"SuperOffice "``; empty for none).
    """
    try:
        return Event(
            event_id=delivery.event_id(0),
            delivery_id=delivery.delivery_id,
            route=delivery.route,
            received_at=delivery.received_at,
            **fields,
        )
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, err["loc"])) for err in exc.errors())
        raise NormalizeError(
            f"{what}delivery {delivery.delivery_id}: could not build the event (invalid: {where})"
        ) from None
