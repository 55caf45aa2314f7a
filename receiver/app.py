"""The ASGI application: the ingest path in front, Starlette for health and the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.admin_api import PREFIX, admin_app
from receiver.bulk_replays import BulkReplays
from receiver.console import console_app
from receiver.errors import JournalError, JournalUnavailable
from receiver.heap import freeze_startup_heap
from receiver.ingest import IngestApp
from receiver.responses import api_error_response, error_response, text
from receiver.runtime import Runtime

__all__ = ["create_admin_app", "create_app"]

log = logging.getLogger("hookdock")

_READY_PROBE_SECONDS = 3.0
CONSOLE = "/admin"


async def _error(request: Request, exc: Exception) -> Response:
    where = f"{request.method} {request.url.path}"
    if request.url.path.startswith(f"{PREFIX}/"):
        # A path the API's mount does not match (a newline in it): still the API's JSON.
        return api_error_response(exc, where)
    return error_response(exc, where)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if runtime.draining:
        return text(503, "shutting down")
    if runtime.run_dispatcher and (runtime.dispatcher is None or not runtime.dispatcher.running):
        return text(503, "dispatcher not running")
    try:
        await asyncio.wait_for(runtime.journal.ping(), _READY_PROBE_SECONDS)
    except (JournalError, TimeoutError) as exc:
        return text(503, f"journal not writable: {exc or 'timed out'}")
    return PlainTextResponse("ready\n")


def create_app(runtime: Runtime, *, freeze_heap: bool = False) -> ASGIApp:
    """The hookdock ASGI app around ``runtime``, which it starts and stops with its lifespan.

    ``freeze_heap`` moves everything allocated at startup out of the garbage collector's sight
    and makes young collections rarer: the prototypes for this service found the collector's
    passes over the startup heap to be the p99 tail, and this cut it 1.3 to 7 times.
    """

    cannot_start: list[JournalError] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await runtime.start()
        except JournalError as exc:
            cannot_start.append(exc)
            raise
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            await runtime.stop()

    routes: list[Route | Mount] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    admin = runtime.config.admin
    if admin.port is None:
        # With a listener of its own, the operators' side (API and metrics) is there.
        routes.append(_metrics(runtime))
        routes += _operators(runtime)
    app = Starlette(
        routes=routes,
        exception_handlers={Exception: _error, HTTPException: _error},
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    async def app_with_plain_startup_errors(scope: Scope, receive: Receive, send: Send) -> None:
        """uvicorn logs a failed startup's message, which Starlette makes a traceback.  A
        journal that cannot be opened (database down, wrong DSN, newer schema) is the
        operator's to fix: the one line that says what to check is the whole message."""
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def plain(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and cannot_start:
                message = {**message, "message": f"hookdock: {cannot_start[0]}"}
            await send(message)

        await app(scope, receive, plain)

    return IngestApp(app_with_plain_startup_errors, runtime)


def _operators(runtime: Runtime) -> list[Route | Mount]:
    """The admin API and the console (when ``[admin] tokens`` are set): one operator service
    and this process's share of the bulk replays (they live in the journal) behind both."""
    admin = runtime.config.admin
    if not admin.tokens:
        return []

    def replays() -> BulkReplays:
        if runtime.replays is None:
            raise JournalUnavailable("the service is starting")
        return runtime.replays

    operator = runtime.operator()
    mounts: list[Route | Mount] = [Mount(PREFIX, app=admin_app(operator, admin.tokens, replays))]
    if admin.console:
        seconds = int(admin.session_hours * 3600)
        mounts.append(Mount(CONSOLE, app=console_app(operator, admin.tokens, replays, seconds)))
    return mounts


def _metrics(runtime: Runtime) -> Route:
    return runtime.metrics.endpoint(runtime.journal, frozenset(runtime.config.sinks))


def create_admin_app(runtime: Runtime) -> ASGIApp:
    """The admin API, the console and ``/metrics``, for a listener of their own (``[admin] port``);
    ``runtime`` is started and stopped by the main app's lifespan."""
    routes: list[Route | Mount] = [_metrics(runtime), *_operators(runtime)]
    return Starlette(routes=routes, lifespan=None)
