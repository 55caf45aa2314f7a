"""``smartdocumentor.reconcile``: exports SmartDocumentor made whose webhook never arrived.

SmartDocumentor sends each export once, with no retry.  Every poll lists the tasks created in
a sliding window (the last ``lookback_seconds``, so consecutive windows overlap by all but one
interval and a task reviewed days after its creation is still seen), page by page, and asks
the journal, through ``context.seen``, which of the tasks reported as exported (or integrated)
have a delivery.  One without is remembered in the state with the time it was first seen so;
if it is still without one ``grace_seconds`` later (a webhook may be on its way), it becomes:

* a ``task.missing`` event (its status as payload, ``recovered`` saying whether the export
  was pulled), routed by the poller's sinks and rules;
* for a text document, when ``route`` names the webhook route that receives them, the export
  itself, pulled with ``GetExportData`` and entered on that route as if the webhook had come,
  marked as recovered.  The route's source admits it, so its dedupe key is the webhook's: a
  late webhook with the same bytes is not a second event.

Both carry subjects, so the next poll (whose window overlaps) finds them and does not report
the task again; their dedupe keys make a repeat after a crash nothing new.  The state holds
only the tasks waiting out their grace period, so memory does not grow with the task count.

Reprocessing a task at the vendor (``reprocess_missing``) is destructive and costs credits:
off unless set, and logged as a warning for every task it reprocesses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from handlers.poller import (
    PollContext,
    PolledDelivery,
    PolledEvent,
    PollRejected,
    PollResult,
)
from handlers.smartdocumentor.client import ApiSettings, SmartDocumentorClient
from handlers.sources.smartdocumentor import task_subject

__all__ = ["ReconcilePoller", "ReconcileSettings"]

log = logging.getLogger("hookdock.smartdocumentor")


class ReconcileSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api: ApiSettings
    route: str | None = None
    """The webhook route of text documents, to recover their exports into; None: report only."""
    lookback_seconds: Annotated[float, Field(gt=0, le=90 * 86400)] = 7 * 86400.0
    """Tasks created this long ago or less are watched."""
    grace_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 600.0
    """How long an exported task may wait for its webhook before it counts as missing."""
    exported_statuses: tuple[str, ...] = ("ExportCompleted",)
    """``taskStatusText`` values that mean the export was sent."""
    integrated_statuses: tuple[str, ...] = ("Successful",)
    """``integrationStatusText`` values that mean the same."""
    workspace_ids: tuple[int, ...] = ()
    """Only these workspaces (empty: all)."""
    reprocess_missing: bool = False
    """Reprocess at the vendor each missing task whose export cannot be pulled.  Destructive,
    and it costs credits: every one is logged as a warning."""


class ReconcilePoller:
    config_model: ClassVar[type[BaseModel]] = ReconcileSettings

    def __init__(
        self,
        settings: ReconcileSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.client = SmartDocumentorClient(settings.api)
        self._clock = clock
        if settings.reprocess_missing:
            log.warning(
                "smartdocumentor.reconcile: reprocess_missing is ON: missing tasks whose export"
                " cannot be pulled will be REPROCESSED at SmartDocumentor (destructive, costs"
                " credits)"
            )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        s = self.settings
        now = self._clock()
        waiting: dict[str, float] = dict((state or {}).get("waiting", {}))
        still_listed: set[str] = set()
        found: list[PolledDelivery | PolledEvent] = []
        calls_before = self.client.calls
        end = datetime.fromtimestamp(now, UTC) + timedelta(seconds=60)
        start = end - timedelta(seconds=s.lookback_seconds + 60)
        listed = exported = 0
        async for page in self.client.status_pages(
            start=start, end=end, workspace_ids=s.workspace_ids
        ):
            listed += len(page)
            done = {str(t["taskId"]): t for t in page if self._exported(t) and "taskId" in t}
            exported += len(done)
            subjects = {tid: task_subject(tid) for tid in done}
            missing_subjects = {tid: _missing_subject(tid) for tid in done}
            seen = await context.seen([*subjects.values(), *missing_subjects.values()])
            for tid, task in done.items():
                if subjects[tid] in seen or missing_subjects[tid] in seen:
                    waiting.pop(tid, None)
                    continue
                first = waiting.setdefault(tid, now)
                if now - first < s.grace_seconds:
                    still_listed.add(tid)
                    continue
                waiting.pop(tid, None)
                found.extend(await self._missing(tid, task, context.poller))
        # A task that left the window (or was deleted) is no longer waited for.
        waiting = {tid: t for tid, t in waiting.items() if tid in still_listed}
        missing = sum(1 for item in found if isinstance(item, PolledEvent))
        totals = dict((state or {}).get("totals", {}))
        totals["missing"] = int(totals.get("missing", 0)) + missing
        totals["recovered"] = int(totals.get("recovered", 0)) + (len(found) - missing)
        new_state = {
            "window": [start.isoformat(), end.isoformat()],
            "listed": listed,
            "exported": exported,
            "waiting": waiting,
            "totals": totals,
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

    async def _missing(
        self, tid: str, task: Mapping[str, Any], poller: str
    ) -> list[PolledDelivery | PolledEvent]:
        out: list[PolledDelivery | PolledEvent] = []
        recovered = False
        if self.settings.route is not None:
            try:
                body = await self.client.export_data(tid)
            except PollRejected as exc:
                # Not a text document (or gone): there is no export to pull, only the report.
                log.info("smartdocumentor.reconcile: task %s: no export data (%s)", tid, exc)
            else:
                out.append(
                    PolledDelivery(route=self.settings.route, body=body, subject=task_subject(tid))
                )
                recovered = True
        if not recovered and self.settings.reprocess_missing:
            log.warning(
                "smartdocumentor.reconcile: REPROCESSING task %s at SmartDocumentor"
                " (reprocess_missing is on)",
                tid,
            )
            await self.client.restart_processing(tid)
        out.append(
            PolledEvent(
                kind="task.missing",
                vendor="smartdocumentor",
                dedupe_key=f"{poller}:task.missing:{tid}",
                task_id=tid,
                workspace_id=_opt(task.get("workspaceId")),
                batch_id=_opt(task.get("batchId")),
                external_id=_opt(task.get("externalId")),
                display_name=_opt(task.get("displayName")),
                payload={"task": dict(task), "recovered": recovered},
                subject=_missing_subject(tid),
            )
        )
        return out


def _missing_subject(task_id: str) -> str:
    return f"{task_subject(task_id)}:missing"


def _opt(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value) or None
