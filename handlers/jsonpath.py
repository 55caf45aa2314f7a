"""Dotted paths into a JSON document: ``data.object.id``, ``chunks.0.type``.

Routing rules, the generic source's settings (kind, subject, dedupe) and third-party sources
name values this way.  A segment of digits indexes a list; anything else that does not lead
to a value gives ``MISSING``, never an exception, because the document is the sender's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MISSING", "check_path", "lookup", "scalar_text"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What ``lookup`` returns when the path leads nowhere (``None`` is JSON's ``null``)."""

_SEGMENT = re.compile(r"[^.\s]+")


def check_path(path: str) -> str:
    """Return ``path`` if it is a usable dotted path; raise ``ValueError`` (for pydantic)."""
    if not path or not all(_SEGMENT.fullmatch(part) for part in path.split(".")):
        raise ValueError("must be a dotted path such as data.id (no spaces, no empty segments)")
    return path


def lookup(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``, or ``MISSING``."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def scalar_text(value: Any) -> str | None:
    """A JSON string or whole number as text (an id, a kind); None for anything else.

    bool is an int subclass and a float cannot be turned back into the sender's exact id, so
    neither is taken; an empty or blank string is no id either.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None
