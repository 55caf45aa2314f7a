"""The SmartDocumentor emulator's state: tasks, batches, tokens, faults, and reviews.

A review exports a task: its export body is made once (the bytes ``GetExportData`` answers
later), and its webhook is posted, or dropped or refused as the faults say.  What
SmartDocumentor does with the answer is copied: exported on a 2xx, back to "To Review"
otherwise; a dropped webhook leaves the task exported, as when a proxy answered 2xx for a
request that never reached hookdock.

The numbers of ``ExportCompleted`` and of the integration statuses are not published; the
emulator's are its own (see ``STATUS``), and hookdock reads the ``...Text`` fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from handlers.emulation import ApiFaults

__all__ = [
    "INTEGRATION",
    "KINDS",
    "STATUS",
    "EmulatorSettings",
    "Faults",
    "Task",
    "VendorState",
    "iso",
    "parse_time",
]

STATUS = {"ToReview": 3, "InReview": 4, "Processed": 5, "ExportCompleted": 6}
INTEGRATION = {"Never": 1, "Successful": 2, "Failed": 3}
KINDS = ("text_document", "transcript", "transcript_file", "anonymization_file")


class Faults(ApiFaults):
    drop_webhooks: set[int] = Field(default_factory=set)
    """Task ids whose webhook is never sent (SmartDocumentor still reports them exported)."""
    drop_every: int = 0
    """Drop every n-th webhook as well (0: none)."""
    refuse_webhooks: bool = False
    """Post nothing; the task goes back to ToReview, as when the endpoint answers non-2xx."""
    token_calls: int = 0
    """A token answers 401 after this many API calls (0: only after ``token_seconds``)."""
    empty_last_page: bool = False
    """The last page says ``hasNextPage`` and the one after it is empty."""
    grow_between_pages: bool = False
    """A new task is created inside the listed window after each page: the totals change."""


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = "emulator"
    client_secret: str = "emulator-secret"  # noqa: S105 - a stand-in's well-known default
    token_seconds: int = 3600
    webhook_urls: dict[str, str] = {}
    """Kind (``text_document``, ...) -> URL its export webhooks are posted to."""
    workspaces: dict[int, str] = {1: "text_document", 2: "transcript", 3: "transcript_file"}
    """Workspace id -> the kind of export its tasks make."""
    review_every: float = 0.0
    """Review tasks on this schedule (seconds; 0: only when asked)."""
    review_batch: int = 100
    file_link_seconds: int = 3600
    """How long the ``exportedFileUrl`` links of "URL to file" exports work (then 403)."""
    public_url: str | None = None
    """This emulator's own base URL, for those links (``run_in_thread`` and the CLI set it)."""


