"""Version 7 of the schema keeps an event's searchable fields in columns: a journal of
version 6 gets them filled from its stored events when it is opened."""

from __future__ import annotations

import pytest

from receiver.journal.schema import SCHEMA_VERSION
from receiver.journal.views import EventFilter
from tests.journal.conftest import Backend
from tests.journal.helpers import event, execute, raw, rows

pytestmark = pytest.mark.anyio


async def test_a_version_6_journal_gets_its_events_fields_filled(durable: Backend) -> None:
    journal = durable.open()
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    await journal.route(claim, "w", [(event(d), "a")], set(), 60)
    # What version 6 had: the event's JSON, no columns (NULL once they are added).
    await execute(journal, "UPDATE events SET vendor = NULL, kind = NULL, task_id = NULL")
    await execute(journal, "UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    await journal.close()

    again = durable.open()
    assert await rows(again, "SELECT vendor, kind, task_id, route FROM events") == [
        ("test", "document", "task-0", "r")
    ]
    assert await rows(again, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    page = await again.events(EventFilter(task_id="task-0"))
    assert [r.event_id for r in page.items] == [d.event_id(0)]
