"""A vendor's timestamp as an aware datetime: the one way every source and poller reads them.

Vendors write ISO 8601 with a ``Z`` (SmartDocumentor's ``createdOn``, Documill's
``completedDateTime``, a SAS link's ``se``), and some leave the offset out: those mean UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["vendor_time"]


def vendor_time(value: object) -> datetime | None:
    """``value`` as an aware datetime (UTC when it names no offset); None unless it is a
    string holding a valid ISO 8601 time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
