"""Which failures of a send can never succeed on a later attempt, whoever raised them.

A sink says so itself with ``PermanentSinkError``.  But a serialization error, an over-long
file name or a link where a folder should be come out of libraries too, raised as they are
or wrapped in a ``RetryableSinkError`` by a plugin that retries everything: retried, they
would fail the same way for a day.  ``never_succeeds`` looks through the whole chain of causes
for one of them, so the dispatcher dead-letters the send at once, with its reason.
"""

from __future__ import annotations

import errno

import orjson
from pydantic_core import PydanticSerializationError

__all__ = ["never_succeeds"]

# Errors of the data itself: the same event fails the same way every time.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    PydanticSerializationError,
    orjson.JSONEncodeError,
    RecursionError,
    UnicodeEncodeError,
)
# OS errors of a name, not of a moment: too long for the file system, or a link in the way.
_NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})
_MAX_CHAIN = 16


def never_succeeds(exc: BaseException) -> bool:
    """True if ``exc``, or anything it was raised from, cannot succeed on a retry."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < _MAX_CHAIN:
        if isinstance(current, _DATA_ERRORS):
            return True
        if isinstance(current, OSError) and current.errno in _NAME_ERRNOS:
            return True
        # An implicit context counts too (``raise RetryableSinkError(...)`` inside an except),
        # unless the raiser suppressed it.
        implicit = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or implicit
        seen += 1
    return False
