"""``superoffice.batch_tasks``: each watched batch task polled until it ends, or reported stalled.

The tasks are the poller's watches (``context.watches()``): those ``hookdock superoffice
batch-task submit`` started and those ``... batch-task watch ID`` names, keyed by id.  Each
poll reads every open one (``GET /api/v1/BatchTask/{id}``):

* a terminal ``State`` (4 Succeeded, 6 SucceededManualCleanup: ``batch_task.succeeded``;
  5 Failed: ``batch_task.failed``) is one event carrying ``State``, ``Result``, ``Response``,
  ``FileName``, ``ProgressPercent`` and ``ProgressDescription``, and closes the watch;
* otherwise its progress (state, percent, description, since when unchanged) is kept in the
  state, which ``hookdock status`` shows; one whose progress has not moved for
  ``stalled_seconds`` is a ``batch_task.stalled`` event and a warning in the log, once per
  stall (it moves again: a later stall is reported again), and in ``hookdock status`` (the
  poller's ``warnings``) while it lasts; it is still watched;
* an id SuperOffice does not know is a ``batch_task.missing`` event, and the watch closes.

``State`` arrives as a number or as its name (``"Succeeded"``); both are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from handlers.poller import PollContext, PolledEvent, PollResult
from handlers.superoffice.client import BatchTaskGone, SuperOfficeApi, SuperOfficeClient

__all__ = ["STATES", "BatchTasksPoller", "BatchTasksSettings", "state_number", "task_subject"]

log = logging.getLogger("hookdock.superoffice")

VENDOR = "superoffice"
STATES = {
    0: "Unknown",
    1: "New",
    2: "Aquired",
    3: "Started",
    4: "Succeeded",
    5: "Failed",
    6: "SucceededManualCleanup",
}
_BY_NAME = {name.lower(): number for number, name in STATES.items()} | {"acquired": 2}
TERMINAL = {4: "batch_task.succeeded", 5: "batch_task.failed", 6: "batch_task.succeeded"}
REPORTED = (
    "State",
    "Result",
    "Response",
    "FileName",
    "ProgressPercent",
    "ProgressDescription",
)


class BatchTasksSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api: SuperOfficeApi
    stalled_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] = 900.0
    """A task whose state, percent and description have not changed this long is stalled."""


def task_subject(poller: str, task_id: str) -> str:
    return f"superoffice:batch-task:{poller}:{task_id}"


def state_number(value: object) -> int | None:
    """``State`` as its number, from a number, a numeric string or a name; None if unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value in STATES else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return state_number(int(text))
        return _BY_NAME.get(text.lower())
    return None


class BatchTasksPoller:
    config_model: ClassVar[type[BaseModel]] = BatchTasksSettings

    def __init__(
        self, settings: BatchTasksSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.client = SuperOfficeClient(settings.api)
        self._clock = clock

    async def aclose(self) -> None:
        await self.client.aclose()

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        before = self.client.calls
        old = state or {}
        seen: dict[str, dict[str, Any]] = dict(old.get("tasks", {}))
        found: list[PolledEvent] = []
        closed: list[str] = []
        tracked: dict[str, dict[str, Any]] = {}
        for watch in await context.watches():
            key = watch.key
            try:
                info = await self.client.batch_task(int(key))
            except BatchTaskGone as exc:
                found.append(self._event(context.poller, key, "batch_task.missing", {}, "gone"))
                log.warning("superoffice batch task %s: %s", key, exc.message)
                closed.append(key)
                continue
            number = state_number(info.get("State"))
            if number in TERMINAL:
                found.append(self._event(context.poller, key, TERMINAL[number], info, "ended"))
                closed.append(key)
                continue
            tracked[key] = self._progress(context.poller, key, info, seen.get(key), found)
        totals = dict(old.get("totals", {}))
        for event in found:
            totals[event.kind] = int(totals.get(event.kind, 0)) + 1
        totals["open"] = len(tracked)
        progress = {
            key: {
                "state": t["state"],
                "percent": t["percent"],
                "description": t["description"],
                "unchanged_since": datetime.fromtimestamp(t["changed_at"], UTC).isoformat(),
                "stalled": t["stalled_at"] is not None,
            }
            for key, t in tracked.items()
        }
        warnings = [
            f"batch task {key}: no progress since {p['unchanged_since']}"
            f" ({p['state']}, {p['percent']}%: {p['description']})"
            for key, p in progress.items()
            if p["stalled"]
        ]
        return PollResult(
            found=tuple(found),
            state={"tasks": tracked, "progress": progress, "totals": totals, "warnings": warnings},
            calls=self.client.calls - before,
            closed=tuple(closed),
        )

    def _progress(
        self,
        poller: str,
        key: str,
        info: Mapping[str, Any],
        before: Mapping[str, Any] | None,
        found: list[PolledEvent],
    ) -> dict[str, Any]:
        now = self._clock()
        number = state_number(info.get("State"))
        mark = {
            "state": STATES.get(number, str(info.get("State"))) if number is not None else None,
            "percent": info.get("ProgressPercent"),
            "description": info.get("ProgressDescription"),
        }
        if before is None or any(before.get(k) != v for k, v in mark.items()):
            return {**mark, "changed_at": now, "stalled_at": None}
        tracked = dict(before)
        quiet = now - float(tracked["changed_at"])
        if tracked.get("stalled_at") is None and quiet >= self.settings.stalled_seconds:
            log.warning(
                "superoffice batch task %s: stalled, no progress for %.0f s (%s, %s%%)",
                key,
                quiet,
                mark["state"],
                mark["percent"],
            )
            stall = f"stalled:{tracked['changed_at']:.3f}"
            event = self._event(poller, key, "batch_task.stalled", info, stall)
            found.append(
                event.model_copy(
                    update={"payload": {**event.payload, "quiet_seconds": round(quiet, 1)}}
                )
            )
            tracked["stalled_at"] = now
        return tracked

    def _event(
        self, poller: str, key: str, kind: str, info: Mapping[str, Any], what: str
    ) -> PolledEvent:
        number = state_number(info.get("State"))
        payload: dict[str, Any] = {name: info.get(name) for name in REPORTED}
        payload["State"] = number if number is not None else info.get("State")
        payload["StateName"] = STATES.get(number) if number is not None else None
        payload["batch_task_id"] = int(key)
        payload["batch_task"] = dict(info)
        name = info.get("Name")
        return PolledEvent(
            kind=kind,
            vendor=VENDOR,
            dedupe_key=f"{poller}:batch_task:{key}:{what}",
            task_id=key,
            display_name=name if isinstance(name, str) else None,
            payload=payload,
            subject=task_subject(poller, key),
            attributes={"state": payload["StateName"]},
        )
