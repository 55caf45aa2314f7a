"""Bulk-replay jobs in the journal, on every backend: progress any process reads, a cancel
from any process, and a job whose process stopped taken over from its cursor (or failed).

Staleness is made, not waited for: a heartbeat is moved into the past, a lease is given as a
negative number of seconds (run out as soon as it is taken), a process is declared gone.
"""

from __future__ import annotations

import pytest

from receiver.journal import Outcome, SqlJournal
from receiver.journal.jobs import MAX_TAKEOVERS
from receiver.journal.views import EventFilter
from tests.journal.helpers import routed
from tests.journal.test_liveness import age, never_gone, process

pytestmark = pytest.mark.anyio

A, B = "host-a/1/a", "host-a/2/b"


async def _delivered(journal: SqlJournal, n: int) -> None:
    for _ in range(n):
        _, [send] = await routed(journal, ["s"], ["s"])
        await journal.finish_send(send, "w", Outcome.delivered())


async def _job(journal: SqlJournal, owner: str = A, lease: float = 60) -> str:
    job = await journal.create_replay_job(
        "job-1",
        actor="ann",
        filter={"state": ["delivered"]},
        sink=None,
        matched=3,
        owner=owner,
        lease_seconds=lease,
    )
    assert (job.state, job.owner, job.replayed, job.cursor) == ("running", owner, 0, None)
    return job.job_id


async def _step(journal: SqlJournal, owner: str, cursor: str | None) -> str | None:
    """One chunk of two events from ``cursor``; the job's state after it."""
    page = await journal.events(EventFilter(), 2, cursor=cursor)
    job = await journal.replay_job_step(
        "job-1",
        owner,
        event_ids=[r.event_id for r in page.items if r.event_id],
        delivery_ids=[],
        next_cursor=page.next_cursor,
        lease_seconds=60,
    )
    assert job is not None
    return job.state


async def test_a_job_counts_its_chunks_and_ends_done(journal: SqlJournal) -> None:
    await _delivered(journal, 3)
    await _job(journal)
    assert await _step(journal, A, None) == "running"
    job = await journal.replay_job("job-1")
    assert job is not None
    assert (job.replayed, job.requeued, job.owner) == (2, 2, A)
    assert job.cursor is not None
    # Another process's step does nothing: the job is A's.
    assert await _step(journal, B, job.cursor) == "running"
    assert await _step(journal, A, job.cursor) == "done"
    done = await journal.replay_job("job-1")
    assert done is not None
    assert (done.replayed, done.requeued, done.owner, done.cursor) == (3, 3, None, None)
    [listed] = await journal.replay_jobs(10)
    assert listed.job_id == "job-1"
    assert await journal.replay_jobs(10, running=True) == []
    actions = [(a.action, dict(a.detail).get("bulk")) for a in await journal.actions()]
    assert actions.count(("replay", "job-1")) == 3
    assert actions[-1] == ("bulk-replay", None)


async def test_a_cancel_from_anywhere_is_seen_at_the_next_chunk(journal: SqlJournal) -> None:
    await _delivered(journal, 3)
    await journal.heartbeat(process(A))
    await _job(journal)
    asked = await journal.cancel_replay_job(
        "job-1", actor="bob", is_gone=never_gone, stale_seconds=60
    )
    assert asked is not None
    assert (asked.state, asked.cancel_requested) == ("running", True)
    assert await _step(journal, A, None) == "cancelled"
    job = await journal.replay_job("job-1")
    assert job is not None
    assert (job.replayed, job.owner) == (0, None)
    assert (
        await journal.cancel_replay_job("nope", actor="bob", is_gone=never_gone, stale_seconds=60)
        is None
    )


async def test_a_job_no_live_process_runs_is_cancelled_at_once(journal: SqlJournal) -> None:
    await _job(journal)  # A never beat: no live process runs it
    job = await journal.cancel_replay_job(
        "job-1", actor="bob", is_gone=never_gone, stale_seconds=60
    )
    assert job is not None and job.state == "cancelled"


async def test_a_job_whose_process_stopped_is_taken_over_from_its_cursor(
    journal: SqlJournal,
) -> None:
    await _delivered(journal, 3)
    await journal.heartbeat(process(A))
    await journal.heartbeat(process(B))
    await _job(journal)
    assert await _step(journal, A, None) == "running"
    # A beats and holds its lease: nobody takes it.
    taken = await journal.take_over_replay_job(
        B, is_gone=never_gone, stale_seconds=60, lease_seconds=60
    )
    assert taken is None
    await age(journal, A)
    taken = await journal.take_over_replay_job(
        B, is_gone=never_gone, stale_seconds=60, lease_seconds=60
    )
    assert taken is not None
    assert (taken.owner, taken.takeovers, taken.replayed) == (B, 1, 2)
    assert await _step(journal, A, taken.cursor) == "running"  # A's step: not A's any more
    assert await _step(journal, B, taken.cursor) == "done"
    done = await journal.replay_job("job-1")
    assert done is not None and (done.replayed, done.requeued) == (3, 3)


async def test_a_released_job_is_taken_at_once_and_a_crashing_one_fails(
    journal: SqlJournal,
) -> None:
    await _job(journal)
    assert await journal.release_replay_jobs(A) == 1
    taken = await journal.take_over_replay_job(
        B, is_gone=never_gone, stale_seconds=60, lease_seconds=-1
    )
    assert taken is not None and (taken.owner, taken.takeovers) == (B, 0)
    for n in range(MAX_TAKEOVERS):
        # Each holder's lease runs out at once (-1 s): as if each died.
        owner = f"host-a/{10 + n}/x"
        taken = await journal.take_over_replay_job(
            owner, is_gone=never_gone, stale_seconds=60, lease_seconds=-1
        )
        assert taken is not None and taken.takeovers == n + 1
    last = await journal.take_over_replay_job(
        "host-a/99/z", is_gone=lambda o: True, stale_seconds=60, lease_seconds=60
    )
    assert last is None
    failed = await journal.replay_job("job-1")
    assert failed is not None
    assert (failed.state, failed.owner) == ("failed", None)
    assert failed.error == (
        f"its process stopped {MAX_TAKEOVERS + 1} times; replayed 0 of 3: start a new one for"
        " the rest"
    )