@dataclass
class Task:
    task_id: int
    workspace_id: int
    kind: str
    created_on: datetime
    display_name: str
    batch_id: int | None = None
    task_number: int | None = None
    external_id: str | None = None
    description: str | None = None
    file_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "ToReview"
    integration: str = "Never"
    export: bytes | None = None
    webhook: str = "waiting"
    """``waiting``, ``sent``, ``dropped``, ``refused`` or ``failed``."""

    def status_json(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "workspaceId": self.workspace_id,
            "batchId": self.batch_id,
            "taskNumber": self.task_number,
            "externalId": self.external_id,
            "displayName": self.display_name,
            "description": self.description,
            "createdOn": iso(self.created_on),
            "taskStatus": STATUS[self.status],
            "integrationStatus": INTEGRATION[self.integration],
            "taskStatusText": self.status,
            "integrationStatusText": self.integration,
            "totalPages": 1,
            "preProcessingStartedOn": iso(self.created_on),
        }


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class VendorState:
    """Tasks, batches, tokens and faults, and what reviews do.  Thread-safe: tests drive it
    from their thread while the web app answers on its own."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults()
        self.calls: dict[str, int] = {}
        """API calls by endpoint, token requests included."""
        self.listings = 0
        """Paged task listings begun (first pages asked for): one per reconciliation poll."""
        self.tasks: dict[int, Task] = {}
        self.batches: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self._tokens: dict[str, tuple[datetime, int]] = {}
        self._lock = threading.Lock()
        self._sent = 0
        self._session: aiohttp.ClientSession | None = None
        self._changes = 0
        self._file_key = secrets.token_bytes(32)
        self._listing: tuple[Any, int, list[Task]] | None = None

    # ------------------------------------------------------------------ state

    def add_task(
        self,
        *,
        workspace_id: int = 1,
        created_on: datetime | None = None,
        display_name: str | None = None,
        batch_id: int | None = None,
        external_id: str | None = None,
        file_url: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        with self._lock:
            return self._add_task_locked(
                workspace_id, created_on, display_name, batch_id, external_id, file_url, metadata
            )

    def _add_task_locked(
        self,
        workspace_id: int,
        created_on: datetime | None,
        display_name: str | None,
        batch_id: int | None,
        external_id: str | None,
        file_url: str | None,
        metadata: dict[str, Any] | None,
    ) -> int:
        task_id = next(self._ids)
        self._changes += 1
        number = None
        if batch_id is not None:
            batch = self.batches[batch_id]
            batch["totalTasks"] += 1
            batch["totalTasksInHistory"] += 1
            number = batch["totalTasks"]
        self.tasks[task_id] = Task(
            task_id=task_id,
            workspace_id=workspace_id,
            kind=self.settings.workspaces.get(workspace_id, "text_document"),
            created_on=created_on or datetime.now(UTC),
            display_name=display_name or f"document {task_id}",
            batch_id=batch_id,
            task_number=number,
            external_id=external_id,
            file_url=file_url,
            metadata=metadata or {},
        )
        return task_id

    def seed_exported(self, count: int, drop_every: int = 0) -> None:
        """``count`` tasks already reviewed and exported, every ``drop_every``-th webhook lost
        (task ids 1, 2, ... in order: task ``n`` is dropped when ``n % drop_every == 0``)."""
        with self._lock:
            start = datetime.now(UTC) - timedelta(hours=1)
            for n in range(count):
                task_id = self._add_task_locked(
                    1, start + timedelta(milliseconds=n), None, None, None, None, None
                )
                task = self.tasks[task_id]
                task.export = orjson.dumps(self._export(task))
                task.status, task.integration = "ExportCompleted", "Successful"
                task.webhook = "dropped" if drop_every and task_id % drop_every == 0 else "sent"

    def add_batch(self, display_name: str, description: str | None, workspace_id: int) -> int:
        with self._lock:
            batch_id = next(self._batch_ids)
            self.batches[batch_id] = {
                "batchId": batch_id,
                "workspaceId": workspace_id,
                "displayName": display_name,
                "description": description,
                "createdOn": iso(datetime.now(UTC)),
                "totalTasks": 0,
                "totalTasksInHistory": 0,
            }
            return batch_id

    def webhooks(self, state: str) -> set[int]:
        """Task ids whose webhook is in ``state`` (``sent``, ``dropped``, ...)."""
        with self._lock:
            return {t.task_id for t in self.tasks.values() if t.webhook == state}

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})

    def _export(self, task: Task) -> dict[str, Any]:
        body: dict[str, Any] = {
            "taskId": task.task_id,
            "taskNumber": task.task_number,
            "workspaceId": task.workspace_id,
            "displayName": task.display_name,
        }
        if task.kind == "text_document":
            body.update(
                {
                    "originalFileUrl": None,
                    "batchId": task.batch_id,
                    "externalId": task.external_id,
                    "description": task.description,
                    "totalPages": 1,
                    "chunks": [
                        {"entities": [{"type": "Total", "category": "Invoice", "pageNumber": 1}]}
                    ],
                }
            )
        elif task.kind == "transcript":
            body.update({"originalFileUrl": None, "totalTimeInSeconds": 60, "paragraphs": []})
        else:
            body["exportedFileUrl"] = self.file_link(task.task_id)
        return body

    def file_link(self, task_id: int) -> str:
        """A SAS-style link to the task's exported file, expiring after ``file_link_seconds``."""
        until = datetime.now(UTC) + timedelta(seconds=self.settings.file_link_seconds)
        expiry = until.strftime("%Y-%m-%dT%H:%M:%SZ")
        base = self.settings.public_url or "https://files.invalid"
        return f"{base}/files/{task_id}.docx?se={expiry}&sig={self._signature(task_id, expiry)}"

    def _signature(self, task_id: int, expiry: str) -> str:
        message = f"{task_id}\n{expiry}".encode()
        return hmac.new(self._file_key, message, hashlib.sha256).hexdigest()

    def review(self, limit: int | None = None) -> list[Task]:
        """Review up to ``limit`` tasks waiting for it: they are exported now."""
        with self._lock:
            waiting = [t for t in self.tasks.values() if t.status == "ToReview"]
            reviewed = waiting[: len(waiting) if limit is None else limit]
            self._changes += 1
            faults = self.faults
            for task in reviewed:
                task.export = orjson.dumps(self._export(task))
                self._sent += 1
                if faults.refuse_webhooks:
                    task.webhook = "refused"  # back to ToReview, like a non-2xx answer
                    continue
                dropped = task.task_id in faults.drop_webhooks or (
                    faults.drop_every > 0 and self._sent % faults.drop_every == 0
                )
                if dropped:
                    # Lost on the way (a proxy answered 2xx, a journal was restored...):
                    # SmartDocumentor believes it was delivered.
                    task.webhook = "dropped"
                    task.status, task.integration = "ExportCompleted", "Successful"
                else:
                    # Exported once the endpoint answers 2xx (``review_and_post``).
                    task.webhook, task.status = "posting", "InReview"
            return reviewed

    async def review_and_post(self, limit: int | None = None) -> int:
        """Review, then post the webhooks that are not dropped; how many were posted."""
        posted = 0
        for task in self.review(limit):
            if task.webhook != "posting":
                continue
            url = self.settings.webhook_urls.get(task.kind)
            ok = False
            if url is not None and task.export is not None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self._client().post(
                        url, data=task.export, headers={"content-type": "application/json"}
                    ) as response:
                        ok = 200 <= response.status < 300
            with self._lock:
                self._changes += 1
                if ok:
                    task.webhook = "sent"
                    task.status, task.integration = "ExportCompleted", "Successful"
                    posted += 1
                else:
                    # What SmartDocumentor does with a non-2xx: back to "To Review".
                    task.webhook, task.status, task.integration = "failed", "ToReview", "Never"
        return posted

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session
