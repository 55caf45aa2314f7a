"""``smartdocumentor.batches``: a ``batch.completed`` event once every task of a batch is out.

Each poll lists the tenant's batches (``sdbatch/paginated``; only ``batch_ids`` when given,
and only those created within ``lookback_seconds``), then the tasks created in the same window
(``statuslistpaginated``), page by page, counting per batch the tasks that SmartDocumentor
reports exported *and* that the journal holds (their webhook, a recovered export, or a
``task.missing`` report: ``context.seen``).  A batch whose ``totalTasks`` are all counted
makes one ``batch.completed`` event (counts, task ids, time from creation to completion as
seen here); its dedupe key makes a repeat nothing new, and the state remembers completed
batches so they are not counted again.  Progress of the others is kept in the state, which
``hookdock status`` and ``hookdock pollers`` show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from handlers.poller import PollContext, PolledEvent, PollResult
from handlers.smartdocumentor.client import ApiSettings, SmartDocumentorClient
from handlers.sources.smartdocumentor import task_subject
from handlers.vendor_time import vendor_time

__all__ = ["BatchesPoller", "BatchesSettings"]

# Completed batch ids remembered in the state, newest last: enough to outlast the window.
_DONE_KEPT = 10_000


class BatchesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api: ApiSettings
    batch_ids: tuple[int, ...] = ()
    """Watch only these batches (empty: every batch created within the window)."""
    lookback_seconds: Annotated[float, Field(gt=0, le=90 * 86400)] = 7 * 86400.0
    exported_statuses: tuple[str, ...] = ("ExportCompleted",)
    integrated_statuses: tuple[str, ...] = ("Successful",)


class BatchesPoller:
    config_model: ClassVar[type[BaseModel]] = BatchesSettings

    def __init__(
        self, settings: BatchesSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.client = SmartDocumentorClient(settings.api)
        self._clock = clock

    async def aclose(self) -> None:
        await self.client.aclose()

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        s = self.settings
        now = self._clock()
        calls_before = self.client.calls
        done: list[int] = list((state or {}).get("completed", []))
        done_set = set(done)
        end = datetime.fromtimestamp(now, UTC) + timedelta(seconds=60)
        start = end - timedelta(seconds=s.lookback_seconds + 60)
        watched: dict[int, dict[str, Any]] = {}
        async for page in self.client.batch_pages():
            for batch in page:
                batch_id = batch.get("batchId")
                if not isinstance(batch_id, int) or batch_id in done_set:
                    continue
                if s.batch_ids and batch_id not in s.batch_ids:
                    continue
                created = vendor_time(batch.get("createdOn"))
                if created is not None and created < start:
                    continue
                watched[batch_id] = batch
        out_tasks: dict[int, list[str]] = {b: [] for b in watched}
        if watched:
            async for page in self.client.status_pages(start=start, end=end):
                mine = [t for t in page if t.get("batchId") in watched and self._exported(t)]
                subjects = {str(t["taskId"]): task_subject(str(t["taskId"])) for t in mine}
                seen = await context.seen(
                    [*subjects.values(), *(f"{v}:missing" for v in subjects.values())]
                )
                for task in mine:
                    subject = subjects[str(task["taskId"])]
                    if subject in seen or f"{subject}:missing" in seen:
                        out_tasks[task["batchId"]].append(str(task["taskId"]))
        found: list[PolledEvent] = []
        progress: dict[str, dict[str, int]] = {}
        for batch_id, batch in watched.items():
            total = batch.get("totalTasks")
            exported = out_tasks[batch_id]
            if isinstance(total, int) and total > 0 and len(exported) >= total:
                found.append(self._completed(context.poller, batch, exported, now))
                done.append(batch_id)
            else:
                progress[str(batch_id)] = {
                    "total": total if isinstance(total, int) else 0,
                    "exported": len(exported),
                }
        new_state = {"completed": done[-_DONE_KEPT:], "progress": progress}
        new_state["totals"] = {
            "completed": int((state or {}).get("totals", {}).get("completed", 0)) + len(found),
            "open": len(progress),
        }
        return PollResult(
            found=tuple(found), state=new_state, calls=self.client.calls - calls_before
        )

    def _exported(self, task: Mapping[str, Any]) -> bool:
        s = self.settings
        return (
            task.get("taskStatusText") in s.exported_statuses
            or task.get("integrationStatusText") in s.integrated_statuses
        )

    def _completed(
        self, poller: str, batch: Mapping[str, Any], task_ids: list[str], now: float
    ) -> PolledEvent:
        created = vendor_time(batch.get("createdOn"))
        taken = None if created is None else round(now - created.timestamp(), 3)
        batch_id = str(batch["batchId"])
        return PolledEvent(
            kind="batch.completed",
            vendor="smartdocumentor",
            dedupe_key=f"{poller}:batch.completed:{batch_id}",
            batch_id=batch_id,
            workspace_id=None if batch.get("workspaceId") is None else str(batch["workspaceId"]),
            display_name=batch.get("displayName")
            if isinstance(batch.get("displayName"), str)
            else None,
            payload={
                "batch": dict(batch),
                "total_tasks": batch.get("totalTasks"),
                "exported_tasks": len(task_ids),
                "task_ids": sorted(task_ids, key=lambda t: (len(t), t)),
                "seconds_taken": taken,
            },
        )
