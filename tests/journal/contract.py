"""``JournalContract``: what every journal backend must mean, method by method.

Subclass it and provide a ``journal`` fixture (an opened ``SqlJournal``, closed after the
test) to run it on a backend; ``test_contract.py`` runs it on SQLite, ``MemoryJournal`` and
PostgreSQL.  A few tests reach the database through ``_write`` to set up what only an older
hookdock could have written (a send without a stored event) or to look at rows no method
returns (attempts, pruned events).

Time: no test waits for the clock.  A lease of ``-1`` seconds has lapsed as soon as it is
taken, a retry ``at=0`` is due at once and one ``at=FUTURE`` is not due for decades.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.event import Event, RawDelivery
from handlers.files import FileInfo
from receiver.ids import new_id
from receiver.journal import (
    AppendResult,
    Claim,
    DeliveryState,
    JournalUnavailable,
    Outcome,
    SendClaim,
    SendState,
    SqlJournal,
)
from receiver.journal.dialect import Tx

__all__ = ["FUTURE", "JournalContract", "event", "execute", "file_info", "raw", "rows"]

FUTURE = 4e9
"""A retry time in 2096: not due during any test."""

OLD = datetime(2020, 1, 1, tzinfo=UTC)


def raw(
    body: bytes = b"{}", *, route: str = "r", received_at: datetime | None = None
) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route=route,
        source="smartdocumentor.text_document",
        received_at=received_at or datetime.now(UTC),
        content_type="application/json",
        headers={"user-agent": "test"},
        body=body,
    )


def event(delivery: RawDelivery, index: int = 0, **payload: Any) -> Event:
    """The ``index``-th event of ``delivery``, as a source would make it."""
    return Event(
        event_id=delivery.event_id(index),
        delivery_id=delivery.delivery_id,
        vendor="test",
        kind="document",
        route=delivery.route,
        received_at=delivery.received_at,
        task_id=f"task-{index}",
        payload={"index": index, **payload},
    )


def file_info(name: str, size: int = 3) -> FileInfo:
    digest = format(size, "x").rjust(64, "0")
    return FileInfo(size=size, sha256=digest, content_type="application/pdf", filename=name)


async def rows(journal: SqlJournal, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query, run in the journal's own transaction (either engine's placeholders)."""

    def work(tx: Tx) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in tx.execute(sql, params).fetchall()]

    found: list[tuple[Any, ...]] = await journal._write(work)
    return found


async def execute(journal: SqlJournal, sql: str, *params: Any) -> None:
    await journal._write(lambda tx: tx.execute(sql, params))


async def accepted(journal: SqlJournal, delivery: RawDelivery | None = None) -> Claim:
    """``delivery`` (a new one by default) appended and claimed by ``w``, on its own."""
    delivery = delivery or raw(new_id().encode())
    await journal.append(delivery, delivery.delivery_id)
    claims = await journal.claim("w", 1000, 60)
    others = [c.delivery.delivery_id for c in claims if c.delivery != delivery]
    await journal.release("w", others)
    [claim] = [c for c in claims if c.delivery == delivery]
    return claim


async def routed(
    journal: SqlJournal,
    sinks: Sequence[str],
    lease_now: Sequence[str] = (),
    *,
    received_at: datetime | None = None,
) -> tuple[RawDelivery, list[SendClaim]]:
    """A new delivery routed as one event to each of ``sinks``; the sends leased to ``w``."""
    d = raw(new_id().encode(), received_at=received_at)
    claim = await accepted(journal, d)
    e = event(d)
    sends = await journal.route(claim, "w", [(e, s) for s in sinks], set(lease_now), 60)
    return d, sorted(sends, key=lambda s: s.sink)


async def state_of(journal: SqlJournal, delivery_id: str) -> DeliveryState:
    info = await journal.get(delivery_id)
    assert info is not None, f"{delivery_id} is not in the journal"
    return info.state


