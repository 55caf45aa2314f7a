"""Work that one process at a time must do, across replicas: retention now, pollers next.

Each job has a name and an interval.  Every interval, each process tries to take the job's
named lease in the journal (for three intervals); the one that holds it runs the job, and
keeps it by taking it again.  A holder that dies is replaced once its lease runs out or its
heartbeat goes stale; a holder that stops cleanly lets go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from receiver.journal import SqlJournal

__all__ = ["NamedJob", "NamedJobs"]

log = logging.getLogger("hookdock.jobs")


@dataclass(frozen=True, slots=True)
class NamedJob:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[None]]


class NamedJobs:
    def __init__(self, journal: SqlJournal, owner: str, jobs: list[NamedJob]) -> None:
        self.journal = journal
        self.owner = owner
        self.jobs = jobs
        self.held: set[str] = set()
        self.runs: dict[str, int] = {job.name: 0 for job in jobs}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"hookdock-job-{job.name}")
            for job in self.jobs
        ]

    async def _loop(self, job: NamedJob) -> None:
        while True:
            began = time.monotonic()
            try:
                held = await self.journal.acquire_lease(job.name, self.owner, job.every_seconds * 3)
            except Exception as exc:
                log.warning("job %s: cannot take its lease, trying again: %s", job.name, exc)
                held = False
            if held and job.name not in self.held:
                log.info("job %s: this process runs it now", job.name)
            self.held = self.held | {job.name} if held else self.held - {job.name}
            if held:
                try:
                    await job.run()
                    self.runs[job.name] += 1
                except Exception:
                    log.exception(
                        "job %s failed; it runs again in %gs", job.name, job.every_seconds
                    )
            await asyncio.sleep(max(0.0, job.every_seconds - (time.monotonic() - began)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in sorted(self.held):
            try:
                await self.journal.release_lease(name, self.owner)
            except Exception as exc:
                log.warning("job %s: could not let go of its lease: %s", name, exc)
        self.held = set()
