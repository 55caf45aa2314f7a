"""``POST /hooks/{route}[/{token}]``: check, journal durably, then answer.

The order is fixed: route, body cap, content type, authentication, the source's shape check,
the durable journal write, the answer.  Every answer carries a request id (the caller's
``X-Request-Id`` if it is a plain token, else one made here), which the log lines about the
request carry too.  A 2xx goes out only after the journal has fsync'd the
delivery; anything that stops earlier raises an ``IngestError``, which ``receiver.responses``
turns into a one-line plain-text response.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers.errors import PayloadRejected
from handlers.event import RawDelivery
from handlers.json_depth import json_too_deep
from receiver.auth import uses_path_token, verify
from receiver.errors import (
    BadPayload,
    PayloadTooLarge,
    RouteNotFound,
    UnsupportedMediaType,
)
from receiver.ids import new_id
from receiver.intake import intake
from receiver.logs import log_activity
from receiver.responses import error_response, text
from receiver.runtime import IngestRoute, Runtime

__all__ = ["IngestApp"]


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


class ClientGone(Exception):
    """The sender hung up before its body arrived: there is nobody to answer."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_capped(scope: Scope, receive: Receive, cap: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > cap:
                raise PayloadTooLarge(f"body is larger than {cap} bytes")
        except ValueError:
            raise BadPayload("Content-Length is not a number", status=400) from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            # Stop reading here: the 413 closes the connection rather than drain the rest.
            raise PayloadTooLarge(f"body is larger than {cap} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _media_type(scope: Scope, route: IngestRoute) -> tuple[str, str]:
    """The Content-Type as sent, and its media type (``application/json``)."""
    raw = _header(scope, b"content-type") or ""
    media = raw.split(";", 1)[0].strip().lower()
    if media not in route.media_types:
        wanted = " or ".join(sorted(route.media_types))
        raise UnsupportedMediaType(f"content type must be {wanted}")
    return raw, media


class IngestApp:
    """ASGI app that answers ``/hooks/...`` itself and hands every other request to ``app``.

    Ingest is the one hot path, so it runs as a plain ASGI callable: no router, no middleware
    stack, no ``Request`` object; measured, that is a third of its cost per request.  Its
    errors still become responses through ``receiver.responses``, like the rest of the app's.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/hooks/"):
            await self.app(scope, receive, send)
            return
        names = path[len("/hooks/") :].split("/")
        if len(names) > 2 or not all(names):
            await self.app(scope, receive, send)  # not a hook URL: the app's 404
            return
        if scope["method"] != "POST":
            response = text(405, "method not allowed", {"Allow": "POST"})
            await response(scope, receive, send)
            return
        runtime = self.runtime
        request_id = _request_id(scope)
        try:
            answer = await _ingest(scope, receive, runtime, names, request_id)
        except ClientGone:
            return
        except Exception as exc:
            response = error_response(exc, f"POST /hooks/{names[0]}")
            response.headers["X-Request-Id"] = request_id
            runtime.metrics.request(names[0], response.status_code)
            await response(scope, receive, send)
            return
        runtime.metrics.request(names[0], 200)
        # The 200 is the hot path: two plain ASGI messages, no Response object.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(answer)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _request_id(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` when it is a plain token, else one of our own."""
    given = _header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return new_id()


async def _ingest(
    scope: Scope, receive: Receive, runtime: Runtime, names: list[str], request_id: str
) -> bytes:
    """The body of the 200 answer, once the delivery is durable; raises for anything else."""
    route = runtime.routes.get(names[0])
    path_token = names[1] if len(names) == 2 else None
    if route is None or (path_token is not None and not uses_path_token(route.auth)):
        raise RouteNotFound("no such webhook route")
    body = await _read_capped(scope, receive, route.config.max_body_bytes)
    # Ingest pressure is work, not open sockets: a request counts for the dispatcher (which
    # steps aside for ingest) from the moment its whole body is here, never while it trickles.
    runtime.ingest_inflight += 1
    try:
        return await _admit_and_store(scope, runtime, route, path_token, body, request_id)
    finally:
        runtime.ingest_inflight -= 1


async def _admit_and_store(
    scope: Scope,
    runtime: Runtime,
    route: IngestRoute,
    path_token: str | None,
    body: bytes,
    request_id: str,
) -> bytes:
    content_type, media = _media_type(scope, route)
    now = time.time()
    verify(
        route.auth,
        path_token=path_token,
        query=QueryParams(scope["query_string"]) if path_token is None else {},
        headers=Headers(scope=scope),
        body=body,
        now=now,
    )
    headers = {
        name: value.decode("latin-1")
        for raw_name, value in scope["headers"]
        if (name := raw_name.decode("latin-1").lower()) in route.kept_headers
    }
    delivery = RawDelivery(
        delivery_id=new_id(),
        route=route.config.name,
        source=route.source_name,
        received_at=datetime.fromtimestamp(now, UTC),
        content_type=content_type,
        headers=headers,
        body=body,
    )
    limit = route.config.max_json_depth
    if media.endswith("json") and json_too_deep(body, limit):
        # orjson writes at most 254 levels: deeper would be journaled, then never delivered.
        raise BadPayload(f"JSON is nested deeper than {limit} levels", status=422)
    try:
        result = await intake(runtime.journal, route.source, delivery, runtime.dispatcher)
    except PayloadRejected as exc:
        raise BadPayload(exc.message, status=exc.status) from exc
    log_activity(
        "%s delivery %s (route %s, %d bytes)",
        "already accepted" if result.duplicate else "accepted",
        result.delivery_id,
        route.config.name,
        len(body),
        ids={
            "request_id": request_id,
            "delivery_id": result.delivery_id,
            "route": route.config.name,
        },
    )
    if result.duplicate:
        return f"hookdock: already accepted as {result.delivery_id}\n".encode()
    return f"hookdock: accepted as {result.delivery_id}\n".encode()