@pytest.mark.anyio
class JournalContract:
    """Every method of ``Journal`` and ``JournalAdmin``, as each backend must implement it."""

    # ------------------------------------------------------------------ append and read back

    async def test_append_stores_the_raw_delivery_as_accepted(self, journal: SqlJournal) -> None:
        d = raw(b'{"a": 1}\x00\xff not even utf-8')
        result = await journal.append(d, "k")
        assert (result.delivery_id, result.duplicate) == (d.delivery_id, False)
        assert await journal.get_raw(d.delivery_id) == d
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.route, info.source, info.state, info.attempts) == (
            "r",
            "smartdocumentor.text_document",
            DeliveryState.PENDING,
            0,
        )
        assert (info.received_at, info.size, info.last_error) == (d.received_at, len(d.body), None)
        assert info.next_attempt_at is not None
        assert abs(info.next_attempt_at - datetime.now(UTC)) < timedelta(minutes=1)

    async def test_unknown_ids_read_as_none(self, journal: SqlJournal) -> None:
        assert await journal.get("nope") is None
        assert await journal.get_raw("nope") is None
        assert await journal.sends("nope") == []

    async def test_append_is_deduplicated_by_key(self, journal: SqlJournal) -> None:
        first, again = raw(b"1"), raw(b"1")
        a = await journal.append(first, "k1")
        b = await journal.append(again, "k1")
        assert (a.duplicate, b.duplicate) == (False, True)
        assert b.delivery_id == first.delivery_id
        assert await journal.get_raw(again.delivery_id) is None
        assert (await journal.counts())[DeliveryState.PENDING] == 1

    async def test_duplicates_within_one_batch_keep_the_first_id(self, journal: SqlJournal) -> None:
        batch = [raw(b"same") for _ in range(5)] + [raw(b"other")]
        keys = ["dup"] * 5 + ["other"]
        results = await asyncio.gather(
            *(journal.append(d, k) for d, k in zip(batch, keys, strict=True))
        )
        assert sum(not r.duplicate for r in results) == 2
        [kept] = {r.delivery_id for r in results[:5]}
        assert kept in {d.delivery_id for d in batch[:5]}
        assert results[5] == AppendResult(batch[5].delivery_id, duplicate=False)
        assert (await journal.counts())[DeliveryState.PENDING] == 2

    async def test_concurrent_appends_share_commits(self, journal: SqlJournal) -> None:
        await asyncio.gather(*(journal.append(raw(str(i).encode()), f"k{i}") for i in range(300)))
        commits, jobs = journal.stats
        assert jobs >= 300
        assert commits < jobs, "group commit should batch concurrent appends"
        assert (await journal.counts())[DeliveryState.PENDING] == 300

    # ------------------------------------------------------------------ claiming deliveries

    async def test_claims_are_exclusive_until_the_lease_ends(self, journal: SqlJournal) -> None:
        for i in range(5):
            await journal.append(raw(str(i).encode()), f"k{i}")
        mine = await journal.claim("a", 3, lease_seconds=60)
        theirs = await journal.claim("b", 10, lease_seconds=60)
        assert (len(mine), len(theirs)) == (3, 2)
        assert not {c.delivery.delivery_id for c in mine} & {c.delivery.delivery_id for c in theirs}
        assert all(c.attempt == 1 for c in mine + theirs)
        assert await journal.claim("c", 10, lease_seconds=60) == []

    async def test_a_lapsed_lease_is_claimed_again_and_its_late_work_ignored(
        self, journal: SqlJournal
    ) -> None:
        d = raw()
        await journal.append(d, "k")
        [first] = await journal.claim("a", 1, lease_seconds=-1)
        [again] = await journal.claim("b", 1, lease_seconds=60)
        assert (again.delivery, again.attempt) == (d, 2)
        # The first owner's late routing and outcome are ignored: b holds the lease now.
        assert await journal.route(first, "a", [(event(d), "s")], {"s"}, 60) == []
        await journal.finish(first, "a", Outcome.dead("late"))
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.attempts, info.last_error) == (DeliveryState.PENDING, 2, None)
        assert await journal.sends(d.delivery_id) == []
        # b's routing counts.
        [send] = await journal.route(again, "b", [(event(d), "s")], {"s"}, 60)
        assert send.sink == "s"

    async def test_a_routing_retry_waits_until_due(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        await journal.finish(claim, "w", Outcome.retry("source down", at=FUTURE))
        info = await journal.get(d.delivery_id)
        assert info is not None and info.state is DeliveryState.PENDING
        assert (info.attempts, info.last_error) == (1, "source down")
        assert info.next_attempt_at == datetime.fromtimestamp(FUTURE, UTC)
        assert await journal.claim("w", 1, 60) == [], "not due yet"

        due = raw(b"due")
        await journal.append(due, "k2")
        [claim] = await journal.claim("w", 1, 60)
        await journal.finish(claim, "w", Outcome.retry("again", at=0))
        [retried] = await journal.claim("w", 5, 60)
        assert (retried.delivery, retried.attempt) == (due, 2)

    async def test_a_delivery_that_cannot_be_routed_is_dead(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        await journal.finish(claim, "v", Outcome.dead("not mine"))  # ignored: v holds nothing
        assert await state_of(journal, d.delivery_id) is DeliveryState.PENDING
        await journal.finish(claim, "w", Outcome.dead("taskId missing"))
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.last_error, info.next_attempt_at) == (
            DeliveryState.DEAD,
            "taskId missing",
            None,
        )
        assert await journal.claim("w", 1, 60) == []

    async def test_finish_refuses_outcomes_that_do_not_end_a_routing_attempt(
        self, journal: SqlJournal
    ) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        for outcome in (Outcome.delivered(), Outcome.gone("410")):
            with pytest.raises(ValueError, match="use route"):
                await journal.finish(claim, "w", outcome)
        assert await state_of(journal, d.delivery_id) is DeliveryState.PENDING

    async def test_release_gives_the_attempt_back(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        await journal.claim("w", 1, lease_seconds=60)
        await journal.release("v", [d.delivery_id])  # not v's to give back
        assert await journal.claim("v", 1, lease_seconds=60) == []
        await journal.release("w", [d.delivery_id])
        [claim] = await journal.claim("v", 1, lease_seconds=60)
        assert claim.attempt == 1

    async def test_attempts_are_recorded(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        [c1] = await journal.claim("w", 1, 60)
        await journal.finish(c1, "w", Outcome.retry("boom", at=0))
        [c2] = await journal.claim("w", 1, 60)
        [send] = await journal.route(c2, "w", [(event(d), "s")], {"s"}, 60)
        await journal.finish_send(send, "w", Outcome.retry("busy", at=0))
        [again] = await journal.claim_sends("w", {"s": 1}, 60)
        await journal.finish_send(again, "w", Outcome.delivered())
        assert await rows(
            journal,
            "SELECT attempt, owner, outcome, error FROM attempts WHERE delivery_id = ?"
            " ORDER BY attempt",
            d.delivery_id,
        ) == [(1, "w", "retry", "boom"), (2, "w", "routed", None)]
        assert await rows(
            journal,
            "SELECT attempt, outcome, error FROM send_attempts WHERE send_id = ? ORDER BY attempt",
            send.send_id,
        ) == [(1, "retry", "busy"), (2, "delivered", None)]

    # ------------------------------------------------------------------ routing

    async def test_route_stores_the_event_and_leases_only_the_sinks_asked_for(
        self, journal: SqlJournal
    ) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        e = event(d, name="first")
        [a] = await journal.route(claim, "w", [(e, "a"), (e, "b")], {"a"}, 60)
        assert (a.sink, a.attempt, a.event_id, a.event) == ("a", 1, e.event_id, e)
        assert (a.delivery_id, a.route, a.files) == (d.delivery_id, "r", {})
        # b waits to be claimed, with the event as stored; a is leased, so nobody else gets it.
        [b] = await journal.claim_sends("v", {"a": 5, "b": 5}, 60)
        assert (b.sink, b.attempt, b.event_id, b.event) == ("b", 1, e.event_id, e)
        assert (b.delivery_id, b.route, b.files) == (d.delivery_id, "r", {})
        assert await state_of(journal, d.delivery_id) is DeliveryState.PENDING
        assert await journal.claim("w", 1, 60) == [], "a routed delivery is not claimed again"

    async def test_events_fan_out_once_per_sink(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        e0, e1 = event(d, 0), event(d, 1)
        pairs = [(e0, "a"), (e0, "b"), (e1, "a"), (e0, "a"), (e1, "a")]  # repeats are one send
        sends = await journal.route(claim, "w", pairs, {"a", "b"}, 60)
        assert sorted((s.event_id, s.sink) for s in sends) == [
            (e0.event_id, "a"),
            (e0.event_id, "b"),
            (e1.event_id, "a"),
        ]
        assert {s.event_id: s.event for s in sends} == {e0.event_id: e0, e1.event_id: e1}
        listed = await journal.sends(d.delivery_id)
        assert [(s.event_id, s.sink, s.state) for s in listed] == [
            (e0.event_id, "a", SendState.PENDING),
            (e0.event_id, "b", SendState.PENDING),
            (e1.event_id, "a", SendState.PENDING),
        ]
        assert len({s.send_id for s in listed}) == 3

    async def test_a_delivery_with_every_event_dropped_is_done(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        [claim] = await journal.claim("w", 1, 60)
        assert await journal.route(claim, "w", [], set(), 60) == []
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.next_attempt_at, info.last_error) == (
            DeliveryState.DONE,
            None,
            None,
        )
        assert await journal.sends(d.delivery_id) == []
        assert await journal.claim("w", 1, 60) == []

    async def test_routing_to_a_stopped_sink_records_the_send_without_leasing_it(
        self, journal: SqlJournal
    ) -> None:
        await journal.stop_sink("hook", "maintenance")
        d, leased = await routed(journal, ["hook", "other"], ["hook", "other"])
        assert [s.sink for s in leased] == ["other"]
        assert [(s.sink, s.state, s.attempts) for s in await journal.sends(d.delivery_id)] == [
            ("hook", SendState.PENDING, 0),
            ("other", SendState.PENDING, 1),
        ]
        assert await journal.claim_sends("w", {"hook": 5}, 60) == []
        assert await journal.resume_sink("hook") is True
        [send] = await journal.claim_sends("w", {"hook": 5}, 60)
        assert (send.delivery_id, send.attempt, send.event) == (d.delivery_id, 1, event(d))

    # ------------------------------------------------------------------ sends

    async def test_each_send_has_its_own_outcome(self, journal: SqlJournal) -> None:
        d, (bad, good) = await routed(journal, ["good", "bad"], ["good", "bad"])
        assert await journal.claim_sends("v", {"good": 1, "bad": 1}, 60) == [], "leased to w"
        # Someone else's outcome is ignored; the lease holder's counts.
        await journal.finish_send(good, "v", Outcome.dead("not mine"))
        await journal.finish_send(good, "w", Outcome.delivered())
        await journal.finish_send(bad, "w", Outcome.retry("503", at=FUTURE))
        after = {s.sink: s for s in await journal.sends(d.delivery_id)}
        assert (after["good"].state, after["good"].last_error) == (SendState.DELIVERED, None)
        assert after["good"].delivered_at is not None
        assert abs(after["good"].delivered_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert after["good"].next_attempt_at is None
        assert (after["bad"].state, after["bad"].last_error) == (SendState.PENDING, "503")
        assert after["bad"].next_attempt_at == datetime.fromtimestamp(FUTURE, UTC)
        assert after["bad"].delivered_at is None
        info = await journal.get(d.delivery_id)
        assert info is not None and info.state is DeliveryState.PENDING
        assert info.last_error == "sink bad: 503"
        assert info.next_attempt_at == datetime.fromtimestamp(FUTURE, UTC)
        assert await journal.claim_sends("w", {"good": 5, "bad": 5}, 60) == [], "none due"

    async def test_finish_send_refuses_an_unknown_outcome(self, journal: SqlJournal) -> None:
        d, [send] = await routed(journal, ["a"], ["a"])
        with pytest.raises(ValueError, match="unknown outcome"):
            await journal.finish_send(send, "w", Outcome("maybe"))
        [info] = await journal.sends(d.delivery_id)
        assert (info.state, info.attempts) == (SendState.PENDING, 1)

    async def test_claim_sends_respects_each_sinks_limit(self, journal: SqlJournal) -> None:
        for _ in range(5):
            await routed(journal, ["a", "b"])
        assert await journal.claim_sends("w", {}, 60) == []
        assert await journal.claim_sends("w", {"a": 0, "b": 0}, 60) == []
        claims = await journal.claim_sends("w", {"a": 2, "b": 3}, 60)
        assert sorted(c.sink for c in claims) == ["a", "a", "b", "b", "b"]
        assert [c.send_id for c in claims] == sorted(c.send_id for c in claims)
        more = await journal.claim_sends("w", {"a": 10, "c": 10}, 60)
        assert len(more) == 3 and {c.sink for c in more} == {"a"}
        assert not {c.send_id for c in more} & {c.send_id for c in claims}

    async def test_released_sends_give_the_attempt_back(self, journal: SqlJournal) -> None:
        await routed(journal, ["a"])
        [first] = await journal.claim_sends("w", {"a": 1}, 60)
        await journal.release_sends("v", [first.send_id])  # not v's
        assert await journal.claim_sends("v", {"a": 1}, 60) == []
        await journal.release_sends("w", [first.send_id])
        [again] = await journal.claim_sends("v", {"a": 1}, 60)
        assert (again.send_id, again.attempt) == (first.send_id, 1)

    async def test_a_lapsed_send_lease_is_claimed_again(self, journal: SqlJournal) -> None:
        d, _ = await routed(journal, ["a"])
        [first] = await journal.claim_sends("w", {"a": 1}, -1)
        [again] = await journal.claim_sends("v", {"a": 1}, 60)
        assert (again.send_id, again.attempt) == (first.send_id, 2)
        await journal.finish_send(first, "w", Outcome.dead("late"))  # ignored
        await journal.finish_send(again, "v", Outcome.delivered())
        [info] = await journal.sends(d.delivery_id)
        assert (info.state, info.attempts, info.last_error) == (SendState.DELIVERED, 2, None)

    async def test_release_stale_frees_the_leases_of_gone_owners(self, journal: SqlJournal) -> None:
        _, _ = await routed(journal, ["a"])
        await journal.claim_sends("gone", {"a": 1}, 600)
        lost, kept = raw(b"1"), raw(b"2")
        await journal.append(lost, "k1")
        [c] = await journal.claim("gone", 1, lease_seconds=600)
        await journal.append(kept, "k2")
        await journal.claim("alive", 1, lease_seconds=600)
        assert await journal.release_stale(lambda owner: owner == "nobody") == 0
        assert await journal.claim("new", 5, 60) == []
        assert await journal.claim_sends("new", {"a": 5}, 60) == []

        assert await journal.release_stale(lambda owner: owner == "gone") == 2
        [claim] = await journal.claim("new", 5, lease_seconds=60)
        assert (claim.delivery, claim.attempt) == (c.delivery, 2)
        [send] = await journal.claim_sends("new", {"a": 5}, 60)
        assert send.attempt == 2
        assert await rows(
            journal, "SELECT outcome FROM attempts WHERE delivery_id = ?", c.delivery.delivery_id
        ) == [("lost",)]
        assert await rows(
            journal, "SELECT outcome FROM send_attempts WHERE send_id = ?", send.send_id
        ) == [("lost",)]

    async def test_renew_sends_extends_only_the_leases_still_held(
        self, journal: SqlJournal
    ) -> None:
        await routed(journal, ["a"])
        await routed(journal, ["a"])
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

    async def test_renewing_more_leases_than_a_statement_can_name(
        self, journal: SqlJournal
    ) -> None:
        d = raw()
        claim = await accepted(journal, d)
        pairs = [(event(d, i), "s") for i in range(50)]
        sends = await journal.route(claim, "w", pairs, {"s"}, 60)
        # Ids past either engine's limit on bound parameters (unknown ones count for nothing).
        many = [*(s.send_id for s in sends), *range(10**6, 10**6 + 70_000)]
        assert await journal.renew_sends("w", many, 60) == 50

    async def test_failure_codes_are_kept_with_the_error_until_delivered_or_requeued(
        self, journal: SqlJournal
    ) -> None:
        d, (a, b, c) = await routed(journal, ["a", "b", "c"], ["a", "b", "c"])
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
        assert (sends["a"].code, sends["a"].last_error, sends["a"].attempts) == (None, None, 0)
        assert await journal.dead_codes() == {}

    async def test_dead_codes_count_every_dead_send_by_code(self, journal: SqlJournal) -> None:
        assert await journal.dead_codes() == {}
        for code in ("link_expired", "file_too_large", "link_expired", None):
            _, [send] = await routed(journal, ["a"], ["a"])
            await journal.finish_send(send, "w", Outcome.dead("no", code=code))
        assert await journal.dead_codes() == {"file_too_large": 1, "link_expired": 2}

    async def test_sink_counts_name_every_state_of_every_sink(self, journal: SqlJournal) -> None:
        assert await journal.sink_counts() == {}
        _, (a, b) = await routed(journal, ["a", "b"], ["a", "b"])
        await journal.finish_send(a, "w", Outcome.delivered())
        await journal.finish_send(b, "w", Outcome.dead("no"))
        await routed(journal, ["a"])
        assert await journal.sink_counts() == {
            "a": {SendState.PENDING: 1, SendState.DELIVERED: 1, SendState.DEAD: 0},
            "b": {SendState.PENDING: 0, SendState.DELIVERED: 0, SendState.DEAD: 1},
        }

    # ------------------------------------------------------------------ files

    async def test_recorded_files_come_with_every_later_claim_of_the_send(
        self, journal: SqlJournal
    ) -> None:
        d, [send] = await routed(journal, ["a"], ["a"])
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

    async def test_files_recorded_at_once_are_all_kept(self, journal: SqlJournal) -> None:
        d, [send] = await routed(journal, ["a"], ["a"])
        roles = ("pdf", "xml", 'odd."role', "ünïcode")
        recorded = await asyncio.gather(
            *(journal.record_file(send, "w", r, file_info(r, i)) for i, r in enumerate(roles, 1))
        )
        assert recorded == [True] * len(roles)
        [info] = await journal.sends(d.delivery_id)
        assert info.files == {role: file_info(role, i) for i, role in enumerate(roles, 1)}

    # ------------------------------------------------------------------ stored events

    async def test_store_event_fills_in_a_send_routed_before_events_were_stored(
        self, journal: SqlJournal
    ) -> None:
        d, [send] = await routed(journal, ["a"], ["a"])
        e = event(d)
        # What a send routed by a hookdock older than stored events looks like.
        await execute(journal, "DELETE FROM events WHERE delivery_id = ?", d.delivery_id)
        await journal.finish_send(send, "w", Outcome.retry("busy", at=0))
        [old] = await journal.claim_sends("w", {"a": 1}, 60)
        assert (old.event, old.event_id, old.attempt) == (None, e.event_id, 2)
        await journal.store_event(old, e, 0)
        # Normalized once more by someone else meanwhile: the first one stored stays.
        await journal.store_event(old, event(d, changed=True), 0)
        await journal.finish_send(old, "w", Outcome.retry("busy", at=0))
        [again] = await journal.claim_sends("w", {"a": 1}, 60)
        assert again.event == e

    # ------------------------------------------------------------------ stopped sinks

    async def test_a_gone_sink_is_stopped_until_resumed(self, journal: SqlJournal) -> None:
        d, [send] = await routed(journal, ["hook"], ["hook"])
        await journal.finish_send(send, "w", Outcome.gone("410 Gone"))
        [stopped] = await journal.stopped_sinks()
        assert (stopped.sink, stopped.reason) == ("hook", "410 Gone")
        assert abs(stopped.stopped_at - datetime.now(UTC)) < timedelta(minutes=1)
        [info] = await journal.sends(d.delivery_id)
        assert (info.state, info.last_error) == (SendState.PENDING, "410 Gone")
        assert await state_of(journal, d.delivery_id) is DeliveryState.PENDING
        assert await journal.claim_sends("w", {"hook": 5}, 60) == []
        # Routing another delivery to it records the send but does not lease it.
        other, leased = await routed(journal, ["hook"], ["hook"])
        assert leased == []
        assert [s.state for s in await journal.sends(other.delivery_id)] == [SendState.PENDING]
        assert await journal.resume_sink("hook") is True
        assert await journal.resume_sink("hook") is False
        assert await journal.stopped_sinks() == []
        claims = await journal.claim_sends("w", {"hook": 5}, 60)
        assert {c.delivery_id for c in claims} == {d.delivery_id, other.delivery_id}

    async def test_stop_sink_keeps_the_first_reason(self, journal: SqlJournal) -> None:
        await journal.stop_sink("b", "maintenance")
        await journal.stop_sink("a", "410 Gone")
        await journal.stop_sink("a", "again")
        assert [(s.sink, s.reason) for s in await journal.stopped_sinks()] == [
            ("a", "410 Gone"),
            ("b", "maintenance"),
        ]
        assert await journal.resume_sink("a") is True
        assert [s.sink for s in await journal.stopped_sinks()] == ["b"]

    # ------------------------------------------------------------------ overall state

    async def test_overall_states_in_counts_lists_and_gets(self, journal: SqlJournal) -> None:
        expected: dict[str, DeliveryState] = {}

        async def sends_ending(state: DeliveryState, *outcomes: Outcome) -> None:
            sinks = [f"s{i}" for i in range(len(outcomes))]
            d, sends = await routed(journal, sinks, sinks)
            for send, outcome in zip(sends, outcomes, strict=True):
                await journal.finish_send(send, "w", outcome)
            expected[d.delivery_id] = state

        ok, dead, later = Outcome.delivered(), Outcome.dead("no"), Outcome.retry("x", at=FUTURE)
        await sends_ending(DeliveryState.DONE, ok, ok)
        await sends_ending(DeliveryState.DONE)  # the rules dropped every event
        await sends_ending(DeliveryState.PENDING, ok, later)
        await sends_ending(DeliveryState.PENDING, dead, later)
        await sends_ending(DeliveryState.DEAD, ok, dead)
        await sends_ending(DeliveryState.DEAD, dead, dead)
        for outcome, state in ((dead, DeliveryState.DEAD), (later, DeliveryState.PENDING)):
            claim = await accepted(journal)
            await journal.finish(claim, "w", outcome)
            expected[claim.delivery.delivery_id] = state
        unrouted = raw()
        await journal.append(unrouted, unrouted.delivery_id)
        expected[unrouted.delivery_id] = DeliveryState.PENDING

        for delivery_id, state in expected.items():
            assert await state_of(journal, delivery_id) is state, delivery_id
        assert await journal.counts() == {
            DeliveryState.PENDING: 4,
            DeliveryState.DONE: 2,
            DeliveryState.DEAD: 3,
        }
        for state in DeliveryState:
            listed = [i.delivery_id for i in await journal.list(state)]
            assert listed == sorted((i for i, s in expected.items() if s is state), reverse=True)
            assert all(i.state is state for i in await journal.list(state))
        newest_first = sorted(expected, reverse=True)
        assert [i.delivery_id for i in await journal.list()] == newest_first
        assert [i.delivery_id for i in await journal.list(limit=3)] == newest_first[:3]
        assert [i.delivery_id for i in await journal.list(DeliveryState.PENDING, limit=1)] == [
            max(i for i, s in expected.items() if s is DeliveryState.PENDING)
        ]

    async def test_an_empty_journal_counts_zero_of_each(self, journal: SqlJournal) -> None:
        assert await journal.counts() == dict.fromkeys(DeliveryState, 0)
        assert await journal.list() == []

    async def test_the_error_an_operator_sees_first(self, journal: SqlJournal) -> None:
        d, (a, b, c) = await routed(journal, ["a", "b", "c"], ["a", "b", "c"])
        info = await journal.get(d.delivery_id)
        assert info is not None and info.last_error is None
        await journal.finish_send(b, "w", Outcome.dead("refused"))
        await journal.finish_send(a, "w", Outcome.retry("busy", at=FUTURE))
        await journal.finish_send(c, "w", Outcome.retry("timeout", at=FUTURE - 10))
        # The send that gave up comes first, though others failed after it, naming its sink.
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.last_error) == (DeliveryState.PENDING, "sink b: refused")
        assert info.next_attempt_at == datetime.fromtimestamp(FUTURE - 10, UTC), "the soonest"
        assert await journal.requeue(sink="b") == 1
        # Of those still retrying, the latest failure.
        info = await journal.get(d.delivery_id)
        assert info is not None and info.last_error == "sink c: timeout"
        [listed] = await journal.list(DeliveryState.PENDING)
        assert listed == info

    async def test_a_delivery_counts_the_attempts_of_its_busiest_send(
        self, journal: SqlJournal
    ) -> None:
        d, (a, _) = await routed(journal, ["a", "b"], ["a", "b"])
        for _ in range(2):
            await journal.finish_send(a, "w", Outcome.retry("busy", at=0))
            [a] = await journal.claim_sends("w", {"a": 1}, 60)
        info = await journal.get(d.delivery_id)
        assert info is not None and info.attempts == 3

    # ------------------------------------------------------------------ requeue

    async def test_requeue_makes_dead_deliveries_and_sends_pending_again(
        self, journal: SqlJournal
    ) -> None:
        assert await journal.requeue() == 0
        unroutable = await accepted(journal)
        await journal.finish(unroutable, "w", Outcome.dead("bad payload"))
        d, (a, b) = await routed(journal, ["a", "b"], ["a", "b"])
        await journal.finish_send(a, "w", Outcome.dead("refused"))
        await journal.finish_send(b, "w", Outcome.delivered())
        alive, _ = await routed(journal, ["a"])
        assert await journal.requeue([alive.delivery_id]) == 0, "nothing of it is dead"

        assert await journal.requeue() == 2
        assert await journal.requeue() == 0
        [claim] = await journal.claim("w", 5, 60)
        assert (claim.delivery.delivery_id, claim.attempt) == (
            unroutable.delivery.delivery_id,
            1,
        )
        sends = {s.sink: s for s in await journal.sends(d.delivery_id)}
        assert (sends["a"].state, sends["a"].attempts) == (SendState.PENDING, 0)
        assert sends["b"].state is SendState.DELIVERED
        claims = await journal.claim_sends("w", {"a": 5}, 60)
        assert {c.delivery_id: (c.attempt, c.event) for c in claims} == {
            d.delivery_id: (1, event(d)),
            alive.delivery_id: (1, event(alive)),
        }

    async def test_requeue_by_sink_and_by_delivery(self, journal: SqlJournal) -> None:
        d, (a, b) = await routed(journal, ["a", "b"], ["a", "b"])
        await journal.finish_send(a, "w", Outcome.dead("refused"))
        await journal.finish_send(b, "w", Outcome.dead("refused too"))
        other, [oa] = await routed(journal, ["a"], ["a"])
        await journal.finish_send(oa, "w", Outcome.dead("refused"))
        info = await journal.get(d.delivery_id)
        assert info is not None and info.state is DeliveryState.DEAD
        # Only what failed at a, and only of d: b stays dead, and so does the other delivery.
        assert await journal.requeue([d.delivery_id], sink="a") == 1
        states = {s.sink: s.state for s in await journal.sends(d.delivery_id)}
        assert states == {"a": SendState.PENDING, "b": SendState.DEAD}
        assert await state_of(journal, other.delivery_id) is DeliveryState.DEAD
        [again] = await journal.claim_sends("w", {"a": 5, "b": 5}, 60)
        assert (again.delivery_id, again.sink, again.attempt) == (d.delivery_id, "a", 1)
        await journal.finish_send(again, "w", Outcome.delivered())
        assert await state_of(journal, d.delivery_id) is DeliveryState.DEAD, "b is still dead"
        assert await journal.requeue(sink="nope") == 0
        assert await journal.requeue([d.delivery_id]) == 1
        [last] = await journal.claim_sends("w", {"a": 5, "b": 5}, 60)
        assert (last.sink, last.event) == ("b", event(d))
        await journal.finish_send(last, "w", Outcome.delivered())
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.last_error) == (DeliveryState.DONE, None)

    # ------------------------------------------------------------------ renormalize

    async def test_renormalize_routes_a_dead_delivery_again_from_its_raw_bytes(
        self, journal: SqlJournal
    ) -> None:
        d = raw()
        claim = await accepted(journal, d)
        e0 = event(d, 0, version=1)
        a, b, c = sorted(
            await journal.route(claim, "w", [(e0, "a"), (e0, "b"), (e0, "c")], {"a", "b", "c"}, 60),
            key=lambda s: s.sink,
        )
        await journal.finish_send(a, "w", Outcome.delivered())
        await journal.finish_send(b, "w", Outcome.dead("bad event", code="invalid"))
        await journal.finish_send(c, "w", Outcome.dead("bad event"))
        assert await state_of(journal, d.delivery_id) is DeliveryState.DEAD

        assert await journal.renormalize([d.delivery_id]) == 1
        # The dead sends are dropped, the delivered one kept; the delivery is routed anew.
        [kept] = await journal.sends(d.delivery_id)
        assert (kept.send_id, kept.sink, kept.state) == (a.send_id, "a", SendState.DELIVERED)
        assert await journal.dead_codes() == {}
        info = await journal.get(d.delivery_id)
        assert info is not None
        assert (info.state, info.last_error) == (DeliveryState.PENDING, None)
        [again] = await journal.claim("w", 5, 60)
        assert (again.delivery, again.attempt) == (d, 1)

        # The fixed source makes a better event 0, and an event 1 it missed before.
        e0v2, e1 = event(d, 0, version=2), event(d, 1, version=2)
        pairs = [(e0v2, "a"), (e0v2, "b"), (e0v2, "c"), (e1, "a")]
        new = await journal.route(again, "w", pairs, {"a", "b", "c"}, 60)
        assert {(s.event_id, s.sink): s.event for s in new} == {
            (e0.event_id, "b"): e0v2,
            (e0.event_id, "c"): e0v2,
            (e1.event_id, "a"): e1,
        }, "a has event 0 already: it does not get it twice"
        assert sorted(
            (s.event_id, s.sink, s.state) for s in await journal.sends(d.delivery_id)
        ) == [
            (e0.event_id, "a", SendState.DELIVERED),
            (e0.event_id, "b", SendState.PENDING),
            (e0.event_id, "c", SendState.PENDING),
            (e1.event_id, "a", SendState.PENDING),
        ]
        # The stored event is the new one: what a later attempt delivers.
        await journal.release_sends("w", [s.send_id for s in new])
        claims = await journal.claim_sends("v", {"a": 5, "b": 5, "c": 5}, 60)
        assert {(s.event_id, s.sink): s.event for s in claims} == {
            (e0.event_id, "b"): e0v2,
            (e0.event_id, "c"): e0v2,
            (e1.event_id, "a"): e1,
        }

    async def test_renormalize_takes_only_dead_deliveries(self, journal: SqlJournal) -> None:
        assert await journal.renormalize() == 0
        unroutable = await accepted(journal)
        await journal.finish(unroutable, "w", Outcome.dead("taskId missing"))
        failed, [send] = await routed(journal, ["a"], ["a"])
        await journal.finish_send(send, "w", Outcome.dead("refused"))
        done, [ok] = await routed(journal, ["a"], ["a"])
        await journal.finish_send(ok, "w", Outcome.delivered())
        waiting, _ = await routed(journal, ["a"])

        assert await journal.renormalize([done.delivery_id, waiting.delivery_id]) == 0
        assert await state_of(journal, done.delivery_id) is DeliveryState.DONE
        assert len(await journal.sends(waiting.delivery_id)) == 1
        assert await journal.renormalize() == 2
        for d in (unroutable.delivery, failed):
            assert await state_of(journal, d.delivery_id) is DeliveryState.PENDING
        assert await journal.sends(failed.delivery_id) == []
        claims = await journal.claim("w", 5, 60)
        assert sorted(c.delivery.delivery_id for c in claims) == sorted(
            [unroutable.delivery.delivery_id, failed.delivery_id]
        )
        assert await journal.renormalize() == 0

    # ------------------------------------------------------------------ prune

    async def test_prune_deletes_only_old_done_deliveries_with_everything_of_theirs(
        self, journal: SqlJournal
    ) -> None:
        old_done, sends = await routed(journal, ["a", "b"], ["a", "b"], received_at=OLD)
        for send in sends:
            await journal.finish_send(send, "w", Outcome.delivered())
        old_dropped, _ = await routed(journal, [], received_at=OLD)
        old_waiting, (wa, _) = await routed(journal, ["a", "b"], ["a", "b"], received_at=OLD)
        await journal.finish_send(wa, "w", Outcome.delivered())
        old_dead = await accepted(journal, raw(b"dead", received_at=OLD))
        await journal.finish(old_dead, "w", Outcome.dead("no"))
        old_unrouted = raw(b"unrouted", received_at=OLD)
        await journal.append(old_unrouted, "unrouted")
        fresh, [fs] = await routed(journal, ["a"], ["a"])
        await journal.finish_send(fs, "w", Outcome.delivered())

        assert await journal.prune(datetime(2021, 1, 1, tzinfo=UTC).timestamp()) == 2
        for gone in (old_done, old_dropped):
            assert await journal.get(gone.delivery_id) is None
            assert await journal.get_raw(gone.delivery_id) is None
            assert await journal.sends(gone.delivery_id) == []
            for table in ("events", "attempts", "sends"):
                assert (
                    await rows(
                        journal, f"SELECT 1 FROM {table} WHERE delivery_id = ?", gone.delivery_id
                    )
                    == []
                ), table
        assert (
            await rows(
                journal,
                "SELECT 1 FROM send_attempts WHERE send_id IN (?, ?)",
                sends[0].send_id,
                sends[1].send_id,
            )
            == []
        )
        for kept in (old_waiting, old_dead.delivery, old_unrouted, fresh):
            assert await journal.get(kept.delivery_id) is not None
        assert len(await journal.sends(old_waiting.delivery_id)) == 2
        # Its dedupe key went with it: the same delivery again is a new one.
        assert not (await journal.append(raw(), old_done.delivery_id)).duplicate
        assert (await journal.append(raw(), fresh.delivery_id)).duplicate
        assert await journal.prune(datetime(2021, 1, 1, tzinfo=UTC).timestamp()) == 0

    # ------------------------------------------------------------------ health

    async def test_ping_then_a_closed_journal_refuses_work(self, journal: SqlJournal) -> None:
        await journal.ping()
        await journal.ping()
        await journal.close()
        with pytest.raises(JournalUnavailable):
            await journal.ping()
        with pytest.raises(JournalUnavailable):
            await journal.append(raw(), "k")
