"""How long a rendered name may be: a file or folder name, or a whole object key.

A path or key template renders vendor values (``{task_id}``, ``{display_name}``), and a
vendor may send a 300-character id.  A file system refuses a name over ``NAME_MAX`` bytes
(``ENAMETOOLONG``), S3 a key over 1,024: refused at every attempt, so retrying is pointless.
``NameLimits.check`` refuses such a name before anything is written, with a
``PermanentSinkError`` that names the longest field of the part that is too long.

Vendor values never hold a ``/`` (``templates.safe_value`` refuses it), so the rendered name's
``/``-separated parts are the template's, one for one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from handlers.errors import PermanentSinkError
from handlers.event import Event

__all__ = ["NAME_MAX", "NameLimits"]

NAME_MAX = 255
"""Bytes a file or folder name may have on Linux and most file systems."""


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


@dataclass(frozen=True, slots=True)
class NameLimits:
    """Caps in UTF-8 bytes: each ``/``-separated part, the last part, and the whole."""

    segment_bytes: int | None = None
    last_segment_bytes: int | None = None
    """Defaults to ``segment_bytes``."""
    total_bytes: int | None = None

    def check(self, rendered: str, template: str, event: Event, *, sink: str, what: str) -> str:
        """``rendered`` (``template`` rendered for ``event``) if within the caps."""
        if self.segment_bytes is not None or self.last_segment_bytes is not None:
            parts = rendered.split("/")
            templates = template.split("/")
            last = len(parts) - 1
            for index, (part, part_template) in enumerate(zip(parts, templates, strict=False)):
                limit = self.segment_bytes
                if index == last and self.last_segment_bytes is not None:
                    limit = self.last_segment_bytes
                size = len(part.encode())
                if limit is not None and size > limit:
                    where = f"name in a {what}"
                    _refuse(event, _fields(part_template), size, limit, where, sink)
        if self.total_bytes is not None:
            size = len(rendered.encode())
            if size > self.total_bytes:
                _refuse(event, _fields(template), size, self.total_bytes, what, sink)
        return rendered


def _refuse(event: Event, names: list[str], size: int, limit: int, what: str, sink: str) -> None:
    values = event.template_fields()
    lengths = {name: len(values.get(name, "none").encode()) for name in sorted(set(names))}
    longest = max(lengths, key=lambda name: lengths[name], default="")
    raise PermanentSinkError(
        f"{sink}: event field {longest} is too long ({lengths.get(longest, 0)} bytes) for a"
        f" {what}: {size} bytes rendered, at most {limit}"
    )
