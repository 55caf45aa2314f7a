"""Path and key templates over an event's fields, shared by the sinks that name things.

A template such as ``{vendor}/{task_id}/{kind}-{event_id}.json`` is checked once, when the
config loads (known fields only, ``{event_id}`` required so every event gets its own name,
relative, no ``..``), and rendered per event.  ``{attributes.NAME}`` names an attribute the
source sets (``{attributes.tenant}``); which ones exist depends on the route's source, which a
sink does not know, so an attribute an event lacks renders as ``none``, like a missing field.

The values come from the vendor, so each one used is checked before it goes into a name: a
value with a separator, ``..`` or a control character would let a sender choose where the file
or object lands, and is refused with a ``PermanentSinkError`` that names the field.
"""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath

from handlers.errors import PermanentSinkError
from handlers.event import ATTRIBUTE_PREFIX, TEMPLATE_FIELDS, Event

__all__ = ["EventTemplate", "check_template", "safe_value"]


_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
"""A separator or a control character: never in a name."""
_ATTRIBUTE = re.compile(re.escape(ATTRIBUTE_PREFIX) + r"[A-Za-z_][A-Za-z0-9_]*")


def _names(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None


def check_template(template: str) -> str:
    """Return ``template`` if usable; raise ``ValueError`` (for a pydantic validator) if not."""
    names = _names(template)
    unknown = sorted(n for n in set(names) - TEMPLATE_FIELDS if not _ATTRIBUTE.fullmatch(n))
    if unknown:
        known = ", ".join([*sorted(TEMPLATE_FIELDS), "attributes.NAME"])
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {known}")
    if "event_id" not in names:
        raise ValueError("must contain {event_id}, so that every event gets its own name")
    if template.startswith("/") or ".." in PurePosixPath(template).parts:
        raise ValueError("must be a relative path (no leading /, no ..)")
    return template


def safe_value(name: str, value: str, *, sink: str, what: str = "path") -> str:
    """Refuse any value that could move the name out of its folder (``what``: path, key)."""
    if value in ("", ".", "..") or _UNSAFE.search(value) is not None:
        raise PermanentSinkError(
            f"{sink}: event field {name} is not usable in a {what}: {value[:80]!r}"
        )
    return value


class EventTemplate:
    """A checked template, rendered per event with every value it uses checked."""

    def __init__(self, template: str, *, sink: str, what: str = "path") -> None:
        self.template = check_template(template)
        self.names = frozenset(_names(template))
        self._sink = sink
        self._what = what
        # Parsed once: a sink renders its template for every event.
        self._pieces = list(string.Formatter().parse(self.template))

    def render(self, event: Event) -> str:
        # Only the fields the template names: a sink renders its template for every event.
        fields = {
            name: safe_value(name, event.template_field(name), sink=self._sink, what=self._what)
            for name in self.names
        }
        # format_map would read "attributes.tenant" as an attribute lookup on "attributes";
        # the template was checked at load, so its pieces are plain names.
        formatter = string.Formatter()
        out = []
        for literal, name, spec, conversion in self._pieces:
            out.append(literal)
            if name:
                value = formatter.convert_field(fields[name], conversion)
                out.append(format(value, spec or ""))
        return "".join(out)
