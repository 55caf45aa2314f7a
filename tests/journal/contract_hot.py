"""The hot path's half of the journal contract: append, claim, route, finish, leases, files."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from receiver.journal import (
    AppendResult,
    DeliveryState,
    Outcome,
    SendState,
    SqlJournal,
)
from receiver.journal.route_bulk import RouteItem
from tests.journal.helpers import (
    FUTURE,
    accepted,
    event,
    execute,
    file_info,
    raw,
    routed,
    rows,
    state_of,
)


@pytest.mark.anyio
class HotPathContract:
    """What ingest and the dispatcher rely on, as each backend must implement it."""

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

    async def test_a_recent_claim_looks_only_since_the_last_full_one(
        self, journal: SqlJournal
    ) -> None:
        old, new = raw(b"old"), raw(b"new")
        await journal.append(old, "k-old")
        [first] = await journal.claim("w", 10, 60)  # saw every due delivery: the mark is set
        # Due again, but since long before the mark, as a lease that ran out would leave it.
        await journal.finish(first, "w", Outcome.retry("again", at=time.time() - 3600))
        await journal.append(new, "k-new")
        recent = await journal.claim("w", 10, 60, recent_only=True)
        assert [c.delivery.delivery_id for c in recent] == [new.delivery_id]
        [swept] = await journal.claim("w", 10, 60)
        assert swept.delivery.delivery_id == old.delivery_id

    async def test_a_full_claim_that_filled_up_leaves_recent_claims_looking_at_all(
        self, journal: SqlJournal
    ) -> None:
        ds = [raw(str(i).encode()) for i in range(3)]
        for i, d in enumerate(ds):
            await journal.append(d, f"k{i}")
        claims = await journal.claim("w", 3, 60)
        for c in claims:  # all three due since long ago
            await journal.finish(c, "w", Outcome.retry("again", at=time.time() - 3600))
        assert len(await journal.claim("w", 1, 60)) == 1  # filled up: older ones may wait
        rest = await journal.claim("w", 10, 60, recent_only=True)
        assert len(rest) == 2

    async def test_a_claim_takes_the_oldest_bodies_within_its_byte_budget(
        self, journal: SqlJournal
    ) -> None:
        ds = [raw(b"x" * 100) for _ in range(4)]
        for i, d in enumerate(ds):
            await journal.append(d, f"k{i}")
        two = await journal.claim("w", 10, 60, max_bytes=250)
        assert [len(c.delivery.body) for c in two] == [100, 100]
        # A body larger than what is left of the budget still goes, alone.
        [one] = await journal.claim("w", 10, 60, max_bytes=1)
        [last] = await journal.claim("w", 10, 60, max_bytes=100)
        assert await journal.claim("w", 10, 60, max_bytes=1000) == []
        claimed = [c.delivery.delivery_id for c in [*two, one, last]]
        assert sorted(claimed) == sorted(d.delivery_id for d in ds)

    async def test_a_claim_cut_by_its_budget_leaves_recent_claims_looking_at_all(
        self, journal: SqlJournal
    ) -> None:
        for i in range(3):
            await journal.append(raw(b"x" * 100), f"k{i}")
        for c in await journal.claim("w", 10, 60):  # all three due since long ago
            await journal.finish(c, "w", Outcome.retry("again", at=time.time() - 3600))
        # Fewer than the limit, yet not every due delivery: the budget cut it short.
        assert len(await journal.claim("w", 10, 60, max_bytes=150)) == 1
        assert len(await journal.claim("w", 10, 60, recent_only=True)) == 2

    async def test_a_recent_send_claim_looks_only_since_the_sinks_last_full_one(
        self, journal: SqlJournal
    ) -> None:
        old, _ = await routed(journal, ["s", "t"])
        [first] = await journal.claim_sends("w", {"s": 10}, 60)  # saw all of s: marked
        await journal.finish_send(first, "w", Outcome.retry("again", at=time.time() - 3600))
        new, _ = await routed(journal, ["s", "t"])
        recent = await journal.claim_sends("w", {"s": 10, "t": 10}, 60, recent_only={"s", "t"})
        # s looks only since its mark; t has none yet, so it looks at all.
        assert sorted((c.sink, c.delivery_id) for c in recent) == sorted(
            [("s", new.delivery_id), ("t", old.delivery_id), ("t", new.delivery_id)]
        )
        [swept] = await journal.claim_sends("w", {"s": 10}, 60)
        assert (swept.sink, swept.delivery_id) == ("s", old.delivery_id)

    async def test_a_send_claim_that_filled_up_or_met_a_stopped_sink_leaves_no_mark(
        self, journal: SqlJournal
    ) -> None:
        for _ in range(3):
            await routed(journal, ["s"])
        for c in await journal.claim_sends("w", {"s": 10}, 60):  # all three due long ago
            await journal.finish_send(c, "w", Outcome.retry("again", at=time.time() - 3600))
        assert len(await journal.claim_sends("w", {"s": 1}, 60)) == 1  # filled up
        assert len(await journal.claim_sends("w", {"s": 10}, 60, recent_only={"s"})) == 2
        d, _ = await routed(journal, ["h"])
        [h] = await journal.claim_sends("w", {"h": 10}, 60)  # saw all of h: marked
        await journal.finish_send(h, "w", Outcome.retry("again", at=time.time() - 3600))
        await journal.stop_sink("h", "maintenance")
        assert await journal.claim_sends("w", {"h": 10}, 60) == []  # saw nothing: no mark
        assert await journal.resume_sink("h") is True
        [again] = await journal.claim_sends("w", {"h": 10}, 60, recent_only={"h"})
        assert again.delivery_id == d.delivery_id

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

    async def test_routings_written_together_each_get_their_own_sends(
        self, journal: SqlJournal
    ) -> None:
        for i in range(5):
            await journal.append(raw(str(i).encode()), f"k{i}")
        claims = await journal.claim("w", 5, 60)
        lost, dropped, *fanned = claims
        await execute(
            journal,
            "UPDATE deliveries SET lease_owner = 'v' WHERE id = ?",
            lost.delivery.delivery_id,
        )
        routes = [
            journal.route(lost, "w", [(event(lost.delivery), "a")], {"a"}, 60),
            journal.route(dropped, "w", [], set(), 60),
            *(
                journal.route(c, "w", [(event(c.delivery, n), "a") for n in range(2)], {"a"}, 60)
                for c in fanned
            ),
        ]
        lost_sends, dropped_sends, *fanned_sends = await asyncio.gather(*routes)
        assert (lost_sends, dropped_sends) == ([], [])
        for claim, sends in zip(fanned, fanned_sends, strict=True):
            d = claim.delivery
            assert sorted((s.delivery_id, s.event_id, s.sink) for s in sends) == [
                (d.delivery_id, d.event_id(0), "a"),
                (d.delivery_id, d.event_id(1), "a"),
            ]
            assert {s.event_id: s.event for s in sends} == {
                d.event_id(n): event(d, n) for n in range(2)
            }
        states = [await state_of(journal, c.delivery.delivery_id) for c in claims]
        assert states == [
            DeliveryState.PENDING,  # still someone else's to route
            DeliveryState.DONE,
            *[DeliveryState.PENDING] * 3,  # their sends wait
        ]
        assert await journal.sends(lost.delivery.delivery_id) == []

    async def test_a_routing_that_cannot_be_written_fails_alone(self, journal: SqlJournal) -> None:
        for i in range(2):
            await journal.append(raw(str(i).encode()), f"k{i}")
        bad, good = await journal.claim("w", 2, 60)
        e = event(bad.delivery)
        # A value no driver can bind, in the batch with a good routing and an append.
        broken = RouteItem(bad, "w", {e.event_id: (0, e, object())}, [(e.event_id, "a")], {"a"}, 60)  # type: ignore[dict-item]
        results = await asyncio.gather(
            journal._bulk("route", broken),
            journal.route(good, "w", [(event(good.delivery), "a")], {"a"}, 60),
            journal.append(raw(b"later"), "k-later"),
            return_exceptions=True,
        )
        assert isinstance(results[0], Exception)
        assert [s.event_id for s in results[1]] == [good.delivery.event_id(0)]  # type: ignore[union-attr]
        assert results[2] == AppendResult(results[2].delivery_id, duplicate=False)  # type: ignore[union-attr]
        assert await journal.sends(bad.delivery.delivery_id) == []
        assert await state_of(journal, good.delivery.delivery_id) is DeliveryState.PENDING

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
