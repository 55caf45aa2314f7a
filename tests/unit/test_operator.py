"""The operator service over an in-memory journal: the envelope, refusals that say why, what
is redacted in a shown event, and the actions it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from handlers.event import Event, FileRef, RawDelivery
from receiver.errors import BadRequest, NotFound
from receiver.ids import new_id
from receiver.journal import Outcome, SendClaim
from receiver.journal.memory import MemoryJournal
from receiver.operator import EventQuery, Operator, query_from

pytestmark = pytest.mark.anyio

SAS = "https://acct.blob.core.windows.net/c/f.pdf?sv=2022-11-02&se=2030-01-01&sp=r&sig=S3CRET"


@pytest.fixture
async def journal() -> AsyncIterator[MemoryJournal]:
    journal = MemoryJournal()
    yield journal
    await journal.close()


@pytest.fixture
def ops(journal: MemoryJournal) -> Operator:
    return Operator(journal, {"archive": "local", "erp": "http"})


async def _delivered(
    journal: MemoryJournal, *, task: str = "t1", sinks: tuple[str, ...] = ("archive",)
) -> tuple[RawDelivery, list[SendClaim]]:
    body = orjson.dumps({"taskId": task, "exportedFileUrl": SAS})
    d = RawDelivery(
        delivery_id=new_id(),
        route="sd",
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=body,
    )
    await journal.append(d, d.delivery_id)
    [claim] = await journal.claim("w", 1, 60)
    e = Event(
        event_id=d.event_id(0),
        delivery_id=d.delivery_id,
        vendor="smartdocumentor",
        kind="text_document",
        route="sd",
        received_at=d.received_at,
        task_id=task,
        display_name="Invoice.pdf",
        files=(FileRef(role="exported", url=SAS),),
        payload={"taskId": task, "exportedFileUrl": SAS},
    )
    sends = await journal.route(claim, "w", [(e, s) for s in sinks], set(sinks), 60)
    return d, sorted(sends, key=lambda s: s.sink)


async def test_the_envelope_counts_pages_and_gives_a_cursor(
    journal: MemoryJournal, ops: Operator
) -> None:
    for _ in range(5):
        await _delivered(journal)
    first = await ops.events(EventQuery(page_size=2))
    assert (first.total_count, first.total_pages, first.page_number) == (5, 3, 1)
    assert (first.has_previous_page, first.has_next_page, len(first.items)) == (False, True, 2)
    third = await ops.events(EventQuery(page_size=2, page_number=3))
    assert (len(third.items), third.has_next_page, third.has_previous_page) == (1, False, True)
    assert first.next_cursor is not None
    second = await ops.events(EventQuery(page_size=2, page_number=2, cursor=first.next_cursor))
    assert {i.event_id for i in second.items}.isdisjoint({i.event_id for i in first.items})
    uncounted = await ops.events(EventQuery(count=False))
    assert (uncounted.total_count, uncounted.total_pages) == (None, None)
    dumped = first.model_dump(mode="json")
    assert set(dumped) >= {"items", "pageNumber", "pageSize", "totalCount", "totalPages"}
    assert set(dumped["items"][0]) >= {"eventId", "deliveryId", "receivedAt", "displayName"}


def test_a_bad_query_names_every_bad_parameter() -> None:
    with pytest.raises(BadRequest) as caught:
        query_from({"taskid": "x", "state": ["lost"], "pageSize": "0"})
    message = caught.value.message
    assert "taskid: unknown parameter" in message
    assert "state.0:" in message and "pageSize:" in message
    assert query_from({"taskId": "x", "since": "2026-01-01T00:00:00"}).since == datetime(
        2026, 1, 1, tzinfo=UTC
    )


async def test_a_bad_cursor_is_a_bad_request(ops: Operator) -> None:
    with pytest.raises(BadRequest, match=r"^cursor: String should match pattern"):
        query_from({"cursor": "not-one"})
    page = await ops.events(query_from({"cursor": "0" * 26 + ".0"}))
    assert (page.items, page.next_cursor) == ([], None)


async def test_a_shown_event_has_its_credentials_redacted(
    journal: MemoryJournal, ops: Operator
) -> None:
    d, [send] = await _delivered(journal)
    await journal.finish_send(send, "w", Outcome.dead(f"403 for {SAS}", code="link_expired"))
    for ref in (d.delivery_id, d.event_id(0)):
        shown = await ops.event(ref)
        text = shown.model_dump_json()
        assert "S3CRET" not in text, text
        assert "sig=REDACTED" in text
    assert shown.found_by == "event"
    assert shown.payload["taskId"] == "t1"
    [event] = shown.events
    assert event.event is not None and event.event["display_name"] == "Invoice.pdf"
    [out] = event.sends
    assert (out.state, out.code, [a.outcome for a in out.attempts]) == (
        "dead",
        "link_expired",
        ["dead"],
    )
    with pytest.raises(NotFound, match="no delivery or event 'nope'"):
        await ops.event("nope")


async def test_replay_refuses_an_unknown_sink_and_an_unknown_id(ops: Operator) -> None:
    with pytest.raises(BadRequest, match=r"no sink named 'arhcive' .*archive, erp"):
        await ops.replay("x", sink="arhcive", actor="me")
    with pytest.raises(NotFound):
        await ops.replay("x", sink=None, actor="me")


async def test_replay_retry_now_and_sinks_are_recorded_with_the_event(
    journal: MemoryJournal, ops: Operator
) -> None:
    d, [archive, erp] = await _delivered(journal, sinks=("archive", "erp"))
    await journal.finish_send(archive, "w", Outcome.delivered())
    await journal.finish_send(erp, "w", Outcome.retry("timeout", 4e9))

    replayed = await ops.replay(d.event_id(0), sink="archive", actor="ann")
    assert (replayed.requeued, replayed.message) == (1, "1 sends go out again to sink archive")
    stopped = await ops.stop_sink("erp", reason="maintenance", actor="ann")
    assert (stopped.changed, (await ops.stop_sink("erp", reason="x", actor="ann")).changed) == (
        True,
        False,
    )
    now = await ops.retry_now(erp.send_id, actor="bob")
    assert now.due_now
    assert now.message.endswith("but sink erp is stopped: resume it first")
    assert (await ops.resume_sink("erp", actor="bob")).changed
    assert not (await ops.resume_sink("erp", actor="bob")).changed

    shown = await ops.event(d.delivery_id)
    assert [(a.actor, a.action, a.sink) for a in shown.actions] == [
        ("ann", "replay", "archive"),
        ("bob", "retry-now", "erp"),
    ]
    assert [(a.action, a.sink) for a in await ops.actions()] == [
        ("resume-sink", "erp"),
        ("retry-now", "erp"),
        ("stop-sink", "erp"),
        ("replay", "archive"),
    ]
    sinks = {s.name: s for s in await ops.sinks()}
    assert (sinks["archive"].pending, sinks["erp"].pending, sinks["erp"].stopped) == (1, 1, False)


async def test_retry_now_of_a_delivered_send_points_to_replay(
    journal: MemoryJournal, ops: Operator
) -> None:
    d, [send] = await _delivered(journal)
    await journal.finish_send(send, "w", Outcome.delivered())
    answer = await ops.retry_now(send.send_id, actor="me")
    assert not answer.due_now
    assert answer.message == (
        f"send {send.send_id} is delivered, not waiting: to send it again, replay its event"
        f" {d.event_id(0)}"
    )
    why = await ops.why_not_retried(d.delivery_id)
    assert why.endswith(f"to send it again anyway: hookdock events replay {d.delivery_id}")
    with pytest.raises(NotFound):
        await ops.retry_now(123456, actor="me")


async def test_dead_letters_of_a_sink_and_a_purge(journal: MemoryJournal, ops: Operator) -> None:
    d, [archive, erp] = await _delivered(journal, task="subject", sinks=("archive", "erp"))
    await journal.finish_send(archive, "w", Outcome.delivered())
    await journal.finish_send(erp, "w", Outcome.dead("410"))
    dead = await ops.dead_letters("erp", EventQuery())
    assert [i.event_id for i in dead.items] == [d.event_id(0)]
    assert (await ops.dead_letters("archive", EventQuery())).items == []

    purged = await ops.purge_task("subject", actor="dpo")
    assert purged.deliveries == [d.delivery_id]
    assert purged.message == (
        "erased 1 deliveries of task subject from the journal (1 routed, 0 never routed),"
        f" 1 events, 2 sends, 3 attempts and {len(d.body)} bytes of payload;"
        " copies live on in the sinks that received them: archive (1)"
    )
    assert (await ops.events(EventQuery())).total_count == 0


async def test_a_batch_by_state(journal: MemoryJournal, ops: Operator) -> None:
    from receiver.journal.views import EventFilter

    _, [send] = await _delivered(journal)
    await journal.finish_send(send, "w", Outcome.delivered())
    [row] = (await journal.events(EventFilter())).items
    assert row.batch_id is None
    with pytest.raises(NotFound, match="no events of batch 'b1'"):
        await ops.batch("b1")


async def test_a_bulk_replay_counts_first_then_replays_with_progress(
    journal: MemoryJournal, ops: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import receiver.operator.service as service

    monkeypatch.setattr(service, "BULK_CHUNK", 2)
    for _ in range(5):
        _, [send] = await _delivered(journal, task="bulk")
        await journal.finish_send(send, "w", Outcome.delivered())
    await _delivered(journal, task="other")
    query = EventQuery(task_id="bulk")
    dry = await ops.bulk_replay(query, sink=None, actor="ann", dry_run=True)
    assert (dry.state, dry.matched, dry.replayed) == ("dry-run", 5, 0)
    assert (await ops.events(EventQuery(state=["pending"]))).total_count == 1

    seen: list[int] = []
    pauses: list[None] = []

    async def pause() -> None:
        pauses.append(None)

    done = await ops.bulk_replay(
        query, sink=None, actor="ann", progress=lambda s: seen.append(s.replayed), pause=pause
    )
    assert (done.state, done.matched, done.replayed, done.requeued) == ("done", 5, 5, 5)
    assert seen == [2, 4, 5] and len(pauses) == 2
    assert (await ops.events(EventQuery(state=["pending"]))).total_count == 6
    with pytest.raises(BadRequest, match="no sink named 'nope'"):
        await ops.bulk_replay(query, sink="nope", actor="ann")
