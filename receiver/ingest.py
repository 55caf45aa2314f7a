"""``POST /hooks/{route}[/{token}]``: check, journal durably, then answer.

The order is fixed: route, body cap, content type, authentication, the source's shape check,
the durable journal write, the answer.  A 2xx goes out only after the journal has fsync'd the
delivery; anything that stops earlier raises an ``IngestError``, which ``receiver.app`` turns
into a one-line plain-text response.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from handlers.errors import PayloadRejected
from handlers.event import RawDelivery
from receiver.auth import uses_path_token, verify
from receiver.errors import (
    BadPayload,
    PayloadTooLarge,
    RouteNotFound,
    UnsupportedMediaType,
)
from receiver.ids import new_id
from receiver.runtime import IngestRoute, Runtime

__all__ = ["ingest"]

# Headers worth keeping with a delivery.  Credentials (Authorization, signatures) never are.
_KEPT_HEADERS = frozenset(
    {
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "x-superoffice-event",
        "x-superoffice-eventid",
        "x-superoffice-retry",
        "x-hook-test",
    }
)


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > cap:
                raise PayloadTooLarge(f"body is larger than {cap} bytes")
        except ValueError:
            raise BadPayload("Content-Length is not a number", status=400) from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            # Stop reading here: the server closes the connection rather than drain the rest.
            raise PayloadTooLarge(f"body is larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request, route: IngestRoute) -> str:
    raw = request.headers.get("content-type", "")
    media = raw.split(";", 1)[0].strip().lower()
    if media not in route.media_types:
        wanted = " or ".join(sorted(route.media_types))
        raise UnsupportedMediaType(f"content type must be {wanted}")
    return raw


async def ingest(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    runtime.ingest_inflight += 1
    try:
        return await _ingest(request, runtime)
    finally:
        runtime.ingest_inflight -= 1


async def _ingest(request: Request, runtime: Runtime) -> Response:
    route = runtime.routes.get(request.path_params["route"])
    path_token: str | None = request.path_params.get("token")
    if route is None or (path_token is not None and not uses_path_token(route.config.auth)):
        raise RouteNotFound("no such webhook route")
    body = await _read_capped(request, route.config.max_body_bytes)
    content_type = _media_type(request, route)
    now = time.time()
    verify(
        route.config.auth,
        path_token=path_token,
        query=request.query_params if path_token is None else {},
        headers=request.headers,
        body=body,
        now=now,
    )
    headers = {
        name: value.decode("latin-1")
        for raw_name, value in request.headers.raw
        if (name := raw_name.decode("latin-1").lower()) in _KEPT_HEADERS
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
    try:
        dedupe_key = route.source.admit(delivery)
    except PayloadRejected as exc:
        raise BadPayload(exc.message, status=exc.status) from exc
    # No timer per request: the journal's watchdog fails waiting writes if a commit hangs.
    result = await runtime.journal.append(delivery, dedupe_key)
    if result.duplicate:
        return PlainTextResponse(f"hookdock: already accepted as {result.delivery_id}\n")
    if runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    return PlainTextResponse(f"hookdock: accepted as {result.delivery_id}\n")
