"""A SuperOffice stand-in for batch tasks: ``POST /api/v1/BatchTask`` and ``GET .../{id}``.

For a local trial (``hookdock emulate superoffice``) and for tests, as a real aiohttp server.
A task's course follows its ``Name``: ``fail...`` fails half way, ``stall...`` stops moving at
40 %, ``manual...`` ends in ``SucceededManualCleanup``, anything else succeeds; it moves
``step_percent`` every ``step_seconds``.  It answers JSON to a client that asks for it
(``Accept``) and XML otherwise, as SuperOffice does; ``State`` is sent by name.

Credentials: ``Basic`` (``username``/``password``), ``Bearer`` (``token``) or ``SOTicket``
(``ticket``), and ``SO-AppToken`` when ``app_token`` is set; anything else answers 401.
Faults (``Faults``; ``POST /_emulator/faults`` or ``set_faults``): 5xx and 429 answers, slow
answers.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from handlers.emulation import ApiFaults, take_fault
from handlers.superoffice.batch_tasks import STATES

__all__ = ["EmulatorSettings", "Faults", "SuperOfficeEmulator"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_XMLNS = "http://www.superoffice.net/ws/crm/NetServer/Services88"


class Faults(ApiFaults):
    """SuperOffice's emulator has no faults but those every emulator has."""


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = "emulator"
    password: str = "emulator-password"  # noqa: S105 - a stand-in's well-known default
    token: str = "emulator-token"  # noqa: S105
    ticket: str = "7T:emulator-ticket"
    app_token: str | None = None
    step_seconds: float = 0.1
    step_percent: int = 25


@dataclass
class BatchTask:
    task_id: int
    info: dict[str, Any]
    started: datetime
    course: str
    """``succeed``, ``fail``, ``stall`` or ``manual``."""


def _course(name: object) -> str:
    text = name.lower() if isinstance(name, str) else ""
    for course in ("fail", "stall", "manual"):
        if text.startswith(course):
            return course
    return "succeed"


class SuperOfficeEmulator:
    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults()
        self.tasks: dict[int, BatchTask] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(997)

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/api/v1/BatchTask", self._create)
        app.router.add_get("/api/v1/BatchTask/{id}", self._get)
        app.router.add_post("/_emulator/faults", self._set_faults)
        return app

    def _authorized(self, request: web.Request) -> bool:
        s = self.settings
        given = request.headers.get("authorization", "")
        basic = base64.b64encode(f"{s.username}:{s.password}".encode()).decode()
        good = any(
            secrets.compare_digest(given, expected)
            for expected in (f"Basic {basic}", f"Bearer {s.token}", f"SOTicket {s.ticket}")
        )
        if s.app_token is not None:
            good = good and secrets.compare_digest(
                request.headers.get("so-apptoken", ""), s.app_token
            )
        return good

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return await handler(request)
        answer: web.Response | None = None
        with self._lock:
            kind = f"{request.method} {request.path.rsplit('/', 1)[0]}"
            self.calls[kind] = self.calls.get(kind, 0) + 1
            faults = self.faults
            answer = take_fault(faults)
        if answer is None and not self._authorized(request):
            answer = web.Response(status=401, text="Unauthorized")
        if faults.slow_seconds:
            await asyncio.sleep(faults.slow_seconds)
        return answer if answer is not None else await handler(request)

    async def _create(self, request: web.Request) -> web.Response:
        if "json" not in request.content_type:
            return web.Response(status=415, text="send a BatchTaskInfo as JSON")
        try:
            info = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="not JSON")
        if not isinstance(info, dict):
            return web.Response(status=400, text="a BatchTaskInfo is an object")
        with self._lock:
            task_id = next(self._ids)
            self.tasks[task_id] = BatchTask(
                task_id, info, datetime.now(UTC), _course(info.get("Name"))
            )
        return _answer(request, task_id, "int")

    def info(self, task_id: int) -> dict[str, Any] | None:
        """The task's ``BatchTaskInfo`` now: where its course has got to."""
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None:
            return None
        s = self.settings
        steps = int((datetime.now(UTC) - task.started).total_seconds() / s.step_seconds)
        percent = min(100, steps * s.step_percent)
        state, result, response, file_name = (1 if steps == 0 else 3), None, None, None
        description = "Queued" if steps == 0 else f"Working: step {steps}"
        if task.course == "stall":
            percent = min(percent, 40)
            description = "Queued" if steps == 0 else "Exporting rows"
        elif task.course == "fail" and percent >= 50:
            state, percent = 5, 50
            response, description = "Error: the selection no longer exists", "Failed"
        elif percent >= 100:
            state = 6 if task.course == "manual" else 4
            result, description = "OK", "Done"
            file_name = f"export-{task.task_id}.xlsx"
        return {
            **task.info,
            "Id": task.task_id,
            "State": STATES[state],
            "ProgressPercent": percent,
            "ProgressDescription": description,
            "Result": result,
            "Response": response,
            "FileName": file_name,
            "Created": task.started.isoformat(),
        }

    async def _get(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        info = self.info(int(raw)) if raw.isdigit() else None
        if info is None:
            return web.Response(status=404, text="no such batch task")
        return _answer(request, info, "BatchTaskInfo")

    async def _set_faults(self, request: web.Request) -> web.Response:
        self.set_faults(**await request.json())
        return web.json_response(self.faults.model_dump(mode="json"))


def _answer(request: web.Request, value: Any, root: str) -> web.Response:
    """JSON to a client that asks for it; XML otherwise, as SuperOffice answers."""
    if "json" in request.headers.get("accept", ""):
        return web.Response(body=orjson.dumps(value), content_type="application/json")
    if isinstance(value, dict):
        inner = "".join(
            f'<{k} i:nil="true"/>' if v is None else f"<{k}>{escape(_text(v))}</{k}>"
            for k, v in value.items()
            if not isinstance(v, dict | list)
        )
    else:
        inner = escape(_text(value))
    body = (
        f'<{root} xmlns="{_XMLNS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        f"{inner}</{root}>"
    )
    return web.Response(text=body, content_type="application/xml")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
