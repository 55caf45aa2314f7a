"""Path and key templates over an event's fields, shared by the sinks that name things.

A template such as ``{vendor}/{task_id}/{kind}-{event_id}.json`` is checked once, when the
config loads (known fields only, ``{event_id}`` required so every event gets its own name,
relative, no ``..``), and rendered per event.  The values come from the vendor, so each one
used is checked before it goes into a name: a value with a separator, ``..`` or a control
character would let a sender choose where the file or object lands, and is refused with a
``PermanentSinkError`` that names the field.  So is a value that makes a rendered name longer
than its sink can store (a 300-character ``task_id`` in a file name, over ``NAME_MAX``): no
retry would shorten it.
"""

from __future__ import annotations

import string
from pathlib import PurePosixPath

from handlers.errors import PermanentSinkError
from handlers.event import TEMPLATE_FIELDS, Event

__all__ = ["NAME_MAX", "EventTemplate", "check_template", "safe_value"]

NAME_MAX = 255
"""Bytes a file or folder name may have on Linux and most file systems (``ENAMETOOLONG``)."""


def _names(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None


def check_template(template: str) -> str:
    """Return ``template`` if usable; raise ``ValueError`` (for a pydantic validator) if not."""
    names = _names(template)
    unknown = sorted(set(names) - TEMPLATE_FIELDS)
    if unknown:
        known = ", ".join(sorted(TEMPLATE_FIELDS))
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {known}")
    if "event_id" not in names:
        raise ValueError("must contain {event_id}, so that every event gets its own name")
    if template.startswith("/") or ".." in PurePosixPath(template).parts:
        raise ValueError("must be a relative path (no leading /, no ..)")
    return template


def safe_value(name: str, value: str, *, sink: str, what: str = "path") -> str:
    """Refuse any value that could move the name out of its folder (``what``: path, key)."""
    if (
        value in ("", ".", "..")
        or "/" in value
        or "\\" in value
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise PermanentSinkError(
            f"{sink}: event field {name} is not usable in a {what}: {value[:80]!r}"
        )
    return value


class EventTemplate:
    """A checked template, rendered per event with every value it uses checked.

    ``max_segment_bytes`` caps each ``/``-separated part of the result (a folder or file name)
    and ``max_last_segment_bytes`` the last one; ``max_bytes`` caps the whole (an S3 key),
    all in UTF-8 bytes.  Over a cap, the error names the longest field of that part.
    """

    def __init__(
        self,
        template: str,
        *,
        sink: str,
        what: str = "path",
        max_segment_bytes: int | None = None,
        max_last_segment_bytes: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.template = check_template(template)
        self.names = frozenset(_names(template))
        self._sink = sink
        self._what = what
        self._segments = [(part, frozenset(_names(part))) for part in template.split("/")]
        self._max_segment = max_segment_bytes
        self._max_last = max_last_segment_bytes or max_segment_bytes
        self._max_bytes = max_bytes

    def render(self, event: Event) -> str:
        fields = {
            k: safe_value(k, v, sink=self._sink, what=self._what)
            for k, v in event.template_fields().items()
            if k in self.names
        }
        rendered = self.template.format_map(fields)
        if self._max_segment is not None:
            last = len(self._segments) - 1
            for index, (part, names) in enumerate(self._segments):
                limit = self._max_last if index == last else self._max_segment
                size = len(part.format_map(fields).encode())
                if limit is not None and size > limit:
                    self._too_long(fields, names, size, limit, f"name in a {self._what}")
        if self._max_bytes is not None:
            size = len(rendered.encode())
            if size > self._max_bytes:
                self._too_long(fields, self.names, size, self._max_bytes, self._what)
        return rendered

    def _too_long(
        self, fields: dict[str, str], names: frozenset[str], size: int, limit: int, what: str
    ) -> None:
        longest = max(sorted(names), key=lambda name: len(fields[name].encode()), default="")
        length = len(fields[longest].encode()) if longest else 0
        raise PermanentSinkError(
            f"{self._sink}: event field {longest} is too long ({length} bytes) for a {what}:"
            f" {size} bytes rendered, at most {limit}"
        )
