"""``documill.batches``: each watched Dynamo batch to its results, one event per task.

The batches are the poller's watches (``context.watches()``): those ``hookdock documill submit``
posted and those ``hookdock documill watch BATCH_ID`` names, keyed by batch id.  Each poll reads
every open batch (``GET /v1/batch/{id}``) and, for each task it says is ``completed`` that this
poller has not reported yet, the task (``GET /v1/batch/{id}/{taskId}``):

* a task whose own page says ``completed`` with ``errors`` is a ``task.failed`` event;
* otherwise a ``task.completed`` event whose files are its ``resultList`` links (role
  ``exported``, then ``exported-2``...): the host fetches them into the sinks that take files,
  through the SSRF guard.  Dynamo's links work for one hour (``link_seconds``) from when the
  task was read, so each link's expiry is known: a fetch is retried only while it lives, and a
  link that died first is reported (``link_expired``), never retried forever.

Once the batch says ``completed`` and every task is reported: one ``batch.completed`` event
(counts, failed tasks, the batch's errors).  Dynamo keeps a batch's status 24 hours
(``window_seconds`` from its ``postDateTime``): a batch not completed by then, or that Dynamo no
longer knows, is a ``batch.expired`` event.  Either closes the watch.

Only the booleans (``completed``) and the ``errors`` lists are trusted, never ``statusMessage``:
its wording differs between the batch's page and the task's.  Every event's dedupe key names
the batch and task, so a poll repeated after a crash reports nothing twice; the tasks reported
are kept in the state so a poll does not read them again.  Progress per open batch is in the
state, which ``hookdock status`` shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from handlers.documill.client import BatchGone, DynamoClient, DynamoSettings
from handlers.event import FileRef
from handlers.poller import PollContext, PolledEvent, PollResult, Watched
from handlers.vendor_time import vendor_time

__all__ = ["BatchesPoller", "BatchesSettings", "batch_subject", "file_role"]

log = logging.getLogger("hookdock.documill")

VENDOR = "documill"


class BatchesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api: DynamoSettings
    window_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 86400.0
    """How long Dynamo keeps a batch's status after it was posted (24 hours)."""
    link_seconds: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    """How long a ``resultList`` link works after the task was read (one hour)."""
    max_task_reads: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Tasks read in one poll at most; the rest in the next (a poll stays short)."""


def batch_subject(poller: str, batch_id: str) -> str:
    return f"documill:batch:{poller}:{batch_id}"


def file_role(index: int) -> str:
    """The role of a task's ``index``-th result (``exported``, ``exported-2``, ...)."""
    return "exported" if index == 0 else f"exported-{index + 1}"


def _failed(errors: object) -> bool:
    return bool(errors) and isinstance(errors, list | str | dict)


