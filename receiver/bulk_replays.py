"""This process's share of the bulk replays: it runs the jobs it starts, and takes over those
whose process stopped (``receiver.journal.jobs``), whichever replica made them.

A job yields to live traffic: between chunks it takes a breath, and while webhooks pour in it
waits for them to ease, up to a second (the dispatcher's ingest-first rule: one chunk still
goes a second, so a replay ends even under steady load).  A cancel asked for here wakes the
job at once; one asked for on another replica is seen at the job's next chunk.  On a clean
shutdown the running jobs are let go of, for another process to go on with at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from receiver.journal.base import OwnerCheck
from receiver.operator import EventQuery, Operator
from receiver.operator.models import BulkReplayOut

__all__ = ["BulkReplays"]

log = logging.getLogger("hookdock")


class BulkReplays:
    def __init__(
        self,
        operator: Operator,
        owner: str,
        *,
        busy: Callable[[], bool],
        is_gone: OwnerCheck,
        stale_seconds: float,
        chunk: int,
        every_seconds: float = 2.0,
    ) -> None:
        self.operator = operator
        self.owner = owner
        self.busy = busy
        self.is_gone = is_gone
        self.stale_seconds = stale_seconds
        self.every = every_seconds
        self.chunk = chunk
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._take_over(), name="hookdock-bulk-replays")

    async def begin(self, query: EventQuery, *, sink: str | None, actor: str) -> BulkReplayOut:
        """Start a job here, now; any replica shows its progress."""
        job = await self.operator.start_replay_job(query, sink=sink, actor=actor, owner=self.owner)
        assert job.job_id is not None
        self._run(job.job_id)
        return job

    async def cancel(self, job_id: str, *, actor: str) -> BulkReplayOut:
        """Cancel a job from here: one running here is waited for to stop (a chunk at most)."""
        job = await self.operator.cancel_replay_job(
            job_id, actor=actor, is_gone=self.is_gone, stale_seconds=self.stale_seconds
        )
        task = self.running.get(job_id)
        if task is not None:
            self._wake[job_id].set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)
            job = await self.operator.replay_job(job_id)
        return job

    def _run(self, job_id: str) -> None:
        wake = self._wake[job_id] = asyncio.Event()

        async def pause() -> None:
            # A breath between chunks, longer while webhooks pour in; a cancel cuts it short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.01)
            for _ in range(10):
                if wake.is_set() or not self.busy():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.1)

        async def run() -> None:
            try:
                done = await self.operator.run_replay_job(
                    job_id, owner=self.owner, pause=pause, chunk=self.chunk
                )
                log.info(
                    "bulk replay %s %s: %d of %d events replayed",
                    job_id,
                    done.state,
                    done.replayed,
                    done.matched,
                )
            except Exception:
                log.exception("bulk replay %s failed", job_id)
            finally:
                self.running.pop(job_id, None)
                self._wake.pop(job_id, None)

        self.running[job_id] = asyncio.create_task(run(), name=f"hookdock-{job_id}")

    async def _take_over(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                waiting = await self.operator.journal.replay_jobs(10, running=True)
                if not any(job.owner != self.owner for job in waiting):
                    continue
                job = await self.operator.take_over_replay_job(
                    self.owner, is_gone=self.is_gone, stale_seconds=self.stale_seconds
                )
            except Exception as exc:
                log.warning("bulk replays: cannot look for jobs to take over: %s", exc)
                continue
            if job is not None and job.job_id is not None:
                log.warning(
                    "bulk replay %s: its process stopped; going on with it here (%d of %d"
                    " events replayed)",
                    job.job_id,
                    job.replayed,
                    job.matched,
                )
                self._run(job.job_id)

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            released = await self.operator.journal.release_replay_jobs(self.owner)
        except Exception as exc:
            log.warning("bulk replays: could not let go of this process's jobs: %s", exc)
            return
        if released:
            log.info("bulk replays: let go of %d running jobs for another process", released)
