"""Running a vendor emulator's web app on a thread of its own, for tests and local trials.

The emulators (``handlers.<vendor>.emulator``) are aiohttp apps over in-memory state that a
test drives from its own thread; this serves one on 127.0.0.1 until the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

__all__ = ["ApiFaults", "serve_in_thread", "take_fault"]


class ApiFaults(BaseModel):
    """What every emulator's API can be told to get wrong; each vendor's adds its own."""

    model_config = ConfigDict(extra="forbid")

    fail_5xx: int = 0
    """The next n API calls answer 503."""
    rate_limit: int = 0
    """The next n API calls answer 429 with ``Retry-After: retry_after``."""
    retry_after: int = 1
    slow_seconds: float = 0.0
    """Every API call waits this long before it is answered."""


def take_fault(faults: ApiFaults) -> web.Response | None:
    """The answer the next API call gets instead of its own (429 first, then 503), counted
    off ``faults``; None when none is due.  Call it under the emulator's lock."""
    if faults.rate_limit > 0:
        faults.rate_limit -= 1
        return web.Response(
            status=429, text="slow down", headers={"Retry-After": str(faults.retry_after)}
        )
    if faults.fail_5xx > 0:
        faults.fail_5xx -= 1
        return web.Response(status=503, text="unavailable")
    return None


@contextlib.contextmanager
def serve_in_thread(
    make_app: Callable[[], web.Application],
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
) -> Iterator[str]:
    """Serve the app ``make_app`` returns; yields its base URL, stops it on exit.

    ``on_loop`` is handed the loop it serves on once it listens (to run coroutines there)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    # Set on the loop to stop it: a stop() sent before run_forever() began would be lost (it
    # would end the start-up run instead) and the thread would serve on, unjoinable.
    stop = asyncio.Event()

    async def serve() -> None:
        # No access log: its thread outlives a test's log capture, and a stand-in's requests
        # are counted by the emulator itself.
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            server = site._server
            assert server is not None and isinstance(server, asyncio.Server)
            holder["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in holder:
        raise RuntimeError(f"the {name} emulator did not start: {holder.get('error')}")
    if on_loop is not None:
        on_loop(loop)
    try:
        yield f"http://{host}:{holder['port']}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
