"""Any sender of JSON: ``generic.json``.

For senders hookdock has no source of their own for (a Standard Webhooks sender, GitHub, an
in-house system): any JSON object is one event.  The route's ``settings`` say where the event's
kind and subject are in the body and what makes two deliveries the same one::

    [[routes]]
    name = "github"
    source = "generic.json"
    auth = { type = "hmac", header = "X-Hub-Signature-256", prefix = "sha256=",
             encoding = "hex", secret = "${GITHUB_SECRET}" }
    settings = { kind_path = "action", subject_path = "repository.full_name",
                 dedupe_header = "X-GitHub-Delivery" }
    sinks = ["archive"]

Dedupe, the first that applies: the header ``dedupe_header`` names, or the value at
``dedupe_path`` (either one, when set, is required in every delivery), else a Standard Webhooks
``webhook-id`` header, else the SHA-256 of the body (an identical resend is the same delivery).

Event attributes: ``subject_id`` (at ``subject_path``), ``message_id`` (what dedupe used, unless
it was the body's hash), and one per entry of ``attributes`` (name -> dotted path).
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha256
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, Field, model_validator

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Attribute, Event, RawDelivery
from handlers.jsonpath import MISSING, check_path, lookup, scalar_text
from handlers.source import SourceBase, SourceSettings, event_of
from handlers.sources.jsonbody import parse_object

__all__ = ["GenericJsonSource", "GenericSettings"]

JsonPath = Annotated[str, AfterValidator(check_path)]
_HEADER = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_ATTRIBUTE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_STANDARD_ID = "webhook-id"


class GenericSettings(SourceSettings):
    """A ``generic.json`` route's ``settings`` table; every key is optional."""

    kind: Annotated[str, Field(min_length=1, max_length=200)] = "event"
    """The kind of every event, when ``kind_path`` is not set."""
    kind_path: JsonPath | None = None
    """Where the kind is (``type``, ``event.name``); required in every body when set."""
    subject_path: JsonPath | None = None
    """Where the id of what the event is about is (``data.id``); the ``subject_id`` attribute."""
    dedupe_header: Annotated[str, Field(pattern=_HEADER)] | None = None
    """A header that names the delivery (``X-GitHub-Delivery``); required when set."""
    dedupe_path: JsonPath | None = None
    """A value in the body that names the delivery (``id``); required when set."""
    attributes: dict[Annotated[str, Field(pattern=_ATTRIBUTE)], JsonPath] = Field(
        default_factory=dict
    )
    """More attributes, by name: ``{ customer = "data.customer.id" }``."""

    @model_validator(mode="after")
    def _one_dedupe(self) -> GenericSettings:
        if self.dedupe_header is not None and self.dedupe_path is not None:
            raise ValueError("give dedupe_header or dedupe_path, not both")
        reserved = {"subject_id", "message_id"} & set(self.attributes)
        if reserved:
            raise ValueError(f"attributes: {', '.join(sorted(reserved))} is set by the source")
        return self


class GenericJsonSource(SourceBase):
    """One event per JSON object, named and deduplicated as the route's settings say."""

    vendor: ClassVar[str] = "generic"
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    settings_model: ClassVar[type[BaseModel]] = GenericSettings

    settings: GenericSettings

    def __init__(self, settings: GenericSettings | None = None) -> None:
        super().__init__(settings)
        headers = {_STANDARD_ID, "webhook-timestamp"}
        if self.settings.dedupe_header is not None:
            headers.add(self.settings.dedupe_header.lower())
        self.kept_headers = frozenset(headers)

    def admit(self, delivery: RawDelivery) -> str:
        body = parse_object(delivery.body)
        self._kind(body)
        message_id = self._message_id(body, delivery.headers)
        if message_id is None:
            return f"{delivery.route}:generic:sha256:{sha256(delivery.body).hexdigest()}"
        return f"{delivery.route}:generic:id:{message_id}"

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        try:
            body = parse_object(delivery.body)
            kind = self._kind(body)
            message_id = self._message_id(body, delivery.headers)
        except PayloadRejected as exc:
            raise NormalizeError(f"delivery {delivery.delivery_id}: {exc.message}") from exc
        settings = self.settings
        attributes: dict[str, Attribute] = {
            name: _attribute(lookup(body, path)) for name, path in settings.attributes.items()
        }
        subject = None
        if settings.subject_path is not None:
            subject = scalar_text(lookup(body, settings.subject_path))
        attributes["subject_id"] = subject
        attributes["message_id"] = message_id
        return [
            event_of(
                delivery, "", vendor=self.vendor, kind=kind, attributes=attributes, payload=body
            )
        ]

    def _kind(self, body: Mapping[str, Any]) -> str:
        path = self.settings.kind_path
        if path is None:
            return self.settings.kind
        value = lookup(body, path)
        if value is MISSING or value is None:
            raise PayloadRejected(f"{path} missing", status=422)
        kind = scalar_text(value)
        if kind is None or len(kind) > 200:
            raise PayloadRejected(f"{path} is not a short string or number", status=422)
        return kind

    def _message_id(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        settings = self.settings
        if settings.dedupe_header is not None:
            value = headers.get(settings.dedupe_header.lower(), "").strip()
            if not value:
                raise PayloadRejected(f"header {settings.dedupe_header} missing", status=422)
            return value
        if settings.dedupe_path is not None:
            found = lookup(body, settings.dedupe_path)
            text = scalar_text(found)
            if text is None:
                what = "missing" if found is MISSING or found is None else "is not an id"
                raise PayloadRejected(f"{settings.dedupe_path} {what}", status=422)
            return text
        return headers.get(_STANDARD_ID, "").strip() or None


def _attribute(value: Any) -> Attribute:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return scalar_text(value)
