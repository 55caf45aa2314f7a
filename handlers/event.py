"""The data that flows through hookdock: a raw delivery in, normalized events out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

from handlers.errors import EventNotWritable
from handlers.redact import redact_url

if TYPE_CHECKING:
    from handlers.files import FileInfo

__all__ = ["ATTRIBUTE_PREFIX", "TEMPLATE_FIELDS", "Attribute", "Event", "FileRef", "RawDelivery"]

_SCALAR_FIELDS = (
    "event_id",
    "delivery_id",
    "vendor",
    "kind",
    "route",
    "task_id",
    "task_number",
    "workspace_id",
    "batch_id",
    "external_id",
    "display_name",
)
TEMPLATE_FIELDS = frozenset({*_SCALAR_FIELDS, "received_date"})
"""The names ``Event.template_fields`` always offers to path and key templates."""
ATTRIBUTE_PREFIX = "attributes."
"""Templates name an event's attributes as ``{attributes.entity}``."""

Attribute = str | int | None
"""An attribute's value: ids are text or whole numbers, as vendors send them."""


_ORJSON = orjson.OPT_UTC_Z
_ORJSON_INDENT = orjson.OPT_UTC_Z | orjson.OPT_INDENT_2


def _fields_of(value: object) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(type(value).__name__)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class RawDelivery(_Frozen):
    """One HTTP delivery as it was accepted and journaled: the unit of durability.

    ``headers`` holds only the headers a source may need (lower-case names); credentials
    are never stored here.
    """

    delivery_id: str
    route: str
    source: str
    received_at: datetime
    content_type: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: bytes = Field(repr=False)

    def event_id(self, index: int = 0) -> str:
        """A stable id for the ``index``-th event of this delivery, the same on every retry."""
        return f"{self.delivery_id}-{index}"


class FileRef(_Frozen):
    """A file the vendor makes available behind a (often expiring, credentialed) URL."""

    role: str
    """What the file is to the vendor, such as ``exported`` or ``original``."""
    url: str = Field(repr=False)
    """The full URL.  Its query string can be a credential: log ``redacted_url`` instead."""
    expires_at: datetime | None = None
    size: int | None = None
    """Set once hookdock has stored the file: its size in bytes, and the fields below."""
    sha256: str | None = None
    content_type: str | None = None
    filename: str | None = None
    """The vendor's name for the file (``Content-Disposition`` or the URL), sanitized."""

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr_args__(self) -> Any:
        yield from super().__repr_args__()
        yield "url", self.redacted_url


class Event(_Frozen):
    """One normalized event, whatever the vendor; sinks deliver it, idempotent on ``event_id``."""

    event_id: str
    delivery_id: str
    vendor: str
    kind: str
    route: str
    received_at: datetime
    task_id: str | None = None
    task_number: int | None = None
    workspace_id: str | None = None
    batch_id: str | None = None
    external_id: str | None = None
    display_name: str | None = None
    files: tuple[FileRef, ...] = ()
    attributes: dict[str, Attribute] = Field(default_factory=dict)
    """What the source names this event by, beyond its kind: ``task_id``, ``workspace_id``...
    for SmartDocumentor, ``entity``, ``primary_key``, ``tenant``... for SuperOffice.  Routing
    rules match them (``attributes = { entity = "contact" }``) and templates use them
    (``{attributes.tenant}``); the source's documentation lists the names it sets."""
    alert: str | None = None
    """Set when the vendor reports a problem an operator must act on (SuperOffice's
    ``webhook.errors``): one line saying what.  hookdock logs it as an error and counts it in
    ``hookdock status``; the event is routed and delivered like any other."""
    payload: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The vendor's JSON body, unchanged, unknown fields included."""

    def to_json(self, *, indent: bool = False) -> bytes:
        """The event as JSON: the very bytes of ``model_dump_json(indent=2 if indent else None)``.

        Every sink serializes every event, and pydantic walks the untyped payload value by value;
        orjson writes the same document three to six times faster.  Anything orjson cannot write
        (a third-party source's Decimal, an int beyond 64 bits) falls back to pydantic.
        What neither can write raises ``EventNotWritable``: no retry will change that.
        """
        option = _ORJSON_INDENT if indent else _ORJSON
        try:
            return orjson.dumps(self.__dict__, default=_fields_of, option=option)
        except orjson.JSONEncodeError:
            pass
        try:
            return self.model_dump_json(indent=2 if indent else None).encode()
        except (PydanticSerializationError, RecursionError) as exc:
            raise EventNotWritable(
                f"event {self.event_id} cannot be written as JSON: {_first_line(exc)}"
            ) from exc

    def with_files(self, stored: Mapping[str, FileInfo]) -> Event:
        """This event with ``stored`` (role to info) recorded on its files.

        A stored file's URL has served its purpose, and its query string is a credential that
        must not outlive the fetch: it is redacted, in ``files`` and wherever the payload
        holds the same URL.  Files not stored keep their URL, for whoever fetches them.
        """
        if not stored:
            return self
        files = []
        secret_urls: dict[str, str] = {}
        for ref in self.files:
            info = stored.get(ref.role)
            if info is None:
                files.append(ref)
                continue
            secret_urls[ref.url] = ref.redacted_url
            files.append(ref.model_copy(update={"url": ref.redacted_url, **info.model_dump()}))
        payload = _replace_strings(self.payload, secret_urls)
        return self.model_copy(update={"files": tuple(files), "payload": payload})

    def template_fields(self) -> dict[str, str]:
        """Scalar fields and attributes (``attributes.NAME``) as strings for path and key
        templates; a missing one is ``none``, an attribute the event lacks too."""
        names = [*_SCALAR_FIELDS, "received_date"]
        names += [ATTRIBUTE_PREFIX + name for name in self.attributes]
        return {name: self.template_field(name) for name in names}

    def template_field(self, name: str) -> str:
        """One of ``template_fields``, computed alone (a template uses a few of them)."""
        if name == "received_date":
            return self.received_at.strftime("%Y-%m-%d")
        if name.startswith(ATTRIBUTE_PREFIX):
            value = self.attributes.get(name[len(ATTRIBUTE_PREFIX) :])
        elif name in TEMPLATE_FIELDS:
            value = getattr(self, name)
        else:
            value = None
        return "none" if value is None else str(value)


def _first_line(exc: BaseException) -> str:
    # pydantic's message is "Error serializing to JSON: ValueError: Maximum serialization depth
    # exceeded": the part after the last colon is what a person needs.
    return str(exc).splitlines()[0].rsplit(": ", 1)[-1][:200] if str(exc) else type(exc).__name__


def _replace_strings(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_strings(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, replacements) for v in value]
    return value
