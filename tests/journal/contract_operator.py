"""The operator's event queries and actions in the journal contract: listing with every filter
and keyset paging, one event with its sends and attempts, replay, retry now, purge, and the
record of who did what."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.event import Event, RawDelivery
from receiver.journal import Outcome, SendClaim, SendState, SqlJournal
from receiver.journal.views import EventFilter
from tests.journal.helpers import FUTURE, accepted, raw, rows


def _event(d: RawDelivery, index: int = 0, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "vendor": "smartdocumentor",
        "kind": "text_document",
        "task_id": "t1",
        **fields,
    }
    return Event(
        event_id=d.event_id(index),
        delivery_id=d.delivery_id,
        route=d.route,
        received_at=d.received_at,
        payload={"n": index},
        **values,
    )


async def _routed(
    journal: SqlJournal,
    sinks: Sequence[str],
    *,
    lease: Sequence[str] = (),
    route: str = "r",
    received_at: datetime | None = None,
    events: int = 1,
    **fields: Any,
) -> tuple[RawDelivery, list[SendClaim]]:
    """A delivery routed as ``events`` events (with ``fields``) to each of ``sinks``."""
    d = raw(route=route, received_at=received_at)
    if received_at is not None:
        # As ingest makes them: the id begins with the milliseconds of its receipt.
        ms = int(received_at.timestamp() * 1000)
        d = d.model_copy(update={"delivery_id": f"{ms:012x}{d.delivery_id[12:]}"})
    claim = await accepted(journal, d)
    made = [_event(d, i, **fields) for i in range(events)]
    pairs = [(e, s) for e in made for s in sinks]
    sends = await journal.route(claim, "w", pairs, set(lease), 60)
    return d, sorted(sends, key=lambda s: (s.event_id, s.sink))


async def _ids(journal: SqlJournal, **where: Any) -> list[str]:
    """The ids of the events ``where`` selects, newest first (ids made within one millisecond
    sort in no particular order: compare those as sets)."""
    page = await journal.events(EventFilter(**where), 1000)
    assert page.next_cursor is None
    assert await journal.count_events(EventFilter(**where)) == len(page.items)
    return [row.event_id or row.delivery_id for row in page.items]


def _at(received_at: datetime | None, d: RawDelivery) -> RawDelivery:
    if received_at is None:
        return d
    # As ingest makes them: the id begins with the milliseconds of its receipt.
    ms = int(received_at.timestamp() * 1000)
    return d.model_copy(update={"delivery_id": f"{ms:012x}{d.delivery_id[12:]}"})


async def _unrouted(
    journal: SqlJournal,
    how: str,
    *,
    subject: str | None = None,
    route: str = "r",
    received_at: datetime | None = None,
) -> RawDelivery:
    """A delivery left without events: ``pending`` (not routed yet), ``dead`` (not
    routable) or ``dropped`` (routed, every event dropped by the rules)."""
    d = _at(received_at, raw(route=route, received_at=received_at))
    if how == "pending":
        await journal.append(d, d.delivery_id, subject)
        return d
    await journal.append(d, d.delivery_id, subject)
    claims = await journal.claim("w", 1000, 60)
    await journal.release("w", [c.delivery.delivery_id for c in claims if c.delivery != d])
    [claim] = [c for c in claims if c.delivery == d]
    if how == "dead":
        await journal.finish(claim, "w", Outcome.dead("cannot normalize: taskId is missing"))
    else:
        await journal.route(claim, "w", [], set(), 60)
    return d


@pytest.mark.anyio
class OperatorContract:
    """What the operator service (CLI and HTTP API) relies on."""

    # ------------------------------------------------------------------ listing

    async def test_events_list_newest_first_with_their_fields_and_sends(
        self, journal: SqlJournal
    ) -> None:
        old, _ = await _routed(journal, ["a"], received_at=datetime(2024, 5, 1, tzinfo=UTC))
        d, _ = await _routed(
            journal, ["a", "b"], events=2, workspace_id="41", batch_id="b7", display_name="X.pdf"
        )
        page = await journal.events(EventFilter(), 10)
        assert [r.event_id for r in page.items] == [d.event_id(1), d.event_id(0), old.event_id(0)]
        row = page.items[0]
        assert (row.delivery_id, row.route, row.vendor, row.kind) == (
            d.delivery_id,
            "r",
            "smartdocumentor",
            "text_document",
        )
        assert (row.task_id, row.batch_id, row.workspace_id, row.display_name) == (
            "t1",
            "b7",
            "41",
            "X.pdf",
        )
        assert row.received_at == d.received_at
        assert row.state == "pending"
        assert dict(row.sends) == {"a": SendState.PENDING, "b": SendState.PENDING}

    async def test_every_filter_narrows_the_list(self, journal: SqlJournal) -> None:
        one, _ = await _routed(
            journal, ["a"], route="r1", task_id="t-1", batch_id="b-1", workspace_id="w1",
            external_id="x-1", display_name="Invoice 100%_final.PDF",
        )  # fmt: skip
        two, _ = await _routed(
            journal, ["b"], route="r2", vendor="other", kind="transcript", task_id="t-2",
            display_name="invoice 2",
        )  # fmt: skip
        first, second = one.event_id(0), two.event_id(0)
        assert await _ids(journal, route="r1") == [first]
        assert await _ids(journal, vendor="other") == [second]
        assert await _ids(journal, kind="transcript") == [second]
        assert await _ids(journal, sink="a") == [first]
        assert await _ids(journal, task_id="t-2") == [second]
        assert await _ids(journal, batch_id="b-1") == [first]
        assert await _ids(journal, workspace_id="w1") == [first]
        assert await _ids(journal, external_id="x-1") == [first]
        assert set(await _ids(journal, text="INVOICE")) == {first, second}
        # % and _ are text to find, not wildcards.
        assert await _ids(journal, text="100%_f") == [first]
        assert await _ids(journal, text="0%x") == []
        assert await _ids(journal, route="r1", task_id="t-2") == []

    async def test_a_time_range_is_by_receipt(self, journal: SqlJournal) -> None:
        may = datetime(2024, 5, 1, 12, tzinfo=UTC)
        early, _ = await _routed(journal, ["a"], received_at=may - timedelta(days=1))
        await _routed(journal, ["a"], received_at=may)
        assert await _ids(journal, until=may) == [early.event_id(0)]
        assert len(await _ids(journal, since=may)) == 1
        assert early.event_id(0) not in await _ids(journal, since=may)
        assert await _ids(journal, since=may - timedelta(days=2), until=may) == [early.event_id(0)]

    async def test_states_of_events_and_of_their_send_to_one_sink(
        self, journal: SqlJournal
    ) -> None:
        delivered, (da, db) = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(da, "w", Outcome.delivered())
        await journal.finish_send(db, "w", Outcome.delivered())
        dead, (xa, xb) = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(xa, "w", Outcome.dead("refused"))
        await journal.finish_send(xb, "w", Outcome.delivered())
        waiting, (wa, wb) = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(wa, "w", Outcome.dead("refused"))
        await journal.finish_send(wb, "w", Outcome.retry("timeout", FUTURE))
        ok, bad, busy = delivered.event_id(0), dead.event_id(0), waiting.event_id(0)

        assert await _ids(journal, states=(SendState.DELIVERED,)) == [ok]
        assert await _ids(journal, states=(SendState.DEAD,)) == [bad]
        # Pending wins over dead: something of it is still on its way.
        assert await _ids(journal, states=(SendState.PENDING,)) == [busy]
        assert set(await _ids(journal, states=(SendState.PENDING, SendState.DEAD))) == {busy, bad}
        # With a sink, the state is that of the send to it: the dead letters of sink a.
        assert set(await _ids(journal, sink="a", states=(SendState.DEAD,))) == {busy, bad}
        assert set(await _ids(journal, sink="b", states=(SendState.DELIVERED,))) == {bad, ok}
        page = await journal.events(EventFilter(states=(SendState.DEAD,)), 10)
        assert [(r.state, dict(r.sends)) for r in page.items] == [
            (SendState.DEAD, {"a": SendState.DEAD, "b": SendState.DELIVERED})
        ]

    async def test_free_text_is_found_within_the_window_and_past_it(
        self, journal: SqlJournal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import receiver.journal.browse as browse

        monkeypatch.setattr(browse, "TEXT_WINDOW", 3)
        t = datetime(2025, 1, 1, tzinfo=UTC)
        names = ["Invoice A", "memo", "memo", "memo", "memo", "INVOICE B", "memo", "invoice C"]
        made = [
            (await _routed(journal, ["a"], display_name=n, received_at=t + timedelta(n_)))[0]
            for n_, n in enumerate(names)
        ]
        wanted = [made[i].event_id(0) for i in (7, 5, 0)]
        assert await _ids(journal, text="invoice") == wanted
        seen, cursor = [], None
        for _ in range(5):
            page = await journal.events(EventFilter(text="nvoic"), 1, cursor=cursor)
            seen += [r.event_id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == wanted
        assert await _ids(journal, text="invoice", until=t + timedelta(5)) == wanted[2:]
        assert await _ids(journal, text="memo", since=t + timedelta(2)) == [
            made[i].event_id(0) for i in (6, 4, 3, 2)
        ]

    async def test_free_text_finds_through_an_index_what_a_scan_finds(
        self, journal: SqlJournal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import receiver.journal.browse as browse

        monkeypatch.setattr(browse, "TEXT_WINDOW", 2)  # most matches lie past the window
        t = datetime(2025, 1, 1, tzinfo=UTC)
        names = [
            "Invoice 100%_final.PDF",
            "invoice 100x final",
            "a_b",
            "axb",
            "a%b",
            "ab",
            'quote "x" here',
            "ÉCOLE école",
            None,
            "back\\slash",
            "memo",
        ]
        made = [
            (await _routed(journal, ["a"], display_name=n, received_at=t + timedelta(i)))[0]
            for i, n in enumerate(names)
        ]
        await _routed(journal, ["a"], display_name="memo", task_id="gone", received_at=t)
        await journal.purge_task("gone", actor="dpo")
        terms = {
            "INVOICE 100": [1, 0],
            "100%_f": [0],
            "100%": [0],
            "0%x": [],
            "a_b": [2],
            "a%b": [4],
            "%": [4, 0],
            "_": [2, 0],
            "ab": [5],
            "b": [9, 5, 4, 3, 2],
            '"x"': [6],
            "école": [7],
            "\\sl": [9],
            "memo": [10],
            "nothing at all": [],
        }
        indexed = {term: await _ids(journal, text=term) for term in terms}
        walked, cursor = [], None
        for _ in range(5):
            page = await journal.events(EventFilter(text="nvoice"), 1, cursor=cursor)
            walked += [r.event_id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        monkeypatch.setattr(browse, "_text_match", lambda tx, text: None)
        scanned = {term: await _ids(journal, text=term) for term in terms}
        assert indexed == scanned
        assert indexed == {t: [made[i].event_id(0) for i in want] for t, want in terms.items()}
        assert walked == [made[i].event_id(0) for i in (1, 0)]

    async def test_a_cursor_walks_every_event_once_and_an_offset_skips(
        self, journal: SqlJournal
    ) -> None:
        for _ in range(4):
            await _routed(journal, ["a"], events=3)
        everything = await _ids(journal)
        assert len(everything) == 12
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = await journal.events(EventFilter(), 5, cursor=cursor)
            seen += [r.event_id or r.delivery_id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == everything
        page = await journal.events(EventFilter(), 5, offset=10)
        assert [r.event_id for r in page.items] == everything[10:]
        assert page.next_cursor is None
        with pytest.raises(ValueError, match="cursor"):
            await journal.events(EventFilter(), 5, cursor="nonsense")

    # ------------------------------------------------------------------ the overview

    async def test_activity_counts_receipts_deliveries_and_failures_per_interval(
        self, journal: SqlJournal
    ) -> None:
        now = datetime.now(UTC)
        await _routed(journal, ["a"], received_at=now - timedelta(days=2))
        d, (to_a, to_b) = await _routed(journal, ["a", "b"], lease=["a", "b"], received_at=now)
        await journal.finish_send(to_a, "w", Outcome.retry("503 from a", 0))
        [again] = await journal.claim_sends("w", {"a": 1}, 60)
        await journal.finish_send(again, "w", Outcome.delivered())
        await journal.finish_send(to_b, "w", Outcome.dead("404", code="gone_for_good"))

        buckets = await journal.activity(now - timedelta(hours=1), 60)
        # An hour of minutes, the first and last partly: 61 or 62 intervals, oldest first.
        assert len(buckets) in (61, 62)
        assert buckets == sorted(buckets, key=lambda b: b.start)
        assert all(b.start.second == 0 and b.start.tzinfo is not None for b in buckets)
        totals = [sum(getattr(b, name) for b in buckets) for name in ("received", "delivered")]
        assert totals == [1, 1]  # the one two days ago is outside the window
        assert sum(b.failed for b in buckets) == 2  # a retry and a dead end
        [busy] = [b for b in buckets if b.received]
        assert busy.start <= d.received_at < busy.start + timedelta(minutes=1)
        days = await journal.activity(now - timedelta(days=3), 3600)
        assert sum(b.received for b in days) == 2
        with pytest.raises(ValueError, match="bucket_seconds"):
            await journal.activity(now, 0)

    async def test_batches_newest_first_with_their_events_by_state(
        self, journal: SqlJournal
    ) -> None:
        now = datetime.now(UTC)
        await _routed(journal, ["a"], received_at=now - timedelta(days=9), batch_id="ancient")
        _, [old] = await _routed(
            journal, ["a"], lease=["a"], received_at=now - timedelta(minutes=5), batch_id="b-1"
        )
        await journal.finish_send(old, "w", Outcome.delivered())
        await _routed(journal, ["a"], events=2, received_at=now, batch_id="b-2", vendor="v2")
        await _routed(journal, ["a"], received_at=now, batch_id=None)
        await _routed(journal, ["a"], received_at=now - timedelta(minutes=1), batch_id="b-1")

        found = await journal.batches(now - timedelta(days=1))
        assert [(b.batch_id, b.vendor) for b in found] == [
            ("b-2", "v2"),
            ("b-1", "smartdocumentor"),
        ]
        assert dict(found[0].events) == {
            SendState.PENDING: 2, SendState.DELIVERED: 0, SendState.DEAD: 0,
        }  # fmt: skip
        assert dict(found[1].events)[SendState.DELIVERED] == 1
        assert dict(found[1].events)[SendState.PENDING] == 1
        assert found[1].last_received_at > now - timedelta(minutes=2)
        assert [b.batch_id for b in await journal.batches(now - timedelta(days=1), 1)] == ["b-2"]

    # ------------------------------------------------------------------ one event

    async def test_detail_by_either_id_with_every_attempt(self, journal: SqlJournal) -> None:
        d, sends = await _routed(journal, ["a", "b"], lease=["a", "b"], events=2)
        first_a, first_b = sends[0], sends[1]
        await journal.finish_send(first_a, "w", Outcome.retry("503 from a", 0))
        [again] = await journal.claim_sends("w", {"a": 1}, 60)
        await journal.finish_send(again, "w", Outcome.delivered())
        await journal.finish_send(first_b, "w", Outcome.dead("404", code="file_deleted"))

        whole = await journal.detail(d.delivery_id)
        assert whole is not None
        assert whole.raw == d
        assert whole.event_id is None
        assert [e.event_id for e in whole.events] == [d.event_id(0), d.event_id(1)]
        assert whole.events[0].event == _event(d, 0)
        [routing] = whole.routing_attempts
        assert routing.outcome == "routed"
        sends_of_first = {s.info.sink: s for s in whole.events[0].sends}
        a = sends_of_first["a"]
        assert [(t.number, t.outcome, t.error) for t in a.attempts] == [
            (1, "retry", "503 from a"),
            (2, "delivered", None),
        ]
        assert all(t.duration_seconds is not None and t.duration_seconds >= 0 for t in a.attempts)
        assert a.info.state is SendState.DELIVERED
        b = sends_of_first["b"]
        assert (b.info.state, b.info.code, [t.outcome for t in b.attempts]) == (
            SendState.DEAD,
            "file_deleted",
            ["dead"],
        )

        one = await journal.detail(d.event_id(1))
        assert one is not None
        assert (one.delivery.delivery_id, one.event_id) == (d.delivery_id, d.event_id(1))
        assert [e.event_id for e in one.events] == [d.event_id(1)]
        assert await journal.detail("nothing-here") is None

    async def test_detail_of_a_delivery_not_routed_yet(self, journal: SqlJournal) -> None:
        d = raw()
        await journal.append(d, "k")
        found = await journal.detail(d.delivery_id)
        assert found is not None
        assert (found.raw, found.events, found.routing_attempts) == (d, [], [])

    # ------------------------------------------------------------------ replay

    async def test_replay_sends_a_delivered_event_again_keeping_its_attempts(
        self, journal: SqlJournal
    ) -> None:
        d, [a, b] = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(a, "w", Outcome.delivered())
        await journal.finish_send(b, "w", Outcome.dead("refused"))

        result = await journal.replay(d.event_id(0), sink="a", actor="ops@example")
        assert result is not None
        assert (result.delivery_id, result.event_ids) == (d.delivery_id, [d.event_id(0)])
        assert (result.requeued, result.created, result.in_flight, result.rerouted) == (
            1,
            0,
            0,
            False,
        )
        states = {s.sink: (s.state, s.attempts) for s in await journal.sends(d.delivery_id)}
        assert states == {"a": (SendState.PENDING, 0), "b": (SendState.DEAD, 1)}
        [claim] = await journal.claim_sends("w", {"a": 5, "b": 5}, 60)
        assert (claim.sink, claim.attempt, claim.event) == ("a", 1, _event(d))
        await journal.finish_send(claim, "w", Outcome.delivered())

        detail = await journal.detail(d.delivery_id)
        assert detail is not None
        sends = {s.info.sink: s for s in detail.events[0].sends}
        assert [t.outcome for t in sends["a"].attempts] == ["delivered", "delivered"]
        assert sends["a"].attempts[0].started_at <= sends["a"].attempts[1].started_at
        [action] = detail.actions
        assert (action.actor, action.action, action.event_id, action.sink) == (
            "ops@example",
            "replay",
            d.event_id(0),
            "a",
        )

    async def test_replay_keeps_the_order_of_several_earlier_attempts(
        self, journal: SqlJournal
    ) -> None:
        # SQLite's UPDATE sees its own earlier rows: the shift must not grow as rows move.
        d, [first] = await _routed(journal, ["a"], lease=["a"])
        await journal.finish_send(first, "w", Outcome.retry("500", 0))
        [second] = await journal.claim_sends("w", {"a": 1}, 60)
        await journal.finish_send(second, "w", Outcome.retry("502", 0))
        [third] = await journal.claim_sends("w", {"a": 1}, 60)
        await journal.finish_send(third, "w", Outcome.dead("503"))
        for replay_number in (1, 2):
            await journal.replay(d.event_id(0), sink="a", actor="ops")
            [claim] = await journal.claim_sends("w", {"a": 1}, 60)
            await journal.finish_send(claim, "w", Outcome.delivered())
            detail = await journal.detail(d.delivery_id)
            assert detail is not None
            attempts = detail.events[0].sends[0].attempts
            expected: list[tuple[str, str | None]] = [("retry", "500"), ("retry", "502")]
            expected += [("dead", "503")]
            expected += [("delivered", None)] * replay_number
            assert [(t.outcome, t.error) for t in attempts] == expected
            assert [t.number for t in attempts] == list(range(1, len(expected) + 1))

    async def test_replay_of_a_delivery_to_all_and_to_a_new_sink(self, journal: SqlJournal) -> None:
        d, sends = await _routed(journal, ["a"], lease=["a"], events=2)
        for send in sends:
            await journal.finish_send(send, "w", Outcome.delivered())
        everything = await journal.replay(d.delivery_id, actor="ops")
        assert everything is not None
        assert (everything.event_ids, everything.requeued) == (
            [d.event_id(0), d.event_id(1)],
            2,
        )
        extra = await journal.replay(d.delivery_id, sink="new", actor="ops")
        assert extra is not None
        assert (extra.requeued, extra.created) == (0, 2)
        pending = [(s.event_id, s.sink) for s in await journal.sends(d.delivery_id)]
        assert sorted(pending) == [
            (d.event_id(0), "a"),
            (d.event_id(0), "new"),
            (d.event_id(1), "a"),
            (d.event_id(1), "new"),
        ]
        assert await journal.replay("no-such-id", actor="ops") is None

    async def test_replay_leaves_a_send_under_an_attempt_alone(self, journal: SqlJournal) -> None:
        d, [a] = await _routed(journal, ["a"], lease=["a"])
        result = await journal.replay(d.delivery_id, actor="ops")
        assert result is not None
        assert (result.requeued, result.in_flight) == (0, 1)
        await journal.finish_send(a, "w", Outcome.delivered())
        [send] = await journal.sends(d.delivery_id)
        assert send.state is SendState.DELIVERED

    async def test_replay_routes_again_a_delivery_that_has_no_events(
        self, journal: SqlJournal
    ) -> None:
        claim = await accepted(journal)
        await journal.finish(claim, "w", Outcome.dead("cannot normalize"))
        result = await journal.replay(claim.delivery.delivery_id, actor="ops")
        assert result is not None and result.rerouted
        [again] = await journal.claim("w", 5, 60)
        assert (again.delivery.delivery_id, again.attempt) == (claim.delivery.delivery_id, 1)

    # ------------------------------------------------------------------ retry now, purge

    async def test_retry_now_makes_a_waiting_send_due(self, journal: SqlJournal) -> None:
        d, [a, b] = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(a, "w", Outcome.retry("timeout", FUTURE))
        await journal.finish_send(b, "w", Outcome.delivered())
        assert await journal.claim_sends("w", {"a": 5}, 60) == []
        now = await journal.retry_now(a.send_id, actor="ops")
        assert now is not None
        assert (now.due_now, now.sink, now.delivery_id) == (True, "a", d.delivery_id)
        [claim] = await journal.claim_sends("w", {"a": 5}, 60)
        assert (claim.send_id, claim.attempt) == (a.send_id, 2)
        done = await journal.retry_now(b.send_id, actor="ops")
        assert done is not None
        assert (done.due_now, done.state) == (False, SendState.DELIVERED)
        assert await journal.retry_now(10**9, actor="ops") is None
        assert [x.action for x in await journal.actions()] == ["retry-now"]

    async def test_purge_erases_a_task_and_says_where_copies_live(
        self, journal: SqlJournal
    ) -> None:
        gone, [a, b] = await _routed(journal, ["a", "b"], lease=["a", "b"], task_id="secret")
        await journal.finish_send(a, "w", Outcome.delivered())
        await journal.finish_send(b, "w", Outcome.dead("refused"))
        kept, _ = await _routed(journal, ["a"], task_id="other")

        result = await journal.purge_task("secret", actor="dpo")
        assert (result.deliveries, result.events, result.sends) == ([gone.delivery_id], 1, 2)
        assert (result.attempts, result.unrouted, result.payload_bytes) == (3, 0, len(gone.body))
        assert dict(result.delivered_to) == {"a": 1}
        assert await journal.get_raw(gone.delivery_id) is None
        assert await journal.detail(gone.event_id(0)) is None
        assert await rows(
            journal, "SELECT count(*) FROM send_attempts WHERE send_id = ?", a.send_id
        ) == [(0,)]
        assert await _ids(journal) == [kept.event_id(0)]
        [action] = await journal.actions()
        assert (action.actor, action.action, dict(action.detail)["task_id"]) == (
            "dpo",
            "purge",
            "secret",
        )
        again = await journal.purge_task("secret", actor="dpo")
        assert (again.deliveries, again.events) == ([], 0)

    async def test_purge_erases_the_deliveries_of_a_task_that_were_never_routed(
        self, journal: SqlJournal
    ) -> None:
        routed_one, _ = await _routed(journal, ["a"], task_id="42")
        dead = await _unrouted(journal, "dead", subject="smartdocumentor:task:42")
        waiting = await _unrouted(journal, "pending", subject="smartdocumentor:task:42")
        dropped = await _unrouted(journal, "dropped", subject="smartdocumentor:task:42:missing")
        other = await _unrouted(journal, "dead", subject="smartdocumentor:task:421")
        like = await _unrouted(journal, "dead", subject="smartdocumentor:task:4_")

        result = await journal.purge_task("42", actor="dpo")
        erased = [routed_one, dead, waiting, dropped]
        assert result.deliveries == sorted(d.delivery_id for d in erased)
        assert (result.events, result.sends, result.unrouted) == (1, 1, 3)
        assert result.attempts == 3  # the routing of three: routed, dead, dropped
        assert result.payload_bytes == sum(len(d.body) for d in erased)
        for d in erased:
            assert await journal.get_raw(d.delivery_id) is None
        assert set(await _ids(journal)) == {other.delivery_id, like.delivery_id}
        [action] = await journal.actions()
        assert dict(action.detail)["unrouted"] == 3

    async def test_deliveries_without_events_are_listed_by_their_state_and_task(
        self, journal: SqlJournal
    ) -> None:
        t = datetime(2025, 3, 1, tzinfo=UTC)
        one, _ = await _routed(journal, ["a"], task_id="7", display_name="seven.pdf", received_at=t)
        dead = await _unrouted(
            journal, "dead", subject="smartdocumentor:task:7", received_at=t + timedelta(1)
        )
        dropped = await _unrouted(journal, "dropped", route="r2", received_at=t + timedelta(2))
        waiting = await _unrouted(
            journal, "pending", subject="smartdocumentor:task:8", received_at=t + timedelta(3)
        )
        everything = await _ids(journal)
        assert everything == [
            waiting.delivery_id,
            dropped.delivery_id,
            dead.delivery_id,
            one.event_id(0),
        ]
        page = await journal.events(EventFilter(), 10)
        states = {r.delivery_id: (r.event_id, r.state, r.task_id) for r in page.items}
        assert states[dead.delivery_id] == (None, "dead", "7")
        assert states[dropped.delivery_id] == (None, "dropped", None)
        assert states[waiting.delivery_id] == (None, "pending", "8")
        row = next(r for r in page.items if r.delivery_id == dead.delivery_id)
        assert row.last_error == "cannot normalize: taskId is missing"

        assert await _ids(journal, task_id="7") == [dead.delivery_id, one.event_id(0)]
        assert await _ids(journal, states=(SendState.DEAD,)) == [dead.delivery_id]
        assert await _ids(journal, dropped=True) == [dropped.delivery_id]
        assert await _ids(journal, states=(SendState.PENDING,), dropped=True) == [
            waiting.delivery_id,
            dropped.delivery_id,
            one.event_id(0),
        ]
        assert await _ids(journal, route="r2") == [dropped.delivery_id]
        # Filters only an event answers leave them out.
        assert await _ids(journal, text="seven") == [one.event_id(0)]
        assert await _ids(journal, vendor="smartdocumentor") == [one.event_id(0)]

        # Paged one row at a time, by cursor and by offset: each row once, in order.
        seen, cursor = [], None
        for _ in range(10):
            step = await journal.events(EventFilter(), 1, cursor=cursor)
            seen += [r.event_id or r.delivery_id for r in step.items]
            cursor = step.next_cursor
            if cursor is None:
                break
        assert seen == everything
        by_offset = [(await journal.events(EventFilter(), 1, offset=n)).items[0] for n in range(4)]
        assert [r.event_id or r.delivery_id for r in by_offset] == everything

        # Routed again, the dead one leaves the unrouted rows; replayed in bulk, the dropped
        # one is routed again too.
        assert await journal.replay_events([], actor="ops", delivery_ids=[dropped.delivery_id]) == (
            0,
            0,
            0,
            1,
        )
        [claim] = [c for c in await journal.claim("w", 10, 60) if c.delivery == dropped]
        assert claim.attempt == 1

    async def test_actions_are_recorded_newest_first(self, journal: SqlJournal) -> None:
        await journal.record_action("ops", "stop-sink", sink="a", detail={"reason": "maint"})
        await journal.record_action("ops", "resume-sink", sink="a")
        found = await journal.actions()
        assert [(x.action, x.sink, dict(x.detail)) for x in found] == [
            ("resume-sink", "a", {}),
            ("stop-sink", "a", {"reason": "maint"}),
        ]

    # ------------------------------------------------------------------ retention of dead letters

    async def test_prune_dead_deletes_only_old_dead_deliveries(self, journal: SqlJournal) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        unroutable = await accepted(journal, raw(b"u", received_at=old))
        await journal.finish(unroutable, "w", Outcome.dead("cannot normalize"))
        dead_send, [a] = await _routed(journal, ["a"], lease=["a"], received_at=old)
        await journal.finish_send(a, "w", Outcome.dead("refused"))
        waiting, [wa, wb] = await _routed(journal, ["a", "b"], lease=["a", "b"], received_at=old)
        await journal.finish_send(wa, "w", Outcome.dead("refused"))
        await journal.finish_send(wb, "w", Outcome.retry("timeout", FUTURE))
        done, [da] = await _routed(journal, ["a"], lease=["a"], received_at=old)
        await journal.finish_send(da, "w", Outcome.delivered())
        fresh, [fa] = await _routed(journal, ["a"], lease=["a"])
        await journal.finish_send(fa, "w", Outcome.dead("refused"))

        cutoff = datetime(2021, 1, 1, tzinfo=UTC).timestamp()
        assert await journal.prune_dead(cutoff) == 2
        for gone in (unroutable.delivery.delivery_id, dead_send.delivery_id):
            assert await journal.get_raw(gone) is None
        assert await rows(journal, "SELECT 1 FROM send_attempts WHERE send_id = ?", a.send_id) == []
        assert await journal.detail(dead_send.event_id(0)) is None
        for kept in (waiting, done, fresh):
            assert await journal.get(kept.delivery_id) is not None
        assert await journal.prune_dead(cutoff) == 0

    async def test_an_event_dead_at_two_sinks_is_listed_and_counted_once(
        self, journal: SqlJournal
    ) -> None:
        d, [a, b] = await _routed(journal, ["a", "b"], lease=["a", "b"])
        await journal.finish_send(a, "w", Outcome.dead("refused"))
        await journal.finish_send(b, "w", Outcome.dead("refused"))
        pending, [p] = await _routed(journal, ["a"], lease=["a"])
        await journal.finish_send(p, "w", Outcome.retry("later", FUTURE))
        assert await _ids(journal, states=(SendState.DEAD,)) == [d.event_id(0)]
        both = (SendState.DEAD, SendState.PENDING)
        assert set(await _ids(journal, states=both)) == {d.event_id(0), pending.event_id(0)}
        assert await _ids(journal, sink="b", states=(SendState.DEAD,)) == [d.event_id(0)]

    async def test_a_batch_counts_its_events_by_state(self, journal: SqlJournal) -> None:
        _, [a] = await _routed(journal, ["a"], lease=["a"], batch_id="b-9")
        await journal.finish_send(a, "w", Outcome.delivered())
        _, [x, y] = await _routed(journal, ["a", "b"], lease=["a", "b"], batch_id="b-9")
        await journal.finish_send(x, "w", Outcome.dead("refused"))
        await journal.finish_send(y, "w", Outcome.delivered())
        await _routed(journal, ["a"], batch_id="b-9")
        await _routed(journal, ["a"], batch_id="other")
        assert await journal.batch("b-9") == {
            SendState.PENDING: 1,
            SendState.DELIVERED: 1,
            SendState.DEAD: 1,
        }
        assert sum((await journal.batch("none-such")).values()) == 0

    async def test_replay_events_replays_a_chunk_in_one_go(self, journal: SqlJournal) -> None:
        one, [a1] = await _routed(journal, ["a"], lease=["a"])
        two, [a2] = await _routed(journal, ["a"], lease=["a"])
        await journal.finish_send(a1, "w", Outcome.delivered())
        await journal.finish_send(a2, "w", Outcome.dead("refused"))
        ids = [one.event_id(0), two.event_id(0), "no-such-event"]
        assert await journal.replay_events(ids, actor="ops", detail={"bulk": "j1"}) == (2, 0, 0, 0)
        assert await journal.replay_events(ids[:1], sink="b", actor="ops") == (0, 1, 0, 0)
        states = [s.state for d in (one, two) for s in await journal.sends(d.delivery_id)]
        assert states == [SendState.PENDING, SendState.PENDING, SendState.PENDING]
        detail = await journal.detail(two.delivery_id)
        assert detail is not None
        assert [(x.action, dict(x.detail)) for x in detail.actions] == [("replay", {"bulk": "j1"})]
        assert await journal.replay_events([], actor="ops") == (0, 0, 0, 0)
