"""The bare baseline: a Starlette endpoint that reads the body and answers 202, nothing else.

Served exactly as ``hookdock serve`` serves hookdock (receiver/server.py): uvicorn with uvloop
and httptools, no access log, no logging config, backlog 2048, no Server header, and the same
garbage-collector tuning that ``create_app(..., freeze_heap=True)`` applies at startup, so
that the only difference between the two servers is the application.

    python bench/bare_app.py --port 8081
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def hook(request: Request) -> Response:
    await request.body()
    return PlainTextResponse("accepted\n", status_code=202)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def create_app(*, freeze_heap: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if freeze_heap:  # as receiver.app.create_app(freeze_heap=True) does
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        yield

    return Starlette(
        routes=[
            Route("/hooks/{route}/{token}", hook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            # What HAProxy checks (infra/haproxy.cfg), for bench/replicas.py's ceiling row.
            Route("/readyz", healthz, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--no-freeze-heap", action="store_true", help="leave the garbage collector at its defaults"
    )
    args = parser.parse_args()
    uvicorn.run(
        create_app(freeze_heap=not args.no_freeze_heap),
        host=args.host,
        port=args.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
