"""Processes and named leases in the journal, on every backend: who is alive, who takes over.

Staleness is made, not waited for: a heartbeat is moved into the past through SQL, or the
stale limit is given as a negative number (every heartbeat is then older than it).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver.journal import Outcome, SqlJournal
from receiver.journal.base import ProcessInfo
from receiver.journal.dialect import Tx
from tests.journal.conftest import Backend
from tests.journal.contract import event, raw

pytestmark = pytest.mark.anyio


def process(owner: str, role: str = "serve") -> ProcessInfo:
    now = datetime.now(UTC)
    return ProcessInfo(owner, "host-a", 4242, role, now, now)


def never_gone(owner: str) -> bool:
    return False


async def age(journal: SqlJournal, owner: str) -> None:
    """Make ``owner``'s heartbeat ancient, as if it had died long ago."""

    def work(tx: Tx) -> None:
        tx.execute("UPDATE processes SET heartbeat_at = 0 WHERE owner = ?", (owner,))

    await journal._write(work)


async def leased_send(journal: SqlJournal, owner: str) -> None:
    d = raw()
    await journal.append(d, d.delivery_id)
    [claim] = await journal.claim(owner, 1, 600)
    await journal.route(claim, owner, [(event(d), "s")], {"s"}, 600)


async def test_heartbeats_show_who_is_alive(journal: SqlJournal) -> None:
    await journal.heartbeat(process("a/1/x"))
    await journal.heartbeat(process("b/2/y", "worker"))
    await journal.heartbeat(process("a/1/x"))  # a second beat is an update, not a new row
    found = await journal.processes(60)
    assert [(p.owner, p.role, p.alive) for p in found] == [
        ("a/1/x", "serve", True),
        ("b/2/y", "worker", True),
    ]
    await age(journal, "b/2/y")
    assert [p.alive for p in await journal.processes(60)] == [True, False]
    await journal.forget_process("a/1/x")
    assert [p.owner for p in await journal.processes(60)] == ["b/2/y"]


async def test_a_stale_process_has_its_leases_taken_over(journal: SqlJournal) -> None:
    await journal.heartbeat(process("dead/1/x"))
    await journal.heartbeat(process("live/2/y"))
    await leased_send(journal, "dead/1/x")
    await leased_send(journal, "live/2/y")
    assert await journal.claim_sends("other", {"s": 10}, 60) == []
    # Fresh heartbeats, and no process of this host known to be gone: nothing is taken.
    assert await journal.release_stale(never_gone, 30) == 0
    await age(journal, "dead/1/x")
    assert await journal.release_stale(never_gone, 30) == 1
    [taken] = await journal.claim_sends("other", {"s": 10}, 60)
    assert taken.attempt == 2, "the lost attempt counts"
    assert [p.owner for p in await journal.processes(30)] == ["live/2/y"]
    await journal.finish_send(taken, "other", Outcome.delivered())


async def test_an_owner_without_a_heartbeat_is_judged_by_the_pid_check(
    journal: SqlJournal,
) -> None:
    await leased_send(journal, "legacy/1/x")
    assert await journal.release_stale(never_gone, 30) == 0
    assert await journal.release_stale(lambda owner: owner == "legacy/1/x", 30) == 1


async def test_a_named_lease_has_one_holder_until_it_lets_go(journal: SqlJournal) -> None:
    await journal.heartbeat(process("a/1/x"))
    await journal.heartbeat(process("b/2/y"))
    assert await journal.acquire_lease("retention", "a/1/x", 600)
    assert not await journal.acquire_lease("retention", "b/2/y", 600)
    assert await journal.acquire_lease("retention", "a/1/x", 600), "the holder renews it"
    [lease] = await journal.named_leases()
    assert (lease.name, lease.owner) == ("retention", "a/1/x")
    await journal.release_lease("retention", "b/2/y")  # not b's: nothing happens
    assert not await journal.acquire_lease("retention", "b/2/y", 600)
    await journal.release_lease("retention", "a/1/x")
    assert await journal.acquire_lease("retention", "b/2/y", 600)
    assert [lease.owner for lease in await journal.named_leases()] == ["b/2/y"]


async def test_a_named_lease_moves_when_its_holder_dies_or_it_runs_out(
    journal: SqlJournal,
) -> None:
    await journal.heartbeat(process("a/1/x"))
    await journal.heartbeat(process("b/2/y"))
    assert await journal.acquire_lease("poller", "a/1/x", 600)
    await age(journal, "a/1/x")
    assert await journal.acquire_lease("poller", "b/2/y", 600), "a's heartbeat is stale"
    assert await journal.acquire_lease("other", "b/2/y", -1), "taken with a lapsed lease"
    assert await journal.acquire_lease("other", "a/1/x", 600), "ran out: anyone takes it"
    await journal.forget_process("a/1/x")
    assert [lease.name for lease in await journal.named_leases()] == ["poller"]


async def test_two_journals_on_one_store_agree_on_the_holder(durable: Backend) -> None:
    one, two = durable.open(), durable.open()
    await one.heartbeat(process("a/1/x"))
    await two.heartbeat(process("b/2/y"))
    won = [
        await one.acquire_lease("retention", "a/1/x", 600),
        await two.acquire_lease("retention", "b/2/y", 600),
    ]
    assert won == [True, False]
    assert [lease.owner for lease in await two.named_leases()] == ["a/1/x"]


async def test_a_local_process_known_to_be_dead_is_taken_over_at_once(journal: SqlJournal) -> None:
    """A restart after a SIGKILL on the same host: the heartbeat is still fresh, the pid gone."""
    await journal.heartbeat(process("killed/1/x"))
    await leased_send(journal, "killed/1/x")
    assert await journal.acquire_lease("retention", "killed/1/x", 600)
    assert await journal.release_stale(lambda owner: owner == "killed/1/x", 30) == 1
    assert await journal.processes(30) == []
    assert await journal.named_leases() == []
