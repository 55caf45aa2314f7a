"""``SqlJournal``: the journal's hot path and operator side over one database and its dialect.

The engine-specific part is small: how to connect (``connect``), which ``Dialect``, and where
reads run.  Writes go through a ``GroupCommitter`` thread; on an engine that takes writers
side by side (PostgreSQL) the dispatcher's writes (claims, routings, outcomes) have a second
one, a *dispatch lane* on a connection of its own, so that exports and ingest's appends do not
wait on each other's round trips and commits.  SQLite takes one writer at a time: one thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from receiver.journal.activity import Activity
from receiver.journal.admin import Admin
from receiver.journal.backlog import Backlog
from receiver.journal.browse import Browse
from receiver.journal.bulk import append_many, sent_many
from receiver.journal.committer import GroupCommitter
from receiver.journal.dialect import Dialect, Tx
from receiver.journal.errors import JournalError
from receiver.journal.hotpath import HotPath
from receiver.journal.jobs import ReplayJobs
from receiver.journal.liveness import Liveness, LivenessAdmin
from receiver.journal.pollers import PollerStates, PollerStatesAdmin
from receiver.journal.recent_events import RecentEvents
from receiver.journal.replay import Replay
from receiver.journal.route_bulk import route_many
from receiver.journal.watches import Watches

__all__ = ["SqlJournal"]

log = logging.getLogger("hookdock.journal")


class SqlJournal(
    HotPath,
    Liveness,
    PollerStates,
    Watches,
    Admin,
    LivenessAdmin,
    PollerStatesAdmin,
    Browse,
    Activity,
    Replay,
    Backlog,
    ReplayJobs,
):
    """A ``Journal`` and ``JournalAdmin``.  ``open()`` before use, ``await close()`` after."""

    description: str = "the journal"
    """Where it is, for messages (a path, or a DSN without its password)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        dialect: Dialect,
        *,
        clock: Callable[[], float] = time.time,
        dispatch_lane: bool = False,
    ) -> None:
        self.dialect = dialect
        self._recent_events = RecentEvents()
        self._send_claim_from = {}
        self._committer = GroupCommitter(
            connect,
            dialect,
            bulk={"append": append_many, "sent": sent_many, "route": route_many},
            # A batch of appends alone is one INSERT: in autocommit it is its own transaction
            # on either engine (one round trip to PostgreSQL rather than three).
            single_statement=frozenset({"append"}),
            clock=clock,
        )
        self._dispatch = self._committer
        if dispatch_lane:
            self._dispatch = GroupCommitter(
                connect,
                dialect,
                bulk={"sent": sent_many, "route": route_many},
                clock=clock,
                name="journal-dispatch",
                clock_of=self._committer,
            )
        self._committers = list(dict.fromkeys((self._committer, self._dispatch)))
        """Each committer once: the first connects (and migrates) first."""

    def open(self) -> SqlJournal:
        """Connect (and create or migrate the schema); ``JournalError`` says what to check."""
        started: list[GroupCommitter] = []
        try:
            for committer in self._committers:
                committer.start()
                started.append(committer)
        except Exception as exc:
            for committer in started:
                committer.close()
            if isinstance(exc, JournalError):
                raise
            raise JournalError(self._cannot_open(exc)) from exc
        return self

    def _cannot_open(self, exc: BaseException) -> str:
        return f"{self.description} cannot be opened: {exc}"

    @property
    def stats(self) -> tuple[int, int]:
        """(commits, jobs committed): their ratio is the mean group-commit batch size."""
        committers = self._committers
        return sum(c.commits for c in committers), sum(c.committed_jobs for c in committers)

    def observe_commits(self, observer: Callable[[int, float], None]) -> None:
        """Have ``observer(batch size, seconds)`` called after each commit (on its thread)."""
        for committer in self._committers:
            committer.on_commit = observer

    async def _write(self, fn: Callable[[Tx], Any], *, single_statement: bool = False) -> Any:
        return await self._committer.submit(fn, single_statement=single_statement)

    async def _write_dispatch(
        self, fn: Callable[[Tx], Any], *, single_statement: bool = False
    ) -> Any:
        return await self._dispatch.submit(fn, single_statement=single_statement)

    async def _bulk(self, kind: str, item: Any) -> Any:
        committer = self._committer if kind == "append" else self._dispatch
        return await committer.submit_bulk(kind, item)

    async def _read(self, fn: Callable[[Tx], Any]) -> Any:
        # SQLite: on the commit thread, which owns the only connection.
        return await self._committer.submit(fn)

    async def watchdog(self, limit_seconds: float, every: float = 1.0) -> None:
        """Until cancelled: fail waiting writes once a commit has hung for ``limit_seconds``."""
        while True:
            await asyncio.sleep(every)
            failed = sum(c.fail_if_stalled(limit_seconds) for c in self._committers)
            if failed:
                log.error("journal stalled: failed %d waiting writes (answered 503)", failed)

    async def close(self) -> None:
        for committer in reversed(self._committers):
            await asyncio.to_thread(committer.close)
