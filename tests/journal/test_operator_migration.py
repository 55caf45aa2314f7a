"""Version 7 of the schema keeps an event's searchable fields in columns: a journal of
version 6 gets them filled from its stored events when it is opened.  Version 8 marks the
deliveries routed with every event dropped, and adds the bulk-replay jobs."""

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


async def test_a_version_7_journal_gets_its_dropped_deliveries_marked(durable: Backend) -> None:
    journal = durable.open()
    dropped, sent = raw(), raw()
    for d in (dropped, sent):
        await journal.append(d, d.delivery_id)
    claims = {c.delivery.delivery_id: c for c in await journal.claim("w", 5, 60)}
    await journal.route(claims[dropped.delivery_id], "w", [], set(), 60)
    await journal.route(claims[sent.delivery_id], "w", [(event(sent), "a")], set(), 60)
    # What version 7 had: no dropped column, no jobs.
    await execute(journal, "DROP INDEX deliveries_eventless")
    await execute(journal, "ALTER TABLE deliveries DROP COLUMN dropped")
    await execute(journal, "DROP TABLE replay_jobs")
    await execute(journal, "UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    await journal.close()

    again = durable.open()
    assert sorted(await rows(again, "SELECT id, dropped FROM deliveries")) == sorted(
        [(dropped.delivery_id, 1), (sent.delivery_id, 0)]
    )
    page = await again.events(EventFilter(dropped=True))
    assert [(r.delivery_id, r.event_id, r.state) for r in page.items] == [
        (dropped.delivery_id, None, "dropped")
    ]
    assert await rows(again, "SELECT count(*) FROM replay_jobs") == [(0,)]
