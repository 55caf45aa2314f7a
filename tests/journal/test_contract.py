"""The journal contract on every backend (``conftest.BACKENDS``), and what a durable one keeps
across journals: a reopen, and a second journal on the same store."""

from __future__ import annotations

import pytest

from receiver.journal import DeliveryState, Outcome, SendState
from tests.journal.conftest import Backend
from tests.journal.contract import JournalContract, event, raw, routed

pytestmark = pytest.mark.anyio


class TestJournal(JournalContract):
    """Runs on the ``journal`` fixture: one per backend."""


async def test_what_was_acknowledged_survives_a_reopen(durable: Backend) -> None:
    first = durable.open()
    d = raw(b"payload")
    await first.append(d, "k")
    routed_delivery, [send] = await routed(first, ["a", "b"], ["a"])
    await first.finish_send(send, "w", Outcome.dead("refused", code="address_refused"))
    await first.stop_sink("b", "410 Gone")
    await first.close()

    again = durable.open()
    assert await again.get_raw(d.delivery_id) == d
    assert (await again.append(raw(b"payload"), "k")).duplicate
    assert [(s.sink, s.state, s.code) for s in await again.sends(routed_delivery.delivery_id)] == [
        ("a", SendState.DEAD, "address_refused"),
        ("b", SendState.PENDING, None),
    ]
    assert [s.sink for s in await again.stopped_sinks()] == ["b"]
    # b still waits for its sink, so the routed delivery is pending, like the unrouted one.
    assert await again.counts() == {
        DeliveryState.PENDING: 2,
        DeliveryState.DONE: 0,
        DeliveryState.DEAD: 0,
    }


async def test_two_journals_on_one_store_share_its_leases(durable: Backend) -> None:
    one, two = durable.open(), durable.open()
    for i in range(6):
        await one.append(raw(str(i).encode()), f"k{i}")
    mine = await one.claim("one", 4, 60)
    theirs = await two.claim("two", 10, 60)
    assert (len(mine), len(theirs)) == (4, 2)
    assert not {c.delivery.delivery_id for c in mine} & {c.delivery.delivery_id for c in theirs}
    # Routed by one, delivered through the other: the stored event goes across.
    claim = mine[0]
    e = event(claim.delivery)
    assert await one.route(claim, "one", [(e, "a")], set(), 60) == []
    [send] = await two.claim_sends("two", {"a": 5}, 60)
    assert (send.event, send.attempt) == (e, 1)
    await two.finish_send(send, "two", Outcome.delivered())
    info = await one.get(claim.delivery.delivery_id)
    assert info is not None and info.state is DeliveryState.DONE