class BatchesPoller:
    config_model: ClassVar[type[BaseModel]] = BatchesSettings

    def __init__(
        self, settings: BatchesSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.client = DynamoClient(settings.api)
        self._clock = clock

    async def aclose(self) -> None:
        await self.client.aclose()

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        before = self.client.calls
        old: Mapping[str, Any] = state or {}
        reported: dict[str, dict[str, Any]] = dict(old.get("batches", {}))
        found: list[PolledEvent] = []
        closed: list[str] = []
        progress: dict[str, dict[str, Any]] = {}
        budget = [self.settings.max_task_reads]
        for watch in await context.watches():
            done = dict(reported.get(watch.key, {"failed": [], "ok": []}))
            ended = await self._batch(context.poller, watch, done, found, budget)
            if ended is None:
                reported[watch.key] = done
                progress[watch.key] = done["progress"]
            else:
                reported.pop(watch.key, None)
                closed.append(watch.key)
        totals = dict(old.get("totals", {}))
        for event in found:
            totals[event.kind] = int(totals.get(event.kind, 0)) + 1
        totals["open"] = len(progress)
        return PollResult(
            found=tuple(found),
            state={"batches": reported, "progress": progress, "totals": totals},
            calls=self.client.calls - before,
            closed=tuple(closed),
        )

    async def _batch(
        self,
        poller: str,
        watch: Watched,
        done: dict[str, Any],
        found: list[PolledEvent],
        budget: list[int],
    ) -> str | None:
        """Report what is new of one batch; the kind of its last event once it ended."""
        batch_id = watch.key
        records: Mapping[str, Any] = watch.detail.get("tasks", {})
        now = self._clock()
        try:
            batch = await self.client.batch(batch_id)
        except BatchGone:
            found.append(self._expired(poller, batch_id, done, None, "Dynamo no longer knows it"))
            return "batch.expired"
        posted = vendor_time(batch.get("postDateTime")) or watch.added_at
        tasks = [t for t in batch.get("tasks") or [] if isinstance(t, dict) and "id" in t]
        seen = {*done["ok"], *done["failed"]}
        for task in tasks:
            task_id = str(task["id"])
            if task.get("completed") is not True or task_id in seen or budget[0] <= 0:
                continue
            budget[0] -= 1
            detail = await self.client.task(batch_id, task_id)
            if detail.get("completed") is not True:
                continue  # the batch's page ran ahead of the task's: next poll
            read_at = datetime.fromtimestamp(self._clock(), UTC)
            record = records.get(task_id)
            found.append(self._task_event(poller, batch_id, task_id, record, detail, read_at))
            done["failed" if _failed(detail.get("errors")) else "ok"].append(task_id)
            seen.add(task_id)
        total = len(tasks)
        done["progress"] = {
            "tasks": total,
            "completed": len(done["ok"]),
            "failed": len(done["failed"]),
            "posted_at": posted.isoformat(),
        }
        if batch.get("completed") is True and tasks and len(seen) >= total:
            found.append(self._completed(poller, batch_id, batch, done, posted))
            return "batch.completed"
        if now >= posted.timestamp() + self.settings.window_seconds:
            found.append(self._expired(poller, batch_id, done, batch, "its 24-hour window ran out"))
            return "batch.expired"
        return None

    def _task_event(
        self,
        poller: str,
        batch_id: str,
        task_id: str,
        record: Any,
        detail: dict[str, Any],
        read_at: datetime,
    ) -> PolledEvent:
        failed = _failed(detail.get("errors"))
        until = read_at + timedelta(seconds=self.settings.link_seconds)
        results = [r for r in detail.get("resultList") or [] if isinstance(r, dict)]
        files = (
            ()
            if failed
            else tuple(
                FileRef(role=file_role(n), url=r["url"], expires_at=until)
                for n, r in enumerate(r for r in results if isinstance(r.get("url"), str))
            )
        )
        return PolledEvent(
            kind="task.failed" if failed else "task.completed",
            vendor=VENDOR,
            dedupe_key=f"{poller}:task:{batch_id}:{task_id}",
            task_id=task_id,
            batch_id=batch_id,
            external_id=None if record is None else str(record),
            payload={"batch_id": batch_id, "task_id": task_id, "record_id": record, "task": detail},
            subject=f"documill:task:{batch_id}:{task_id}",
            files=files,
        )

    def _completed(
        self,
        poller: str,
        batch_id: str,
        batch: dict[str, Any],
        done: Mapping[str, Any],
        posted: datetime,
    ) -> PolledEvent:
        finished = vendor_time(batch.get("completedDateTime"))
        return PolledEvent(
            kind="batch.completed",
            vendor=VENDOR,
            dedupe_key=f"{poller}:batch.completed:{batch_id}",
            batch_id=batch_id,
            payload={
                "batch_id": batch_id,
                "tasks": len(done["ok"]) + len(done["failed"]),
                "succeeded": len(done["ok"]),
                "failed": len(done["failed"]),
                "failed_tasks": sorted(done["failed"]),
                "errors": batch.get("errors"),
                "seconds_taken": None
                if finished is None
                else round((finished - posted).total_seconds(), 3),
                "batch": batch,
            },
            subject=batch_subject(poller, batch_id),
        )

    def _expired(
        self,
        poller: str,
        batch_id: str,
        done: Mapping[str, Any],
        batch: dict[str, Any] | None,
        why: str,
    ) -> PolledEvent:
        log.warning("documill batch %s: expired before it completed (%s)", batch_id, why)
        tasks = [t for t in (batch or {}).get("tasks") or [] if isinstance(t, dict)]
        reported = {*done.get("ok", []), *done.get("failed", [])}
        return PolledEvent(
            kind="batch.expired",
            vendor=VENDOR,
            dedupe_key=f"{poller}:batch.expired:{batch_id}",
            batch_id=batch_id,
            payload={
                "batch_id": batch_id,
                "reason": why,
                "succeeded": len(done.get("ok", [])),
                "failed": len(done.get("failed", [])),
                "unfinished_tasks": sorted(
                    str(t["id"]) for t in tasks if "id" in t and str(t["id"]) not in reported
                ),
                "batch": batch,
            },
            subject=batch_subject(poller, batch_id),
        )
