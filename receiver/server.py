"""Running the app under uvicorn, with a shutdown a load balancer can follow.

On SIGTERM or SIGINT, readiness turns false and the dispatcher stops claiming at once; after
``server.drain_seconds`` the listener closes, in-flight requests finish, and the dispatcher gets
what is left of ``server.grace_seconds`` before it releases unfinished work.  A second SIGINT
(Ctrl+C) exits at once; a clean shutdown exits 0.

With ``[admin] port``, the admin API listens there too, in the same process and event loop;
it closes as soon as a shutdown begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from receiver.app import create_admin_app, create_app
from receiver.heap import LOOP
from receiver.protocol import ConnectionLimits, protocol_class
from receiver.runtime import Runtime

__all__ = ["RedactPathFilter", "serve"]

log = logging.getLogger("hookdock")

_TOKEN_IN_PATH = re.compile(r"^(/hooks/[^/?]+/)[^/?]+")
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&]*")


class RedactPathFilter(logging.Filter):
    """Hides URL tokens in uvicorn's access log lines (when an operator turns the log on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = _TOKEN_IN_QUERY.sub(r"\1REDACTED", _TOKEN_IN_PATH.sub(r"\1REDACTED", args[2]))
            record.args = (*args[:2], path, *args[3:])
        return True


class _Companion(uvicorn.Server):
    """The admin API's own listener: the main server owns the signals and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, runtime: Runtime, companion: _Companion | None = None
    ) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.companion = companion
        self._exit_requested = False

    async def serve_all(self) -> None:
        if self.companion is None:
            await self.serve()
            return
        other = asyncio.create_task(self.companion.serve(), name="hookdock-admin-listener")
        try:
            await self.serve()
        finally:
            self.companion.should_exit = True
            await other

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn raises the caught signal again once it has shut down, for a program that
        # embeds it; here hookdock is the program, and a clean shutdown exits 0, quietly.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.companion is not None:
            self.companion.should_exit = True
        drain = self.runtime.config.server.drain_seconds
        if self._exit_requested or drain <= 0:
            self.runtime.begin_shutdown()
            super().handle_exit(sig, frame)
            return
        self._exit_requested = True
        self.runtime.begin_shutdown()
        log.info("shutting down: not ready; closing the listener in %.1fs", drain)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(loop.call_later, drain, super().handle_exit, sig, None)


def _http_protocol(runtime: Runtime) -> type[asyncio.Protocol] | str:
    """hookdock's protocol (deadlines, header cap, connection cap) over httptools."""
    server = runtime.config.server
    if importlib.util.find_spec("httptools") is None:
        # uvicorn[standard] brings httptools; without it, h11 caps headers but has no deadlines.
        log.warning("httptools is not installed: no deadlines for slow clients (install it)")
        return "h11"
    limits = ConnectionLimits(
        header_timeout_seconds=server.header_timeout_seconds,
        body_timeout_seconds=server.body_timeout_seconds,
        max_header_bytes=server.max_header_bytes,
        max_connections=server.max_connections,
    )
    return protocol_class(limits)


def serve(runtime: Runtime, *, host: str, port: int) -> None:
    server_config = runtime.config.server
    config = uvicorn.Config(
        create_app(runtime, freeze_heap=True),
        host=host,
        port=port,
        loop=LOOP,
        http=_http_protocol(runtime),
        h11_max_incomplete_event_size=server_config.max_header_bytes,
        timeout_keep_alive=server_config.keep_alive_seconds,
        lifespan="on",
        ws="none",  # no WebSocket routes: an Upgrade is an ordinary request, under the limits
        access_log=server_config.access_log,
        log_config=None,
        timeout_graceful_shutdown=max(1, int(server_config.grace_seconds)),
        server_header=False,
        backlog=2048,
    )
    logging.getLogger("uvicorn.access").addFilter(RedactPathFilter())
    companion = None
    admin = runtime.config.admin
    if admin.port is not None:
        companion = _Companion(
            uvicorn.Config(
                create_admin_app(runtime),
                host=admin.host,
                port=admin.port,
                loop=config.loop,
                http=config.http,
                lifespan="off",
                access_log=False,
                log_config=None,
                server_header=False,
            )
        )
        log.info("operators' listener (admin API, /metrics) on %s:%d", admin.host, admin.port)
    server = _Server(config, runtime, companion)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve_all())
