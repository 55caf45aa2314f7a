"""The one way into the journal: a raw delivery, admitted, appended (deduped), dispatcher woken.

Webhooks (``receiver.ingest``) and pollers (``receiver.pollers``) both come through here, so
durability, dedupe and what wakes the dispatcher are decided in one place: the source names the
dedupe key (and, if it can, the subject), the journal's append returns once the delivery is
durable, and a new delivery wakes the dispatcher.
"""

from __future__ import annotations

from functools import cache
from typing import Protocol, cast

from handlers.event import RawDelivery
from handlers.source import HasSubject, Source
from receiver.journal import AppendResult, SqlJournal

__all__ = ["Wakeable", "intake"]


@cache
def _names_subjects(kind: type) -> bool:
    # Per class, once: isinstance() against a runtime-checkable Protocol walks its members on
    # every call, and whether a source class has ``subject`` does not change.
    return issubclass(kind, HasSubject)


class Wakeable(Protocol):
    def wake(self) -> None: ...


async def intake(
    journal: SqlJournal,
    source: Source,
    delivery: RawDelivery,
    dispatcher: Wakeable | None,
    subject: str | None = None,
) -> AppendResult:
    """Admit ``delivery`` with its source and journal it durably; ``PayloadRejected`` if the
    source refuses it.  A duplicate (same dedupe key) stores nothing and wakes nobody.

    ``subject`` is what the delivery is about; by default the source's (``HasSubject``).
    """
    dedupe_key = source.admit(delivery)
    if subject is None and _names_subjects(type(source)):
        subject = cast("HasSubject", source).subject(dedupe_key)
    # No timer per request: the journal's watchdog fails waiting writes if a commit hangs.
    result = await journal.append(delivery, dedupe_key, subject)
    if not result.duplicate and dispatcher is not None:
        dispatcher.wake()
    return result
