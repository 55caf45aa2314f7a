"""A send claimed after routing takes its event from the routing, not from parsing its row,
but only while the row still holds the very bytes that were routed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from receiver.ids import new_id
from receiver.journal import Outcome, SqliteJournal
from receiver.journal.recent_events import RecentEvents
from tests.journal.helpers import accepted, event, execute, raw

pytestmark = pytest.mark.anyio


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "j.db").open()
    yield j
    await j.close()


async def test_a_send_left_waiting_is_claimed_with_the_routed_event(
    journal: SqliteJournal,
) -> None:
    d = raw(new_id().encode())
    claim = await accepted(journal, d)
    e = event(d, note="kept")
    assert await journal.route(claim, "w", [(e, "later")], set(), 60) == []
    [send] = await journal.claim_sends("w", {"later": 1}, 60)
    assert send.event is e

    # Forgotten once taken: the retry reads its row again, and gets the same event.
    await journal.finish_send(send, "w", Outcome.retry("down", 0.0))
    [again] = await journal.claim_sends("w", {"later": 1}, 60)
    assert again.event is not e
    assert again.event == e


async def test_a_row_that_changed_since_routing_is_read_from_the_journal(
    journal: SqliteJournal,
) -> None:
    d = raw(new_id().encode())
    claim = await accepted(journal, d)
    e = event(d, note="routed")
    await journal.route(claim, "w", [(e, "later")], set(), 60)
    changed = e.model_copy(update={"payload": {"note": "rewritten"}})
    await execute(journal, "UPDATE events SET body = ? WHERE id = ?", changed.to_json(), e.event_id)
    [send] = await journal.claim_sends("w", {"later": 1}, 60)
    assert send.event == changed


def test_the_oldest_events_make_room() -> None:
    recent = RecentEvents(capacity=2)
    d = raw(b"x")
    events = [event(d, i) for i in range(3)]
    for e in events:
        recent.remember(e, orjson.dumps(e.event_id))
    assert len(recent) == 2
    assert recent.take(events[0].event_id, orjson.dumps(events[0].event_id)) is None
    assert recent.take(events[2].event_id, b"other bytes") is None
    assert recent.take(events[1].event_id, orjson.dumps(events[1].event_id)) is events[1]


def test_large_events_make_room_by_their_bytes() -> None:
    recent = RecentEvents(capacity=100, max_bytes=250)
    d = raw(b"x")
    events = [event(d, i) for i in range(4)]
    bodies = [bytes([65 + i]) * 100 for i in range(4)]
    for e, body in zip(events[:3], bodies[:3], strict=True):
        recent.remember(e, body)
    # Three of 100 bytes pass 250: the oldest went.
    assert len(recent) == 2
    assert recent.take(events[0].event_id, bodies[0]) is None
    assert recent.take(events[1].event_id, bodies[1]) is events[1]
    # One larger than the whole budget is not kept, and pushes nothing out.
    recent.remember(events[3], b"y" * 251)
    assert recent.take(events[3].event_id, b"y" * 251) is None
    assert recent.take(events[2].event_id, bodies[2]) is events[2]
    # What was taken gave its bytes back: two more fit again.
    recent.remember(events[0], bodies[0])
    recent.remember(events[1], bodies[1])
    assert len(recent) == 2
