"""Group commit: what one job's failure does to the others in its batch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from receiver.errors import JournalUnavailable
from receiver.journal.committer import GroupCommitter
from receiver.journal.dialect import Tx
from receiver.journal.sqlite import SQLITE

pytestmark = pytest.mark.anyio


def bulk_insert(tx: Tx, items: list[Any]) -> list[None]:
    values = ",".join("(?)" for _ in items)
    tx.execute(f"INSERT INTO t (v) VALUES {values}", items)
    return [None] * len(items)


@pytest.fixture
async def committer(tmp_path: Path) -> AsyncIterator[GroupCommitter]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT PRIMARY KEY)")
        return conn

    c = GroupCommitter(
        connect,
        SQLITE,
        bulk={"insert": bulk_insert},
        single_statement=frozenset({"insert"}),
        clock=lambda: 1234.5,
    )
    c.start()
    yield c
    await asyncio.to_thread(c.close)


def rows(committer: GroupCommitter) -> Any:
    return committer.submit(lambda tx: sorted(v for (v,) in tx.execute("SELECT v FROM t")))


def insert(*values: str) -> Any:
    def work(tx: Tx) -> None:
        for v in values:
            tx.execute("INSERT INTO t (v) VALUES (?)", (v,))

    return work


async def test_a_failing_job_undoes_only_itself(committer: GroupCommitter) -> None:
    results = await asyncio.gather(
        committer.submit(insert("a")),
        committer.submit(insert("b", "a")),  # fails on its second statement
        committer.submit(insert("c")),
        committer.submit(insert("c"), single_statement=True),  # fails, alone
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JournalUnavailable)
    assert isinstance(results[3], JournalUnavailable)
    assert await rows(committer) == ["a", "c"]  # "b" went with its failed job


async def test_bulk_jobs_share_one_statement_and_its_fate(committer: GroupCommitter) -> None:
    assert await asyncio.gather(*(committer.submit_bulk("insert", f"v{i}") for i in range(50)))
    # Hold the thread in a job of its own so that the next two queue up into one batch.
    running, gate = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        running.set()
        gate.wait(10)

    held = asyncio.ensure_future(committer.submit(hold))
    assert await asyncio.to_thread(running.wait, 10)
    pair = asyncio.gather(
        committer.submit_bulk("insert", "new"),
        committer.submit_bulk("insert", "v1"),  # a duplicate fails the statement
        return_exceptions=True,
    )
    await asyncio.sleep(0)  # let both enqueue (they do before their first suspension)
    gate.set()
    await held
    failed = await pair
    assert all(isinstance(r, JournalUnavailable) for r in failed)
    assert "new" not in await rows(committer)
    assert len(await rows(committer)) == 50
    commits, jobs = committer.commits, committer.committed_jobs
    assert jobs >= 50 and commits < jobs


async def test_closed_committer_fails_new_work(committer: GroupCommitter) -> None:
    await asyncio.to_thread(committer.close)
    with pytest.raises(JournalUnavailable, match="closed"):
        await committer.submit(insert("x"))


async def test_jobs_read_the_clock_once_per_batch(committer: GroupCommitter) -> None:
    # SQLite has no clock of its own: a batch's ``now`` is the committer's clock.
    assert await committer.submit(lambda tx: (tx.now, tx.dialect.name)) == (1234.5, "sqlite")
