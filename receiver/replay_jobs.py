"""Bulk replays as jobs an operator starts, watches and cancels: the one interface the admin
API and the console both use (``BulkReplays``), and its in-process implementation.

``ReplayJobs`` runs each replay as a task in this process and keeps the last ones that
ended; a journal-backed implementation can stand in for it behind the same three methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from handlers.redact import redact_text
from receiver.errors import NotFound
from receiver.ids import new_id
from receiver.operator import EventQuery, Operator
from receiver.operator.models import BulkReplayOut

__all__ = ["BulkReplays", "ReplayJobs"]

log = logging.getLogger("hookdock")


class BulkReplays(Protocol):
    """Start a bulk replay, see how far it got, cancel it."""

    async def start(self, ops: Operator, query: EventQuery, sink: str | None, actor: str) -> str:
        """The new job's id; it runs in the background."""
        ...

    async def get(self, job_id: str) -> BulkReplayOut:
        """``NotFound`` for an unknown id."""
        ...

    async def cancel(self, job_id: str) -> BulkReplayOut: ...


class ReplayJobs:
    """Bulk replays running in this process (and the last ones that ended), by id."""

    KEPT = 100

    def __init__(self, busy: Callable[[], bool] = lambda: False) -> None:
        self.busy = busy
        self.state: dict[str, BulkReplayOut] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def pause(self) -> None:
        # Never starve live traffic: a breath between chunks, and while webhooks are
        # pouring in, wait for them to ease, up to a second (the dispatcher's ingest-first
        # rule: one chunk still goes a second, so a replay ends even under steady load).
        await asyncio.sleep(0.01)
        for _ in range(10):
            if not self.busy():
                return
            await asyncio.sleep(0.1)

    async def start(self, ops: Operator, query: EventQuery, sink: str | None, actor: str) -> str:
        job_id = f"replay_{new_id()}"

        def progress(now: BulkReplayOut) -> None:
            self.state[job_id] = now

        async def run() -> None:
            try:
                done = await ops.bulk_replay(
                    query,
                    sink=sink,
                    actor=actor,
                    job_id=job_id,
                    progress=progress,
                    pause=self.pause,
                )
                self.state[job_id] = done
            except asyncio.CancelledError:
                self.state[job_id] = self.state[job_id].model_copy(update={"state": "cancelled"})
                raise
            except Exception as exc:
                log.exception("bulk replay %s failed", job_id)
                failed = {"state": "failed", "error": redact_text(str(exc)) or type(exc).__name__}
                self.state[job_id] = self.state[job_id].model_copy(update=failed)
            finally:
                self.tasks.pop(job_id, None)

        self.state[job_id] = BulkReplayOut(
            job_id=job_id, state="running", matched=0, replayed=0, requeued=0, created=0,
            in_flight=0,
        )  # fmt: skip
        self.tasks[job_id] = asyncio.create_task(run(), name=f"hookdock-{job_id}")
        for old in [j for j in self.state if j not in self.tasks][: -self.KEPT or None]:
            self.state.pop(old, None)
        return job_id

    async def get(self, job_id: str) -> BulkReplayOut:
        found = self.state.get(job_id)
        if found is None:
            raise NotFound(f"no bulk replay {job_id!r} in this process")
        return found

    async def cancel(self, job_id: str) -> BulkReplayOut:
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return await self.get(job_id)
