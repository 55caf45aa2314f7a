"""Group commit: one thread owns the SQLite connection and commits queued work together.

Requests hand a small function over a queue and await a future.  The thread takes everything
that queued while its previous commit ran, applies it in one transaction (a savepoint each, so
one failing function cannot undo another's work) and commits once: concurrent requests share
one fsync instead of paying one each.  There is no fixed wait: a lone request commits at once,
and batches grow exactly as fast as load does.  fsync happens on this thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from receiver.errors import JournalUnavailable

__all__ = ["GroupCommitter"]

log = logging.getLogger("hookdock.journal")

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

_MAX_BATCH = 2048


Bulk = Callable[[sqlite3.Connection, list[Any]], list[Any]]


class _Job:
    __slots__ = ("bulk", "fn", "future", "item", "loop", "single_statement")

    def __init__(
        self,
        fn: Work | None,
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        bulk: str | None = None,
        item: Any = None,
        single_statement: bool = False,
    ):
        self.single_statement = single_statement
        self.fn = fn
        self.future = future
        self.loop = loop
        self.bulk = bulk
        self.item = item


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():  # the caller gave up waiting (timeout or cancel)
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class GroupCommitter:
    """Runs ``submit``ted functions on one connection, committing each batch with one fsync."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        bulk: dict[str, Bulk] | None = None,
        *,
        single_statement: frozenset[str] = frozenset(),
        name: str = "journal",
    ) -> None:
        """``single_statement`` names bulk kinds whose handler writes with exactly one statement
        (reads aside), so that a batch of only those can skip BEGIN and COMMIT."""
        self._connect = connect
        self._bulk = bulk or {}
        self._single_statement = single_statement
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"hookdock-{name}", daemon=True)
        self.commits = 0
        self.committed_jobs = 0
        # Futures not yet settled, and when the current batch began (monotonic), so that a
        # stalled disk can be noticed from the event loop without a timer per request.
        self._waiting: set[asyncio.Future[Any]] = set()
        self._batch_started: float | None = None

    def fail_if_stalled(self, limit_seconds: float) -> int:
        """Fail every waiting job if the current batch has run over ``limit_seconds``.

        Called from the event loop.  The senders get a 503 and retry; should the batch land
        after all, their retries are recognized as duplicates.
        """
        started = self._batch_started
        if started is None or time.monotonic() - started <= limit_seconds:
            return 0
        error = JournalUnavailable(f"the journal has not committed for over {limit_seconds:.0f}s")
        failed = [f for f in self._waiting if not f.done()]
        for future in failed:
            future.set_exception(error)
        self._waiting.clear()
        return len(failed)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    async def submit(self, fn: Work, *, single_statement: bool = False) -> Any:
        """Run ``fn(connection)`` in the next batch, in a savepoint of its own unless it writes
        with ``single_statement`` (SQLite then undoes a failure by itself)."""
        return await self._wait(
            lambda f, loop: _Job(fn, f, loop, single_statement=single_statement)
        )

    async def submit_bulk(self, kind: str, item: Any) -> Any:
        """Hand ``item`` to the ``kind`` bulk handler, called once for all such items in a batch.

        Each statement that SQLite runs lets go of the GIL and has to win it back from the busy
        event loop; one multi-row statement per batch instead of a few per job is what keeps
        the commit thread from stalling on that hand-off.
        """
        return await self._wait(lambda f, loop: _Job(None, f, loop, kind, item))

    async def _wait(
        self, make: Callable[[asyncio.Future[Any], asyncio.AbstractEventLoop], _Job]
    ) -> Any:
        if self._closed:
            raise JournalUnavailable("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.add(future)
        self._queue.put(make(future, loop))
        try:
            return await future
        finally:
            self._waiting.discard(future)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start()'s caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._queue.get()
                batch: list[_Job] = []
                stop = first is None
                if first is not None:
                    batch.append(first)
                while len(batch) < _MAX_BATCH:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                    else:
                        batch.append(job)
                if batch:
                    self._commit(conn, batch)
                if stop:
                    break
            self._fail_queued()
        finally:
            conn.close()

    def _fail_queued(self) -> None:
        leftover: list[_Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftover.append(job)
        self._deliver([(j, None, JournalUnavailable("the journal is closed")) for j in leftover])

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        self._batch_started = time.monotonic()
        groups: dict[str, list[_Job]] = {}
        for job in batch:
            if job.bulk is not None:
                groups.setdefault(job.bulk, []).append(job)
        only = next(iter(groups)) if len(groups) == 1 else None
        try:
            if only in self._single_statement and len(groups[only]) == len(batch):
                # One statement in autocommit mode is its own transaction: it commits, fsync
                # included, within that one call.  The thread then takes the GIL back from
                # the event loop once per batch rather than once per statement.
                outcomes = self._run_bulk(conn, only, groups[only])
            else:
                conn.execute("BEGIN IMMEDIATE")
                # Bulk handlers share the batch's fate (no savepoint each): should one fail,
                # the batch rolls back and every job in it fails; senders retry, leases lapse.
                outcomes = [
                    o for kind, jobs in groups.items() for o in self._run_bulk(conn, kind, jobs)
                ]
                outcomes.extend(self._run_fn(conn, job) for job in batch if job.fn is not None)
                conn.execute("COMMIT")
        except Exception as exc:  # the whole batch failed; the thread itself must live on
            log.error("journal commit failed: %s", exc)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("journal rollback failed")
            error = JournalUnavailable(f"the journal could not commit: {exc}")
            error.__cause__ = exc
            outcomes = [(job, None, error) for job in batch]
        else:
            self.commits += 1
            self.committed_jobs += len(batch)
        self._deliver(outcomes)

    def _run_bulk(
        self, conn: sqlite3.Connection, kind: str, jobs: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        values = self._bulk[kind](conn, [job.item for job in jobs])
        return list(zip(jobs, values, [None] * len(jobs), strict=True))

    @staticmethod
    def _run_fn(conn: sqlite3.Connection, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        assert job.fn is not None
        if job.single_statement:
            # SQLite undoes a failed statement by itself: no savepoint needed.
            try:
                return job, job.fn(conn), None
            except Exception as exc:
                return job, None, _as_journal_error(exc)
        conn.execute("SAVEPOINT job")
        try:
            value = job.fn(conn)
        except Exception as exc:  # one job's failure is its own, not the batch's
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return job, None, _as_journal_error(exc)
        conn.execute("RELEASE job")
        return job, value, None

    def _deliver(self, outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        self._batch_started = None
        # One wake-up per event loop per batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, value, error in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, value, error))
        for loop, results in by_loop.items():
            # RuntimeError: that loop has closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, results)


def _as_journal_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        error = JournalUnavailable(f"the journal could not write: {exc}")
        error.__cause__ = exc
        return error
    return exc
