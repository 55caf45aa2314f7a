"""How deeply a JSON document nests, judged from its raw bytes before anything parses it.

orjson writes at most 254 levels and pydantic fewer, so a payload nested deeper can be
received but never written by a sink: it is refused at the door instead, well below either
limit, since an event wraps the vendor's payload in a few levels of its own.

The check is C-speed work on the bytes: strings are cut out (a bracket inside a string is
text), everything but brackets is dropped, and each pass of ``replace`` removes the innermost
pairs.  A document no deeper than ``limit`` has no pair left after ``limit`` passes.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "json_too_deep"]

DEFAULT_MAX_JSON_DEPTH = 64
"""Levels of arrays and objects a delivery may nest (``max_json_depth`` of a route)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_TO_PARENS = bytes.maketrans(b"[]{}", b"()()")


def json_too_deep(body: bytes, limit: int) -> bool:
    """True when ``body`` nests arrays and objects more than ``limit`` levels deep.

    An unbalanced body (not JSON at all) is left for the parser to refuse.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the common case, decided at once
    brackets = _STRING.sub(b"", body).translate(_TO_PARENS, _NOT_BRACKETS)
    if b"(" * (limit + 1) in brackets:
        return True  # the usual hostile shape, [[[[..., without a pass over it per level
    for _ in range(limit):
        shorter = brackets.replace(b"()", b"")
        if shorter == brackets:
            return False  # every pair is gone: what is left, if anything, does not balance
        brackets = shorter
    # After ``limit`` passes, every subtree up to ``limit`` levels high is gone: a pair left
    # sits on a chain of more than ``limit`` levels.
    return b"()" in brackets
