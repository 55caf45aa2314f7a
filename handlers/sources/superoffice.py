"""SuperOffice CRM webhooks: ``superoffice.webhook``.

SuperOffice POSTs one JSON body per change (``contact.changed``, ``sale.deleted``, ...), signed
with ``X-SuperOffice-Signature``: base64(HMAC-SHA256(secret, raw body)).  That is this source's
default ``auth``, so a route needs only ``auth = { secret = "..." }``.

What SuperOffice expects back shapes what this source does:

* Only **200** counts as success, and saving a webhook in SuperOffice first sends a ``test``
  event (``"Event": "test"``, header ``X-Hook-Test: true``) that must get a 200.  The test
  event is journaled like any other and, unless the route's ``export_test_events`` says so,
  makes no event: nothing is exported.
* A delivery that fails is tried again (now, +1 s, +4 s, and in later cycles) with another
  ``X-SuperOffice-Retry`` count, and possibly with another timestamp, but the same
  ``EventId``.  The dedupe key is the route and the ``EventId`` (from the body, or the
  ``X-SuperOffice-EventId`` header), so every retry is the one event it was.
* **410** would disable the webhook for good; hookdock never answers it.
* ``webhook.errors`` is SuperOffice telling us that a webhook is failing to deliver.  It is an
  event like the others (exported by the route's rules) and also an ``alert``: hookdock logs
  it as an error and counts it in ``hookdock status``.

Event: ``kind`` is the body's ``Event``; ``attributes`` are ``entity`` (``Entity``, else the
part of the event name before the dot), ``primary_key`` (``PrimaryKey``), ``tenant``
(``ContextIdentifier``), ``associate_id`` (``ChangedByAssociateId``), ``webhook_name``
(``WebhookName``) and ``superoffice_event_id`` (``EventId``); ``payload`` is the body as sent
(``Changes``, ``FieldValues``, and ``Values`` on deletes, unknown fields included).
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha256
from typing import Any, ClassVar

from pydantic import BaseModel

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Attribute, Event, RawDelivery
from handlers.jsonpath import scalar_text
from handlers.source import SourceBase, SourceSettings, event_of
from handlers.sources.jsonbody import parse_object

__all__ = ["ERRORS_EVENT", "TEST_EVENT", "SuperOfficeSettings", "SuperOfficeWebhookSource"]

TEST_EVENT = "test"
ERRORS_EVENT = "webhook.errors"

_EVENT_HEADER = "x-superoffice-event"
_EVENT_ID_HEADER = "x-superoffice-eventid"
_RETRY_HEADER = "x-superoffice-retry"
_TEST_HEADER = "x-hook-test"


class SuperOfficeSettings(SourceSettings):
    """A ``superoffice.webhook`` route's ``settings`` table."""

    export_test_events: bool = False
    """Make an event of SuperOffice's ``test`` event too (kind ``test``), for the sinks."""


class _Parsed:
    """The fields of a body that dedupe and routing rely on, checked."""

    __slots__ = ("body", "event_id", "is_test", "name")

    def __init__(self, body: dict[str, Any], name: str, event_id: str | None, is_test: bool):
        self.body = body
        self.name = name
        self.event_id = event_id
        self.is_test = is_test


class SuperOfficeWebhookSource(SourceBase):
    """SuperOffice's webhook deliveries, one event each (none for an unexported ``test``)."""

    vendor: ClassVar[str] = "superoffice"
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    settings_model: ClassVar[type[BaseModel]] = SuperOfficeSettings
    default_auth: ClassVar[Mapping[str, Any] | None] = {
        "type": "hmac",
        "header": "X-SuperOffice-Signature",
        "encoding": "base64",
    }
    kept_headers = frozenset({_EVENT_HEADER, _EVENT_ID_HEADER, _RETRY_HEADER, _TEST_HEADER})

    settings: SuperOfficeSettings

    def __init__(self, settings: SuperOfficeSettings | None = None) -> None:
        super().__init__(settings)

    def admit(self, delivery: RawDelivery) -> str:
        parsed = _parse(delivery)
        if parsed.event_id is not None:
            # GUIDs: SuperOffice's own casing may differ between the body and the header.
            return f"{delivery.route}:superoffice:{parsed.event_id.lower()}"
        # Only a test event gets this far without an id: it must still get its 200.
        return f"{delivery.route}:superoffice:test:{sha256(delivery.body).hexdigest()}"

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        try:
            parsed = _parse(delivery)
        except PayloadRejected as exc:
            raise NormalizeError(
                f"SuperOffice delivery {delivery.delivery_id}: {exc.message}"
            ) from exc
        if parsed.is_test and not self.settings.export_test_events:
            return []
        body = parsed.body
        kind = TEST_EVENT if parsed.is_test else parsed.name
        attributes: dict[str, Attribute] = {
            "entity": _text(body.get("Entity")) or _entity_of(kind),
            "primary_key": _int(body.get("PrimaryKey")),
            "tenant": _text(body.get("ContextIdentifier")),
            "associate_id": _int(body.get("ChangedByAssociateId")),
            "webhook_name": _text(body.get("WebhookName")),
            "superoffice_event_id": parsed.event_id,
        }
        alert = None
        if kind == ERRORS_EVENT:
            name = attributes["webhook_name"] or "(unnamed)"
            tenant = attributes["tenant"] or "an unknown tenant"
            alert = (
                f"SuperOffice reports that webhook {name!r} of {tenant} is failing to deliver;"
                " after 9 failures in a row SuperOffice stops it until someone reactivates it"
            )
        event = event_of(
            delivery,
            "SuperOffice ",
            vendor=self.vendor,
            kind=kind,
            attributes=attributes,
            alert=alert,
            payload=body,
        )
        return [event]


def _parse(delivery: RawDelivery) -> _Parsed:
    body = parse_object(delivery.body)
    headers = delivery.headers
    is_test = headers.get(_TEST_HEADER, "").strip().lower() == "true"
    raw_name = _field_or_header(body, "Event", headers, _EVENT_HEADER)
    name = _text(raw_name)
    if name is None:
        if not is_test:
            raise PayloadRejected(
                "Event missing" if raw_name is None else "Event is not a string", status=422
            )
        name = TEST_EVENT
    is_test = is_test or name.lower() == TEST_EVENT
    raw_id = _field_or_header(body, "EventId", headers, _EVENT_ID_HEADER)
    event_id = _text(raw_id)
    if event_id is None and not is_test:
        raise PayloadRejected(
            "EventId missing" if raw_id is None else "EventId is not a string", status=422
        )
    return _Parsed(body, name, event_id, is_test)


def _field_or_header(
    body: Mapping[str, Any], field: str, headers: Mapping[str, str], header: str
) -> object:
    """The body's field; else the header SuperOffice sends with the same value; else None."""
    value = body.get(field)
    if value is None:
        value = headers.get(header, "").strip() or None
    return value


def _text(value: object) -> str | None:
    text = scalar_text(value)
    return None if text is None else text.strip()


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _entity_of(kind: str) -> str | None:
    entity, dot, _ = kind.partition(".")
    return entity if dot and entity else None
