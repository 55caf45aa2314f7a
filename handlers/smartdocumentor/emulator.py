"""A SmartDocumentor stand-in: its API and its export webhooks, with faults to switch on.

For a local trial (``hookdock emulate smartdocumentor``) and for tests, as a real aiohttp
server.  It keeps tasks and batches in memory (``emulator_state``), answers the API calls
hookdock makes (token, task status list paged and not, task status, export data, batches,
create task), and "reviews" tasks on a schedule: each reviewed task's export webhook is posted
to the URL configured for its workspace's kind, unless a fault drops it.

Faults (``Faults``, changed while it runs through ``POST /_emulator/faults`` or in-process):
webhooks dropped (given task ids, or every n-th) or refused, tokens that expire after n calls
(a 401 in the middle of paging), a number of 5xx and of 429 answers with ``Retry-After``, slow
answers, page edges (a last page that is empty; a task created between two pages, so the
totals change).  The "URL to file" exports link to files the emulator serves itself, behind
SAS-style links that answer 403 once their ``se`` has passed (``file_link_seconds``).
``GET /_emulator/state`` tells what happened to every webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from handlers.emulation import serve_in_thread, take_fault
from handlers.smartdocumentor.emulator_state import (
    INTEGRATION,
    STATUS,
    EmulatorSettings,
    Faults,
    Task,
    VendorState,
    parse_time,
)

__all__ = [
    "STATUS",
    "Emulator",
    "EmulatorSettings",
    "Faults",
    "call_in_loop",
    "run_in_thread",
]

log = logging.getLogger("hookdock.emulator")


class Emulator(VendorState):
    """The vendor's state served as its web app (``app()``)."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        super().__init__(settings)
        self._reviewer: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop it serves on, once ``run_in_thread`` started it."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware])
        api = "/api/v1.0/external/"
        app.router.add_post("/connect/token", self._token)
        app.router.add_get(api + "sdtask/statuslist", self._statuslist)
        app.router.add_get(api + "sdtask/statuslistpaginated", self._statuslist_paginated)
        app.router.add_get(api + "sdtask/status", self._status)
        app.router.add_get(api + "sdtask/GetExportData/{task_id}", self._export_data)
        app.router.add_post(api + "sdtask/process", self._create_task)
        app.router.add_post(api + "sdbatch", self._create_batch)
        app.router.add_get(api + "sdbatch", self._get_batch)
        app.router.add_get(api + "sdbatch/paginated", self._batches_paginated)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/_emulator/state", self._state)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_post("/_emulator/tasks", self._add_tasks)
        app.router.add_post("/_emulator/review", self._review)
        app.on_startup.append(self._start_reviewer)
        app.on_cleanup.append(self._stop)
        return app

    async def _start_reviewer(self, _app: web.Application) -> None:
        if self.settings.review_every > 0:
            self._reviewer = asyncio.create_task(self._review_loop())

    async def _review_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.review_every)
            try:
                await self.review_and_post(self.settings.review_batch)
            except Exception:
                log.exception("emulator: review failed")

    async def _stop(self, _app: web.Application) -> None:
        if self._reviewer is not None:
            self._reviewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reviewer
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/_emulator/", "/files/")):
            return await handler(request)
        endpoint = path.removeprefix("/api/v1.0/external/")
        with self._lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
            faults = self.faults
            answer = take_fault(faults)
            if answer is None and path != "/connect/token" and not self._token_ok(request):
                answer = web.Response(status=401, text="unauthorized")
        if faults.slow_seconds:
            await asyncio.sleep(faults.slow_seconds)
        if answer is not None:
            return answer
        response: web.StreamResponse = await handler(request)
        return response

    def _token_ok(self, request: web.Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        held = self._tokens.get(token)
        if held is None:
            return False
        until, calls = held
        limit = self.faults.token_calls
        if datetime.now(UTC) >= until or (limit and calls >= limit):
            return False
        self._tokens[token] = (until, calls + 1)
        return True

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        s = self.settings
        good = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_id") == s.client_id
            and secrets.compare_digest(str(form.get("client_secret", "")), s.client_secret)
        )
        if not good:
            return web.json_response({"error": "invalid_client"}, status=400)
        token = secrets.token_urlsafe(24)
        with self._lock:
            until = datetime.now(UTC) + timedelta(seconds=s.token_seconds)
            self._tokens[token] = (until, 0)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": s.token_seconds,
                "token_type": "Bearer",
                "scope": form.get("scope", "WebAPI"),
            }
        )

    def _filtered(self, request: web.Request) -> list[Task] | web.Response:
        q = request.query
        start, end = parse_time(q.get("startDate")), parse_time(q.get("endDate"))
        if start is None and end is None:
            return web.Response(status=400)
        statuses = {int(v) for v in q.getall("taskStatus", [])}
        integrations = {int(v) for v in q.getall("integrationStatus", [])}
        workspaces = {int(v) for v in q.getall("workspaceId", [])}
        key = (start, end, frozenset(statuses), frozenset(integrations), frozenset(workspaces))
        with self._lock:
            # Paging through 100,000 tasks asks the same question a thousand times: filter and
            # sort once per change of the tasks, not once per page.
            cached = self._listing
            if cached is not None and cached[0] == key and cached[1] == self._changes:
                return cached[2]
            found = [
                t
                for t in self.tasks.values()
                if (start is None or t.created_on > start)
                and (end is None or t.created_on < end)
                and (not statuses or STATUS[t.status] in statuses)
                and (not integrations or INTEGRATION[t.integration] in integrations)
                and (not workspaces or t.workspace_id in workspaces)
            ]
            found.sort(key=lambda t: (t.created_on, t.task_id))
            self._listing = (key, self._changes, found)
        return found

    async def _statuslist(self, request: web.Request) -> web.Response:
        found = self._filtered(request)
        if isinstance(found, web.Response):
            return found
        return _json([t.status_json() for t in found])

    async def _statuslist_paginated(self, request: web.Request) -> web.Response:
        found = self._filtered(request)
        if isinstance(found, web.Response):
            return found
        page = max(1, int(request.query.get("pageNumber", "1")))
        size = max(1, int(request.query.get("pageSize", "10")))
        if page == 1:
            with self._lock:
                self.listings += 1
        answer = _task_page(found, page, size, self.faults.empty_last_page)
        if self.faults.grow_between_pages and found:
            # Inside the window (just after its newest task), so the next page shifts.
            self.add_task(
                workspace_id=found[-1].workspace_id,
                created_on=found[-1].created_on + timedelta(microseconds=1),
            )
        return _json(answer)

    async def _status(self, request: web.Request) -> web.Response:
        task_id, external = request.query.get("taskId"), request.query.get("externalId")
        with self._lock:
            for task in self.tasks.values():
                if (task_id is not None and str(task.task_id) == task_id) or (
                    external is not None and task.external_id == external
                ):
                    return _json(task.status_json())
        return web.Response(status=404)

    async def _export_data(self, request: web.Request) -> web.Response:
        with self._lock:
            task = self.tasks.get(int(request.match_info["task_id"]))
            if task is None or task.export is None:
                return web.Response(status=404)
            if task.kind != "text_document":
                return web.Response(status=400, text="export data is for text documents")
            return web.Response(body=task.export, content_type="application/json")

    async def _create_task(self, request: web.Request) -> web.Response:
        body = await request.json()
        batch_id = body.get("batchId")
        with self._lock:
            if batch_id is not None and batch_id not in self.batches:
                return web.Response(status=400, text="no such batch")
            workspace = body.get("workspaceId") or (
                self.batches[batch_id]["workspaceId"] if batch_id is not None else 1
            )
            task_id = self._add_task_locked(
                workspace,
                None,
                body.get("displayName"),
                batch_id,
                body.get("externalId"),
                body.get("fileUrl"),
                body.get("metadata"),
            )
            return _json(self.tasks[task_id].status_json())

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("displayName"):
            return web.Response(status=400)
        batch_id = self.add_batch(
            body["displayName"], body.get("description"), body.get("workspaceId") or 1
        )
        with self._lock:
            return _json(self.batches[batch_id])

    async def _get_batch(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(int(request.query.get("batchId", "0")))
            return web.Response(status=404) if batch is None else _json(dict(batch))

    async def _batches_paginated(self, request: web.Request) -> web.Response:
        page = max(1, int(request.query.get("pageNumber", "1")))
        size = max(1, int(request.query.get("pageSize", "10")))
        with self._lock:
            items = [dict(b) for b in self.batches.values()]
        return _json(_page(items, page, size, False))

    async def _file(self, request: web.Request) -> web.Response:
        """An exported file behind its SAS-style link: 403 once ``se`` has passed, as Azure."""
        name = request.match_info["name"]
        expiry, signature = request.query.get("se", ""), request.query.get("sig", "")
        task_id = name.removesuffix(".docx")
        if not task_id.isdigit():
            return web.Response(status=404)
        good = hmac.compare_digest(self._signature(int(task_id), expiry), signature)
        until = parse_time(expiry) if good else None
        if until is None or datetime.now(UTC) >= until:
            return web.Response(status=403, text="AuthenticationFailed")
        with self._lock:
            if int(task_id) not in self.tasks:
                return web.Response(status=404)
        return web.Response(
            body=f"emulated document of task {task_id}\n".encode(),
            content_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _state(self, _request: web.Request) -> web.Response:
        with self._lock:
            by_state: dict[str, list[int]] = {}
            for task in self.tasks.values():
                by_state.setdefault(task.webhook, []).append(task.task_id)
            return _json({"webhooks": by_state, "calls": self.calls, "tasks": len(self.tasks)})

    async def _set_faults(self, request: web.Request) -> web.Response:
        self.set_faults(**await request.json())
        return _json(self.faults.model_dump(mode="json"))

    async def _add_tasks(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = [
            self.add_task(workspace_id=int(body.get("workspaceId", 1)))
            for _ in range(int(body.get("count", 1)))
        ]
        return _json({"taskIds": ids})

    async def _review(self, request: web.Request) -> web.Response:
        limit = request.query.get("limit")
        posted = await self.review_and_post(int(limit) if limit else None)
        return _json({"posted": posted})


def _page(items: list[Any], page: int, size: int, empty_last: bool) -> dict[str, Any]:
    total = len(items)
    pages = max(1, -(-total // size))
    chunk = items[(page - 1) * size : page * size]
    has_next = page < pages or (empty_last and page == pages and total > 0)
    return {
        "items": chunk,
        "pageNumber": page,
        "totalPages": pages,
        "totalCount": total,
        "hasPreviousPage": page > 1,
        "hasNextPage": has_next,
    }


def _task_page(items: list[Task], page: int, size: int, empty_last: bool) -> dict[str, Any]:
    answer = _page(items, page, size, empty_last)
    answer["items"] = [t.status_json() for t in answer["items"]]
    return answer


def _json(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


@contextlib.contextmanager
def run_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``emulator`` on a thread of its own; yields its base URL, stops on exit."""

    def keep(loop: asyncio.AbstractEventLoop) -> None:
        emulator.loop = loop

    with serve_in_thread(emulator.app, "sd-emulator", host, port, keep) as url:
        emulator.settings = emulator.settings.model_copy(update={"public_url": url})
        yield url


def call_in_loop(emulator: Emulator, coro: Any) -> Any:
    """Run ``coro`` on the emulator's loop (from another thread) and wait for its result."""
    assert emulator.loop is not None, "start it with run_in_thread first"
    return asyncio.run_coroutine_threadsafe(coro, emulator.loop).result(30)
