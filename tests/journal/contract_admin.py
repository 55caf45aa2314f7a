"""The operator's half of the journal contract: stopped sinks, overall states, the error an
operator sees, requeue, renormalize, prune, and health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from receiver.journal import (
    DeliveryState,
    JournalUnavailable,
    Outcome,
    SendState,
    SqlJournal,
)
from tests.journal.helpers import (
    FUTURE,
    OLD,
    accepted,
    event,
    raw,
    routed,
    rows,
    state_of,
)


@pytest.mark.anyio
class AdminContract:
    """What ``hookdock status``, ``deliveries``, ``sinks``, ``retry`` and ``prune`` rely on."""

    # ------------------------------------------------------------------ how far behind

    async def test_sink_backlog_counts_pending_due_and_the_oldest_receipt(
        self, journal: SqlJournal
    ) -> None:
        assert await journal.sink_backlog() == {}
        oldest = datetime.now(UTC) - timedelta(minutes=5)
        await routed(journal, ["a", "b"], received_at=oldest)
        _, [later] = await routed(journal, ["a"], ["a"])
        await journal.finish_send(later, "w", Outcome.retry("busy", at=FUTURE))
        _, [done] = await routed(journal, ["c"], ["c"])
        await journal.finish_send(done, "w", Outcome.delivered())
        await journal.stop_sink("b", "maintenance")
        backlog = await journal.sink_backlog()
        assert sorted(backlog) == ["a", "b"], "nothing pending for c"
        assert (backlog["a"].pending, backlog["a"].due) == (2, 1), "one waits for its retry"
        assert (backlog["b"].pending, backlog["b"].due) == (1, 0), "b is stopped"
        assert backlog["a"].oldest_received_at == oldest
        assert 299 < backlog["a"].oldest_seconds(datetime.now(UTC)) < 400

    async def test_recent_lags_measure_receipt_to_delivery_per_sink(
        self, journal: SqlJournal
    ) -> None:
        assert await journal.recent_lags() == {}
        received = datetime.now(UTC) - timedelta(seconds=30)
        for _ in range(3):
            _, sends = await routed(journal, ["a", "b"], ["a", "b"], received_at=received)
            for send in sends:
                await journal.finish_send(send, "w", Outcome.delivered())
        await routed(journal, ["a"], ["a"])  # leased, not delivered: no lag yet
        lags = await journal.recent_lags()
        assert sorted(lags) == ["a", "b"]
        assert all(len(v) == 3 and all(29 < s < 90 for s in v) for v in lags.values())
        assert sum(len(v) for v in (await journal.recent_lags(limit=4)).values()) == 4

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
