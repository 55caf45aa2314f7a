"""Per-(event, sink) sends in the journal, on both backends: the SQLite file and its in-memory
twin must mean the same thing, or the dispatcher's unit tests would prove nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import RawDelivery
from handlers.files import FileInfo
from receiver.ids import new_id
from receiver.journal import DeliveryState, Outcome, SqliteJournal
from receiver.journal.base import Journal, SendState
from receiver.journal.memory import MemoryJournal

pytestmark = pytest.mark.anyio


def raw(body: bytes = b"{}") -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=body,
    )


@pytest.fixture(params=["sqlite", "memory"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    if request.param == "memory":
        yield MemoryJournal()
        return
    j = SqliteJournal(tmp_path / "j.db").open()
    yield j
    await j.close()


async def routed(journal: Journal, sinks: list[str], lease_now: set[str]) -> RawDelivery:
    d = raw(new_id().encode())
    await journal.append(d, d.delivery_id)
    [claim] = [c for c in await journal.claim("w", 100, 60) if c.delivery == d]
    await journal.route(claim, "w", [(0, s) for s in sinks], lease_now, 60)
    return d


async def test_route_leases_only_the_sinks_asked_for(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    sends = await journal.route(claim, "w", [(0, "a"), (0, "b")], {"a"}, 60)
    assert [(s.sink, s.attempt, s.event_id) for s in sends] == [("a", 1, f"{d.delivery_id}-0")]
    # b waits to be claimed; a is leased, so not claimable by anyone else.
    [b] = await journal.claim_sends("v", {"a": 5, "b": 5}, 60)
    assert (b.sink, b.attempt, b.delivery) == ("b", 1, d)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.PENDING
    assert await journal.claim("w", 1, 60) == [], "a routed delivery is not claimed again"


async def test_the_same_pair_twice_is_one_send(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    sends = await journal.route(claim, "w", [(0, "a"), (0, "a")], {"a"}, 60)
    assert len(sends) == 1
    assert len(await journal.sends(d.delivery_id)) == 1


async def test_each_send_has_its_own_outcome(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    leased = {
        s.sink: s
        for s in await journal.route(claim, "w", [(0, "good"), (0, "bad")], {"good", "bad"}, 60)
    }
    assert set(leased) == {"good", "bad"}
    claims = await journal.claim_sends("v", {"good": 1, "bad": 1}, 60)
    assert claims == [], "both are leased to w already"
    # Someone else's outcome is ignored; the lease holder's counts.
    await journal.finish_send(leased["good"], "v", Outcome.dead("not mine"))
    await journal.finish_send(leased["good"], "w", Outcome.delivered())
    await journal.finish_send(leased["bad"], "w", Outcome.retry("503", at=4e9))
    after = {s.sink: s for s in await journal.sends(d.delivery_id)}
    assert after["good"].state is SendState.DELIVERED and after["good"].delivered_at
    assert after["bad"].state is SendState.PENDING and after["bad"].last_error == "503"
    assert after["bad"].next_attempt_at is not None
    assert after["bad"].next_attempt_at.timestamp() == pytest.approx(4e9)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.PENDING
    assert info.last_error == "sink bad: 503"
    counts = await journal.sink_counts()
    assert counts["good"][SendState.DELIVERED] == 1 and counts["bad"][SendState.PENDING] == 1


async def test_dead_send_makes_the_delivery_dead_and_requeue_by_sink(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    a, b = await journal.route(claim, "w", [(0, "a"), (0, "b")], {"a", "b"}, 60)
    await journal.finish_send(a, "w", Outcome.dead("refused"))
    await journal.finish_send(b, "w", Outcome.dead("refused too"))
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.DEAD
    assert [i.delivery_id for i in await journal.list(DeliveryState.DEAD)] == [d.delivery_id]
    # Requeue only what failed at a: b stays dead.
    assert await journal.requeue(sink="a") == 1
    states = {s.sink: s.state for s in await journal.sends(d.delivery_id)}
    assert states == {"a": SendState.PENDING, "b": SendState.DEAD}
    [again] = await journal.claim_sends("w", {"a": 5, "b": 5}, 60)
    assert (again.sink, again.attempt) == ("a", 1)
    await journal.finish_send(again, "w", Outcome.delivered())
    assert await journal.requeue([d.delivery_id]) == 1
    [last] = await journal.claim_sends("w", {"a": 5, "b": 5}, 60)
    await journal.finish_send(last, "w", Outcome.delivered())
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.DONE and info.last_error is None
    assert (await journal.counts())[DeliveryState.DONE] == 1


async def test_claim_sends_respects_each_sinks_limit(journal: Journal) -> None:
    for _ in range(5):
        await routed(journal, ["a", "b"], set())
    claims = await journal.claim_sends("w", {"a": 2, "b": 3}, 60)
    assert sorted(c.sink for c in claims) == ["a", "a", "b", "b", "b"]
    more = await journal.claim_sends("w", {"a": 10}, 60)
    assert len(more) == 3 and {c.sink for c in more} == {"a"}


async def test_a_gone_sink_is_stopped_until_resumed(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    [send] = await journal.route(claim, "w", [(0, "hook")], {"hook"}, 60)
    await journal.finish_send(send, "w", Outcome.gone("410 Gone"))
    [stopped] = await journal.stopped_sinks()
    assert (stopped.sink, stopped.reason) == ("hook", "410 Gone")
    assert await journal.claim_sends("w", {"hook": 5}, 60) == []
    # Routing another delivery to it records the send but does not lease it.
    other = await routed(journal, ["hook"], {"hook"})
    assert [s.state for s in await journal.sends(other.delivery_id)] == [SendState.PENDING]
    assert await journal.resume_sink("hook") is True
    assert await journal.resume_sink("hook") is False
    claims = await journal.claim_sends("w", {"hook": 5}, 60)
    assert {c.delivery.delivery_id for c in claims} == {d.delivery_id, other.delivery_id}


async def test_released_sends_give_the_attempt_back(journal: Journal) -> None:
    await routed(journal, ["a"], set())
    [first] = await journal.claim_sends("w", {"a": 1}, 60)
    await journal.release_sends("w", [first.send_id])
    [again] = await journal.claim_sends("v", {"a": 1}, 60)
    assert again.send_id == first.send_id and again.attempt == 1


async def test_stale_send_leases_are_taken_back(journal: Journal) -> None:
    await routed(journal, ["a"], set())
    await journal.claim_sends("gone", {"a": 1}, 600)
    assert await journal.claim_sends("w", {"a": 1}, 60) == []
    assert await journal.release_stale(lambda owner: owner == "gone") == 1
    [again] = await journal.claim_sends("w", {"a": 1}, 60)
    assert again.attempt == 2


async def test_a_delivery_with_every_event_dropped_is_done(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    assert await journal.route(claim, "w", [], set(), 60) == []
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.DONE


async def test_prune_keeps_deliveries_with_unfinished_sends(journal: Journal) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    done, waiting = raw(b"1"), raw(b"2")
    done = done.model_copy(update={"received_at": old})
    waiting = waiting.model_copy(update={"received_at": old})
    for d in (done, waiting):
        await journal.append(d, d.delivery_id)
    claims = {c.delivery.delivery_id: c for c in await journal.claim("w", 10, 60)}
    sends = {
        d.delivery_id: await journal.route(
            claims[d.delivery_id], "w", [(0, "a"), (0, "b")], {"a", "b"}, 60
        )
        for d in (done, waiting)
    }
    for send in sends[done.delivery_id]:
        await journal.finish_send(send, "w", Outcome.delivered())
    await journal.finish_send(sends[waiting.delivery_id][0], "w", Outcome.delivered())
    assert await journal.prune(datetime(2021, 1, 1, tzinfo=UTC).timestamp()) == 1
    assert await journal.get(done.delivery_id) is None
    assert await journal.sends(done.delivery_id) == []
    assert await journal.get(waiting.delivery_id) is not None


def file_info(name: str, size: int = 3) -> FileInfo:
    digest = format(size, "x").rjust(64, "0")
    return FileInfo(size=size, sha256=digest, content_type="application/pdf", filename=name)


async def test_failure_codes_are_kept_with_the_error_until_delivered_or_requeued(
    journal: Journal,
) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    a, b, c = await journal.route(claim, "w", [(0, "a"), (0, "b"), (0, "c")], {"a", "b", "c"}, 60)
    await journal.finish_send(a, "w", Outcome.dead("the link expired", code="link_expired"))
    await journal.finish_send(b, "w", Outcome.retry("refused", at=0, code="address_refused"))
    await journal.finish_send(c, "w", Outcome.dead("no code"))
    sends = {s.sink: s for s in await journal.sends(d.delivery_id)}
    assert (sends["a"].code, sends["a"].last_error) == ("link_expired", "the link expired")
    assert (sends["b"].code, sends["c"].code) == ("address_refused", None)
    # Only dead sends count, and only those with a code.
    assert await journal.dead_codes() == {"link_expired": 1}
    [again] = await journal.claim_sends("w", {"b": 1}, 60)
    await journal.finish_send(again, "w", Outcome.delivered())
    assert {s.sink: s.code for s in await journal.sends(d.delivery_id)}["b"] is None
    assert await journal.requeue(sink="a") == 1
    sends = {s.sink: s for s in await journal.sends(d.delivery_id)}
    assert (sends["a"].code, sends["a"].last_error) == (None, None)
    assert await journal.dead_codes() == {}


async def test_recorded_files_come_with_every_later_claim_of_the_send(journal: Journal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    [send] = await journal.route(claim, "w", [(0, "a")], {"a"}, 60)
    assert send.files == {}
    pdf, xml, pdf_again = file_info("a.pdf"), file_info("a.xml", 5), file_info("b.pdf", 7)
    assert await journal.record_file(send, "v", "pdf", pdf) is False, "v holds no lease"
    assert await journal.record_file(send, "w", "pdf", pdf) is True
    assert await journal.record_file(send, "w", "xml", xml) is True
    assert await journal.record_file(send, "w", "pdf", pdf_again) is True  # replaces
    await journal.finish_send(send, "w", Outcome.retry("503", at=0))
    assert await journal.record_file(send, "w", "late", pdf) is False, "the lease ended"
    [retry] = await journal.claim_sends("w", {"a": 1}, 60)
    assert retry.files == {"pdf": pdf_again, "xml": xml}
    await journal.finish_send(retry, "w", Outcome.dead("gone for good", code="file_deleted"))
    [info] = await journal.sends(d.delivery_id)
    assert info.files == {"pdf": pdf_again, "xml": xml}
    # A requeue after a fix keeps them too: what was stored is not fetched again.
    assert await journal.requeue([d.delivery_id]) == 1
    [requeued] = await journal.claim_sends("w", {"a": 1}, 60)
    assert requeued.files == {"pdf": pdf_again, "xml": xml}
    await journal.finish_send(requeued, "w", Outcome.delivered())
    [info] = await journal.sends(d.delivery_id)
    assert info.files == {"pdf": pdf_again, "xml": xml}


async def test_renew_sends_extends_only_the_leases_still_held(journal: Journal) -> None:
    await routed(journal, ["a"], set())
    await routed(journal, ["a"], set())
    # Leases that lapse at once: only a renewal keeps them from being claimed by another.
    kept, lapsed = await journal.claim_sends("w", {"a": 2}, -1)
    assert await journal.renew_sends("w", [], 60) == 0
    assert await journal.renew_sends("x", [kept.send_id], 60) == 0
    assert await journal.renew_sends("w", [kept.send_id], 60) == 1
    [taken] = await journal.claim_sends("v", {"a": 5}, 60)
    assert taken.send_id == lapsed.send_id
    assert await journal.renew_sends("w", [kept.send_id, lapsed.send_id], 60) == 1
    await journal.finish_send(kept, "w", Outcome.delivered())
    assert await journal.renew_sends("w", [kept.send_id], 60) == 0, "finished: no lease"
