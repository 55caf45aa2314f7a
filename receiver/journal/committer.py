"""Group commit: one thread owns the write connection and commits queued work together.

Requests hand a small function over a queue and await a future.  The thread takes everything
that queued while its previous commit ran, applies it in one transaction (a savepoint each, so
one failing function cannot undo another's work) and commits once: concurrent requests share
one fsync instead of paying one each.  There is no fixed wait: a lone request commits at once,
and batches grow exactly as fast as load does.  The commit happens on this thread, never on
the event loop.  The same thread serves SQLite and PostgreSQL, through a ``Dialect``.

A connection the database dropped (PostgreSQL restarted, a network cut) fails the batch it was
running with ``JournalUnavailable`` (ingest answers 503) and is opened again for the next
batch; while it cannot be, batches fail at once rather than each waiting out a connect
timeout, and one attempt is made per ``reconnect_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from receiver.journal.dialect import DatabaseClock, Dialect, Tx
from receiver.journal.errors import JournalUnavailable, one_line

__all__ = ["Bulk", "GroupCommitter", "JobFailed", "Work", "connection_broken"]

log = logging.getLogger("hookdock.journal")

Work = Callable[[Tx], Any]
Bulk = Callable[[Tx, list[Any]], list[Any]]

_MAX_BATCH = 2048


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


class JobFailed:
    """What a bulk handler returns for an item that failed on its own (in a savepoint of its
    own): that job gets ``error``, the rest of the batch commits."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():  # the caller gave up waiting (timeout or cancel)
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class GroupCommitter:
    """Runs ``submit``ted functions on one connection, committing each batch once."""

    def __init__(
        self,
        connect: Callable[[], Any],
        dialect: Dialect,
        bulk: dict[str, Bulk] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        single_statement: frozenset[str] = frozenset(),
        name: str = "journal",
        reconnect_seconds: float = 1.0,
        clock_of: GroupCommitter | None = None,
    ) -> None:
        """``single_statement`` names bulk kinds whose handler writes with exactly one statement
        (reads aside), so that a batch of only those can skip BEGIN and COMMIT.  ``clock_of``:
        another committer of the same journal whose reading of the database's clock this one
        shares, so that what one writes as due now the other finds due (two offsets, each read
        over its own round trip, differ by a fraction of a millisecond either way)."""
        self._connect = connect
        self.dialect = dialect
        self._clock = clock
        self._db_clock: DatabaseClock | None = None
        if clock_of is not None:
            self._db_clock = clock_of._db_clock
        elif dialect.now_sql is not None:
            self._db_clock = DatabaseClock(dialect.now_sql)
        self._bulk = bulk or {}
        self._single_statement = single_statement
        self._reconnect_seconds = reconnect_seconds
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"hookdock-{name}", daemon=True)
        self.commits = 0
        self.committed_jobs = 0
        self.on_commit: Callable[[int, float], None] | None = None
        """Called on the commit thread after each commit: (jobs in the batch, seconds)."""
        self._waiting: set[asyncio.Future[Any]] = set()
        self._batch_started: float | None = None
        self._conn: Any = None
        self._down_until = 0.0
        self._down_reason = ""

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

    def now(self) -> float:
        """The database's clock: the process's for SQLite, the server's for PostgreSQL."""
        return self._clock() if self._db_clock is None else self._db_clock.now()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    async def submit(self, fn: Work, *, single_statement: bool = False) -> Any:
        """Run ``fn(tx)`` in the next batch, in a savepoint of its own unless it writes with
        ``single_statement`` on an engine that undoes a failed statement by itself."""
        return await self._wait(
            lambda f, loop: _Job(fn, f, loop, single_statement=single_statement)
        )

    async def submit_bulk(self, kind: str, item: Any) -> Any:
        """Hand ``item`` to the ``kind`` bulk handler, called once for all such items in a batch.

        One multi-row statement per batch instead of a few per job is what keeps the commit
        thread from stalling on the GIL hand-off (SQLite) or on round trips (PostgreSQL).
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
        if self._thread.ident is None:
            return  # never started: another committer of the journal failed to open first
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._conn = self._connect()
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
                    self._commit(batch)
                if stop:
                    break
            self._fail_queued()
        finally:
            self._drop_connection()

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

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connection(self) -> Any:
        """The open connection, or a new one; raises ``JournalUnavailable`` while it cannot be."""
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._down_until:
            raise JournalUnavailable(f"the journal's database is unavailable: {self._down_reason}")
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._down_until = time.monotonic() + self._reconnect_seconds
            self._down_reason = one_line(exc)
            log.warning("journal: cannot reconnect yet: %s", self._down_reason)
            raise JournalUnavailable(
                f"the journal's database is unavailable: {self._down_reason}"
            ) from exc
        log.info("journal: connected again")
        return self._conn

    def _commit(self, batch: list[_Job]) -> None:
        self._batch_started = time.monotonic()
        dialect = self.dialect
        try:
            conn = self._connection()
        except JournalUnavailable as exc:
            self._deliver([(job, None, exc) for job in batch])
            return
        try:
            if self._db_clock is not None:
                self._db_clock.sync(conn)
        except Exception as exc:
            self._fail_batch(batch, exc)
            return
        tx = Tx(conn, dialect, self.now)
        groups: dict[str, list[_Job]] = {}
        for job in batch:
            if job.bulk is not None:
                groups.setdefault(job.bulk, []).append(job)
        only = next(iter(groups)) if len(groups) == 1 else None
        began = False
        try:
            if only in self._single_statement and len(groups[only]) == len(batch):
                # One statement in autocommit mode is its own transaction: it commits (and
                # syncs) within that one call, and the thread crosses over once per batch.
                outcomes = self._run_bulk(tx, only, groups[only])
            else:
                began = True
                # PostgreSQL: a savepoint is two more round trips a job, so the batch first
                # runs without them; if a job fails, it is rolled back and run again with them.
                optimistic = not dialect.statement_rollback
                try:
                    outcomes = self._transaction(tx, groups, batch, savepoints=not optimistic)
                except _JobFailed:
                    tx.execute("ROLLBACK")
                    outcomes = self._transaction(tx, groups, batch, savepoints=True)
        except Exception as exc:  # the whole batch failed; the thread itself must live on
            if began:
                try:
                    tx.execute("ROLLBACK")
                except Exception:
                    # The connection is gone: open a new one for the next batch.
                    self._drop_connection()
            self._fail_batch(batch, exc)
            return
        self.commits += 1
        self.committed_jobs += len(batch)
        if self.on_commit is not None:
            self.on_commit(len(batch), time.monotonic() - self._batch_started)
        self._deliver(outcomes)

    def _transaction(
        self, tx: Tx, groups: dict[str, list[_Job]], batch: list[_Job], *, savepoints: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """The batch in one transaction, committed.  Without ``savepoints``, a job that fails
        raises ``_JobFailed`` (the caller rolls back and runs the batch again with them)."""
        tx.execute(self.dialect.begin)
        # Bulk handlers share the batch's fate (no savepoint each): should one fail, the batch
        # rolls back and every job in it fails; senders retry, leases lapse.
        outcomes = [o for kind, jobs in groups.items() for o in self._run_bulk(tx, kind, jobs)]
        for job in batch:
            if job.fn is None:
                continue
            if savepoints:
                outcomes.append(self._run_fn(tx, job))
                continue
            try:
                outcomes.append((job, job.fn(tx), None))
            except Exception as exc:
                if self._is_unavailable(exc) and connection_broken(tx.conn):
                    raise  # the connection died under it: the batch as a whole has failed
                raise _JobFailed from exc
        tx.execute("COMMIT")
        return outcomes

    def _fail_batch(self, batch: list[_Job], exc: Exception) -> None:
        reason = one_line(exc)
        log.error("journal commit failed: %s", reason)
        if self._conn is not None and connection_broken(self._conn):
            self._drop_connection()
        error = JournalUnavailable(f"the journal could not commit: {reason}")
        error.__cause__ = exc
        self._deliver([(job, None, error) for job in batch])

    def _run_bulk(
        self, tx: Tx, kind: str, jobs: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        values = self._bulk[kind](tx, [job.item for job in jobs])
        return [
            (job, None, self._as_journal_error(value.error))
            if isinstance(value, JobFailed)
            else (job, value, None)
            for job, value in zip(jobs, values, strict=True)
        ]

    def _run_fn(self, tx: Tx, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        assert job.fn is not None
        if job.single_statement and self.dialect.statement_rollback:
            try:
                return job, job.fn(tx), None
            except Exception as exc:
                return job, None, self._as_journal_error(exc)
        tx.execute("SAVEPOINT job")
        try:
            value = job.fn(tx)
        except Exception as exc:  # one job's failure is its own, not the batch's
            if self._is_unavailable(exc) and connection_broken(tx.conn):
                raise  # the connection died under it: the batch as a whole has failed
            tx.execute("ROLLBACK TO SAVEPOINT job")
            tx.execute("RELEASE SAVEPOINT job")
            return job, None, self._as_journal_error(exc)
        tx.execute("RELEASE SAVEPOINT job")
        return job, value, None

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.dialect.unavailable)

    def _as_journal_error(self, exc: Exception) -> Exception:
        if self._is_unavailable(exc):
            error = JournalUnavailable(f"the journal could not write: {one_line(exc)}")
            error.__cause__ = exc
            return error
        return exc

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


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: run it again with them."""


def connection_broken(conn: Any) -> bool:
    """psycopg marks a connection the server dropped as ``broken``; sqlite3 has no such state."""
    return bool(getattr(conn, "broken", False) or getattr(conn, "closed", False) is True)
