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

pytestmark = pytest.mark.anyio


def bulk_insert(conn: sqlite3.Connection, items: list[Any]) -> list[None]:
    values = ",".join("(?)" for _ in items)
    conn.execute(f"INSERT INTO t (v) VALUES {values}", items)
    return [None] * len(items)


@pytest.fixture
async def committer(tmp_path: Path) -> AsyncIterator[GroupCommitter]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT PRIMARY KEY)")
        return conn

    c = GroupCommitter(connect, {"insert": bulk_insert}, single_statement=frozenset({"insert"}))
    c.start()
    yield c
    await asyncio.to_thread(c.close)


def rows(committer: GroupCommitter) -> Any:
    return committer.submit(lambda conn: sorted(v for (v,) in conn.execute("SELECT v FROM t")))


def insert(*values: str) -> Any:
    def work(conn: sqlite3.Connection) -> None:
        for v in values:
            conn.execute("INSERT INTO t (v) VALUES (?)", (v,))

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

    def hold(conn: sqlite3.Connection) -> None:
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
