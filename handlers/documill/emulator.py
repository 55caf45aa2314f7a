"""A Documill Dynamo stand-in: its batch API and its result files, with faults to switch on.

For a local trial (``hookdock emulate documill``) and for tests, as a real aiohttp server.  A
posted batch (JSON, or multipart with a ``template`` file, a ``data`` part and ``param.<name>``
parts merged into tasks by ``partParams``) is kept in memory; its tasks finish on a clock
(``task_seconds`` each, ``parallel`` at a time), each with one result file (``copies`` in its
params: up to five) behind a signed link
that works ``link_seconds`` from when the task was read (then 403, as an expired link does).
The status of a batch is kept ``window_seconds`` (then 404).

Faults (``Faults``; ``POST /_emulator/faults`` or ``set_faults``): 5xx and 429 answers, slow
answers, tasks that fail (by record id, or every n-th), batches that never complete (their
last task never finishes).  Wrong credentials answer 401.  The status strings differ between
the batch's page and the task's, as Dynamo's do: only the booleans are to be trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from handlers.emulation import ApiFaults, take_fault

__all__ = ["DocumillEmulator", "EmulatorSettings", "Faults", "result_bytes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Faults(ApiFaults):
    fail_records: set[str] = Field(default_factory=set)
    """Tasks for these records (``params.id``) fail with an error."""
    fail_every: int = 0
    """Every n-th task of a batch fails (0: none)."""
    never_complete: bool = False
    """Batches posted now never complete: their last task never finishes."""


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = "emulator-tenant"
    api_key: str = "emulator-key"
    task_seconds: float = 0.05
    parallel: int = 10
    link_seconds: float = 3600.0
    window_seconds: float = 86400.0
    public_url: str = "http://127.0.0.1:8091"


@dataclass
class Task:
    task_id: str
    position: int
    params: dict[str, Any]
    done_at: datetime | None
    """None: it never finishes."""
    fails: bool


@dataclass
class Batch:
    batch_id: str
    posted_at: datetime
    template: str
    tasks: list[Task]
    multipart: bool
    parts: dict[str, Any] = field(default_factory=dict)


def result_bytes(batch_id: str, task_id: str, params: dict[str, Any], n: int = 0) -> bytes:
    """The ``n``-th document a task makes: a few KiB that depend on the batch, task, params."""
    what: dict[str, Any] = {"batch": batch_id, "task": task_id, "params": params}
    if n:
        what["n"] = n
    head = b"%PDF-1.4\n% documill emulator\n" + orjson.dumps(what, option=orjson.OPT_SORT_KEYS)
    seed = hashlib.sha256(head).digest()
    filler = b"".join(
        hashlib.sha256(seed + n.to_bytes(4, "big")).digest() for n in range(64 + seed[0])
    )
    return head + b"\n" + filler + b"\n%%EOF\n"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class DocumillEmulator:
    """The vendor's state and its web app (``app()``); thread-safe for tests."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults()
        self.batches: dict[str, Batch] = {}
        self.calls: dict[str, int] = {}
        """API calls by kind (``post``, ``batch``, ``task``, ``file``)."""
        self.file_gets: dict[str, int] = {}
        """Requests for each result file (``batch/task``), answered or not."""
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._n = itertools.count(1)

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/batch", self._post)
        app.router.add_get("/v1/batch/{batch}", self._batch)
        app.router.add_get("/v1/batch/{batch}/{task}", self._task)
        app.router.add_get("/files/{batch}/{task}/{name}", self._file)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_get("/_emulator/state", self._state)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/_emulator/", "/files/")):
            return await handler(request)
        answer: web.Response | None = None
        with self._lock:
            faults = self.faults
            answer = take_fault(faults)
        s = self.settings
        tenant = request.headers.get("x-dynamo-tenant-id", "")
        key = request.headers.get("x-dynamo-api-key", "")
        if answer is None and not (
            secrets.compare_digest(tenant, s.tenant_id) and secrets.compare_digest(key, s.api_key)
        ):
            answer = web.json_response({"message": "Unauthorized"}, status=401)
        if faults.slow_seconds:
            await asyncio.sleep(faults.slow_seconds)
        return answer if answer is not None else await handler(request)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] = self.calls.get(kind, 0) + 1

    async def _post(self, request: web.Request) -> web.Response:
        self._count("post")
        parts: dict[str, Any] = {}
        template_file: bytes | None = None
        try:
            if request.content_type.startswith("multipart/"):
                data: Any = None
                reader = await request.multipart()
                async for part in reader:
                    name = getattr(part, "name", None) or ""
                    raw = await part.read()  # type: ignore[union-attr]
                    if name == "template":
                        template_file = bytes(raw)
                    elif name == "data":
                        data = orjson.loads(raw)
                    elif name.startswith("param."):
                        parts[name.removeprefix("param.")] = orjson.loads(raw)
            else:
                data = orjson.loads(await request.read())
        except (orjson.JSONDecodeError, ValueError):
            return _error(400, "the body is not valid JSON")
        problem = _problem(data, template_file is not None, parts)
        if problem:
            return _error(400, problem)
        batch = self._new_batch(data, template_file, parts)
        return web.json_response(
            {
                "id": batch.batch_id,
                "tasks": [t.task_id for t in batch.tasks],
                "message": "Success",
                "licenseUsage": len(batch.tasks),
            },
            status=202,
        )

    def _new_batch(
        self, data: dict[str, Any], template: bytes | None, parts: dict[str, Any]
    ) -> Batch:
        now = datetime.now(UTC)
        s = self.settings
        with self._lock:
            faults = self.faults
            tasks = []
            count = len(data["tasks"])
            for n, spec in enumerate(data["tasks"]):
                params = dict(spec["params"])
                for mapping in spec.get("partParams") or []:
                    params[mapping["paramName"]] = parts[mapping["partName"]]
                fails = str(params["id"]) in faults.fail_records or (
                    faults.fail_every > 0 and (n + 1) % faults.fail_every == 0
                )
                never = faults.never_complete and n == count - 1
                delay = s.task_seconds * (n // max(1, s.parallel) + 1)
                tasks.append(
                    Task(
                        str(uuid.uuid4()),
                        n,
                        params,
                        None if never else now + timedelta(seconds=delay),
                        fails,
                    )
                )
            batch_id = hashlib.md5(f"{next(self._n)}{now}".encode(), usedforsecurity=False)
            name = data.get("template") or "embedded.dap"
            batch = Batch(batch_id.hexdigest(), now, name, tasks, template is not None, parts)
            self.batches[batch.batch_id] = batch
            return batch

    def _find(self, batch_id: str) -> Batch | None:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            return None
        kept = batch.posted_at + timedelta(seconds=self.settings.window_seconds)
        return batch if datetime.now(UTC) < kept else None

    async def _batch(self, request: web.Request) -> web.Response:
        self._count("batch")
        batch = self._find(request.match_info["batch"])
        if batch is None:
            return _error(404, "batch not found")
        now = datetime.now(UTC)
        finished = [t for t in batch.tasks if t.done_at is not None and t.done_at <= now]
        done = {t.task_id for t in finished}
        completed = len(finished) == len(batch.tasks)
        started = any(finished)
        return web.json_response(
            {
                "postDateTime": _iso(batch.posted_at),
                "completed": completed,
                "completedDateTime": _iso(max(t.done_at for t in finished if t.done_at))
                if completed
                else None,
                "errors": [f"task {t.task_id} failed" for t in finished if t.fails],
                "statusMessage": "Completed"
                if completed
                else ("Started" if started else "Waiting"),
                "tasks": [
                    {
                        "id": t.task_id,
                        "completed": t.task_id in done,
                        "errors": ["Template error"] if t.task_id in done and t.fails else [],
                    }
                    for t in batch.tasks
                ],
            }
        )

    async def _task(self, request: web.Request) -> web.Response:
        self._count("task")
        batch = self._find(request.match_info["batch"])
        task = None
        if batch is not None:
            task = next((t for t in batch.tasks if t.task_id == request.match_info["task"]), None)
        if batch is None or task is None:
            return _error(404, "task not found")
        now = datetime.now(UTC)
        done = task.done_at is not None and task.done_at <= now
        body: dict[str, Any] = {
            "completed": done,
            # Not the batch page's words: only the booleans mean the same on both.
            "statusMessage": ("Finished with errors" if task.fails else "OK") if done else "Busy",
            "startDateTime": _iso(batch.posted_at),
            "endDateTime": _iso(task.done_at) if done and task.done_at else None,
            "log": f"task {task.position + 1} of {len(batch.tasks)}",
            "errors": [f"Template error: no value for record {task.params['id']}"]
            if done and task.fails
            else [],
            "results": {},
            "resultList": [],
        }
        if done and not task.fails:
            copies = task.params.get("copies", 1)
            names = [
                f"{task.params['id']}{f'-{n + 1}' if n else ''}.pdf"
                for n in range(copies if isinstance(copies, int) and 0 < copies <= 5 else 1)
            ]
            body["results"] = {"documents": names}
            body["resultList"] = [
                {"id": name, "url": self._link(batch.batch_id, task.task_id, n)}
                for n, name in enumerate(names)
            ]
        return web.json_response(body)

    def _link(self, batch_id: str, task_id: str, n: int) -> str:
        until = datetime.now(UTC) + timedelta(seconds=self.settings.link_seconds)
        expiry = str(int(until.timestamp() * 1000))
        base = self.settings.public_url
        sig = self._sig(batch_id, task_id, n, expiry)
        return f"{base}/files/{batch_id}/{task_id}/{n}.pdf?se={expiry}&sig={sig}"

    def _sig(self, batch_id: str, task_id: str, n: int, expiry: str) -> str:
        message = f"{batch_id}/{task_id}/{n}/{expiry}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def _file(self, request: web.Request) -> web.Response:
        batch_id, task_id = request.match_info["batch"], request.match_info["task"]
        name = request.match_info["name"].removesuffix(".pdf")
        if not name.isdigit():
            return web.Response(status=404)
        n = int(name)
        with self._lock:
            key = f"{batch_id}/{task_id}"
            self.file_gets[key] = self.file_gets.get(key, 0) + 1
            batch = self.batches.get(batch_id)
        expiry, sig = request.query.get("se", ""), request.query.get("sig", "")
        good = expiry.isdigit() and hmac.compare_digest(
            self._sig(batch_id, task_id, n, expiry), sig
        )
        if not good or datetime.now(UTC).timestamp() * 1000 >= int(expiry):
            return web.Response(status=403, text="link expired")
        task = (
            None if batch is None else next((t for t in batch.tasks if t.task_id == task_id), None)
        )
        if batch is None or task is None:
            return web.Response(status=404)
        suffix = f"-{n + 1}" if n else ""
        return web.Response(
            body=result_bytes(batch_id, task_id, task.params, n),
            content_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="{task.params["id"]}{suffix}.pdf"'
            },
        )

    async def _set_faults(self, request: web.Request) -> web.Response:
        self.set_faults(**await request.json())
        return web.json_response(self.faults.model_dump(mode="json"))

    async def _state(self, _request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(
                {
                    "batches": {b: len(v.tasks) for b, v in self.batches.items()},
                    "calls": self.calls,
                    "file_gets": self.file_gets,
                }
            )


def _problem(data: Any, has_file: bool, parts: dict[str, Any]) -> str | None:
    """Why Dynamo would refuse this batch (the emulator checks as the real one would)."""
    if not isinstance(data, dict):
        return "no batch data"
    if not has_file and not isinstance(data.get("template"), str):
        return "template missing"
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not 1 <= len(tasks) <= 1000:
        return "a batch has 1 to 1000 tasks"
    for n, task in enumerate(tasks):
        params = task.get("params") if isinstance(task, dict) else None
        if not isinstance(params, dict) or params.get("id") in (None, ""):
            return f"task {n}: params.id missing"
        for mapping in task.get("partParams") or []:
            if mapping.get("partName") not in parts:
                return f"task {n}: no part named {mapping.get('partName')}"
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)
