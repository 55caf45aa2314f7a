"""Pollers' state and deliveries' subjects in the journal, on every backend.

Only the holder of ``poller:<name>`` may save a poll; a failed poll keeps the state of the last
good one and counts the failures in a row; subjects are found by exact match.
"""

from __future__ import annotations

import pytest

from receiver.journal import SqlJournal
from receiver.journal.pollers import PollOutcome
from tests.journal.conftest import Backend
from tests.journal.contract import execute, raw

pytestmark = pytest.mark.anyio


def ok(state: dict[str, object], found: int = 0, next_in: float = 60) -> PollOutcome:
    return PollOutcome(True, state, found, 3, None, next_in)


def failed(error: str, next_in: float = 120) -> PollOutcome:
    return PollOutcome(False, None, 0, 1, error, next_in)


async def test_only_the_lease_holder_saves_a_poll(journal: SqlJournal) -> None:
    assert await journal.poller_state("p") is None
    assert not await journal.save_poll("p", "a/1/x", ok({"cursor": 1}))
    assert await journal.poller_state("p") is None
    assert await journal.acquire_lease("poller:p", "a/1/x", 60)
    assert await journal.save_poll("p", "a/1/x", ok({"cursor": 1}, found=2))
    assert not await journal.save_poll("p", "b/2/y", ok({"cursor": 0}))
    state = await journal.poller_state("p")
    assert state is not None
    assert (state.state, state.polls, state.found, state.calls) == ({"cursor": 1}, 1, 2, 3)
    assert state.last_error is None and state.last_ok_at == state.last_run_at
    assert 0 < state.due_in <= 60


async def test_a_failed_poll_keeps_the_state_and_counts_failures(journal: SqlJournal) -> None:
    assert await journal.acquire_lease("poller:p", "o", 60)
    assert await journal.save_poll("p", "o", ok({"cursor": 5}))
    good = await journal.poller_state("p")
    assert good is not None
    assert await journal.save_poll("p", "o", failed("HTTP 503"))
    assert await journal.save_poll("p", "o", failed("HTTP 429", next_in=900))
    state = await journal.poller_state("p")
    assert state is not None
    assert (state.state, state.failures, state.polls, state.last_error) == (
        {"cursor": 5},
        2,
        3,
        "HTTP 429",
    )
    assert state.last_ok_at == good.last_ok_at
    assert state.due_in > 800
    assert await journal.save_poll("p", "o", ok({"cursor": 6}))
    state = await journal.poller_state("p")
    assert state is not None
    assert (state.state, state.failures, state.last_error) == ({"cursor": 6}, 0, None)


async def test_a_first_poll_that_fails_has_no_state(journal: SqlJournal) -> None:
    assert await journal.acquire_lease("poller:p", "o", 60)
    assert await journal.save_poll("p", "o", failed("timeout"))
    state = await journal.poller_state("p")
    assert state is not None
    assert (state.state, state.failures, state.last_ok_at) == (None, 1, None)


async def test_run_now_makes_a_poller_due(journal: SqlJournal) -> None:
    assert await journal.acquire_lease("poller:p", "o", 60)
    assert await journal.save_poll("p", "o", ok({"c": 1}, next_in=3600))
    await journal.run_poller_now("p")
    await journal.run_poller_now("q")  # never ran: listed, due, without state
    states = {s.name: s for s in await journal.poller_states()}
    assert states["p"].due_in <= 0 and states["p"].state == {"c": 1}
    assert states["q"].due_in <= 0 and states["q"].state is None and states["q"].polls == 0


async def test_subjects_are_found_by_exact_match(journal: SqlJournal) -> None:
    await journal.append(raw(b"1"), "k1", "sd:task:1")
    await journal.append(raw(b"2"), "k2", "sd:task:12")
    await journal.append(raw(b"3"), "k3")
    # A duplicate keeps the first row's subject.
    await journal.append(raw(b"1"), "k1", "sd:task:99")
    many = [f"sd:task:{n}" for n in range(1200)]  # over one statement's worth
    assert await journal.known_subjects(many) == {"sd:task:1", "sd:task:12"}
    assert await journal.known_subjects([]) == set()


async def test_a_version_5_journal_gains_subjects_and_poller_state(durable: Backend) -> None:
    first = durable.open()
    await journal_append_v5(first)
    await first.close()
    durable.opened.remove(first)
    again = durable.open()
    assert await again.known_subjects(["sd:task:1"]) == set()
    # A SmartDocumentor webhook journaled by version 5 has its subject now.
    assert await again.known_subjects(
        ["smartdocumentor:task:4:2", "smartdocumentor:task:4", "smartdocumentor:task:77"]
    ) == {"smartdocumentor:task:4:2"}
    await again.append(raw(b"x"), "new", "sd:task:1")
    assert await again.known_subjects(["sd:task:1"]) == {"sd:task:1"}
    assert await again.acquire_lease("poller:p", "o", 60)
    assert await again.save_poll("p", "o", ok({"c": 1}))


async def journal_append_v5(journal: SqlJournal) -> None:
    """Turn a fresh journal into what version 5 made, with one delivery in it."""
    await journal.append(raw(b"old"), "old")
    sd = raw(b"sd")  # source smartdocumentor.text_document, route "r"
    await journal.append(sd, f"r:text_document:4:2:{'ab' * 32}")  # a task id with a colon
    await execute(journal, "DROP INDEX deliveries_subject")
    await execute(journal, "ALTER TABLE deliveries DROP COLUMN subject")
    await execute(journal, "DROP TABLE poller_state")
    await execute(journal, "UPDATE meta SET value = '5' WHERE key = 'schema_version'")


async def test_watches_are_added_once_listed_oldest_first_and_closed(journal: SqlJournal) -> None:
    assert await journal.add_watch("dm", "b1", {"tasks": {"t1": "r1"}})
    assert await journal.add_watch("dm", "b2", {})
    assert await journal.add_watch("so", "b1", {"name": "other poller"})
    assert not await journal.add_watch("dm", "b1", {"tasks": {}})  # the first detail stays
    opened = await journal.open_watches("dm")
    assert [(w.key, w.detail) for w in opened] == [("b1", {"tasks": {"t1": "r1"}}), ("b2", {})]
    assert opened[0].added_at <= opened[1].added_at
    await journal.close_watches("dm", ["b1", "nothing"])
    await journal.close_watches("dm", ["b1"])  # again: nothing changes
    assert [w.key for w in await journal.open_watches("dm")] == ["b2"]
    assert [w.key for w in await journal.open_watches("so")] == ["b1"]
    assert not await journal.add_watch("dm", "b1", {})  # closed stays closed
    assert [w.key for w in await journal.open_watches("dm", limit=1)] == ["b2"]
