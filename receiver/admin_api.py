"""The operators' HTTP API under ``/admin/api``: the operator service over HTTP, JSON in and out.

Every route but the OpenAPI document (``/admin/api/openapi.json``, which holds no data) needs
``Authorization: Bearer <one of [admin] tokens>``, compared in constant time; webhook tokens
are never admin tokens (``hookdock check`` refuses a config where one is).  An optional
``X-Hookdock-Actor`` header names the person behind the token in the actions recorded.
Errors are ``{"error": "..."}`` with their status (``receiver.responses.api_error_response``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.admin_openapi import openapi_document
from receiver.admin_tokens import actor_name, token_number
from receiver.bounded_body import read_bounded
from receiver.bulk_replays import BulkReplays
from receiver.errors import BadRequest, NotFound, Unauthorized
from receiver.operator import Operator, listing_params, query_from
from receiver.responses import api_error_response, json_response

__all__ = ["PREFIX", "BulkReplayIn", "ReplayIn", "StopIn", "admin_app"]

log = logging.getLogger("hookdock")

PREFIX = "/admin/api"
MAX_BODY_BYTES = 64 * 1024

M = TypeVar("M", bound=BaseModel)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class ReplayIn(_In):
    sink: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Only to this sink (a send is made if the event had none to it); default: every sink
    the event was routed to."""


class BulkReplayIn(_In):
    filter: dict[str, Any] = {}
    """The listing's parameters (``taskId``, ``state``, ``sink``, ``since``...): what to replay."""
    sink: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Only to this sink; default: every sink each event went to."""
    dry_run: bool = Field(default=False, alias="dryRun")
    """Count what the filter matches, replay nothing."""


class StopIn(_In):
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "stopped by an operator"


Handler = Callable[[Request, Operator, str], Awaitable[Any]]


def _actor(request: Request, tokens: Sequence[SecretStr]) -> str:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("send Authorization: Bearer <one of the [admin] tokens>")
    matched = token_number(given, tokens)
    if matched is None:
        raise Unauthorized("that is not one of the [admin] tokens")
    return actor_name(request.headers.get("x-hookdock-actor", ""), matched)


def _dump(result: Any) -> bytes:
    if isinstance(result, BaseModel):
        return result.model_dump_json().encode()
    if isinstance(result, list):
        return orjson.dumps([item.model_dump(mode="json") for item in result])
    return orjson.dumps(result)


async def _body(request: Request, model: type[M]) -> M:
    raw = await read_bounded(request, MAX_BODY_BYTES, "body")
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise BadRequest("; ".join(problems)) from None


def _query(request: Request) -> dict[str, Any]:
    return listing_params(request.query_params.multi_items())


# ---------------------------------------------------------------------------- handlers


async def _events(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.events(query_from(_query(request)))


async def _event(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.event(request.path_params["ref"])


async def _replay(request: Request, ops: Operator, actor: str) -> Any:
    body = await _body(request, ReplayIn)
    return await ops.replay(request.path_params["ref"], sink=body.sink, actor=actor)


async def _retry_now(request: Request, ops: Operator, actor: str) -> Any:
    send_id: int = request.path_params["send_id"]
    if send_id >= 2**63:  # beyond any id a journal makes (and PostgreSQL's BIGINT)
        raise NotFound(f"no send {send_id} in the journal")
    return await ops.retry_now(send_id, actor=actor)


async def _sinks(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.sinks()


async def _dead_letters(request: Request, ops: Operator, actor: str) -> Any:
    query = query_from(_query(request))
    return await ops.dead_letters(request.path_params["name"], query)


async def _stop(request: Request, ops: Operator, actor: str) -> Any:
    body = await _body(request, StopIn)
    return await ops.stop_sink(request.path_params["name"], reason=body.reason, actor=actor)


async def _resume(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.resume_sink(request.path_params["name"], actor=actor)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit: a number from 1 to 1000")
    return int(raw)


async def _actions(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.actions(_limit(request))


async def _batch(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.batch(request.path_params["batch_id"])


async def _purge(request: Request, ops: Operator, actor: str) -> Any:
    return await ops.purge_task(request.path_params["task_id"], actor=actor)


async def _not_found(request: Request, exc: Exception) -> Response:
    return api_error_response(exc, f"{request.method} {request.url.path}")


def admin_app(
    operator: Operator,
    tokens: Sequence[SecretStr],
    replays: Callable[[], BulkReplays],
) -> Starlette:
    """The API as an ASGI app, to mount at ``PREFIX`` (its routes are relative to it).
    ``replays`` is this process's share of the bulk replays, which it starts and cancels
    (every replica shows and cancels any job: they live in the journal)."""
    tokens = tuple(tokens)

    async def _bulk(request: Request, ops: Operator, actor: str) -> Any:
        body = await _body(request, BulkReplayIn)
        query = query_from(body.filter)
        if body.dry_run:
            return await ops.bulk_replay(query, sink=body.sink, actor=actor, dry_run=True)
        if body.sink is not None:
            ops.check_sink(body.sink)
        return await replays().begin(query, sink=body.sink, actor=actor)

    async def _bulk_list(request: Request, ops: Operator, actor: str) -> Any:
        return await ops.replay_jobs(_limit(request))

    async def _bulk_state(request: Request, ops: Operator, actor: str) -> Any:
        return await ops.replay_job(request.path_params["job_id"])

    async def _bulk_cancel(request: Request, ops: Operator, actor: str) -> Any:
        return await replays().cancel(request.path_params["job_id"], actor=actor)

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                actor = _actor(request, tokens)
                result = await handler(request, operator, actor)
            except Exception as exc:
                return api_error_response(exc, f"{request.method} {request.url.path}")
            return json_response(_dump(result))

        return endpoint

    document = orjson.dumps(openapi_document(PREFIX))

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/events", guarded(_events), methods=["GET"]),
        Route("/events/{ref}", guarded(_event), methods=["GET"]),
        Route("/events/{ref}/replay", guarded(_replay), methods=["POST"]),
        Route("/sends/{send_id:int}/retry", guarded(_retry_now), methods=["POST"]),
        Route("/sinks", guarded(_sinks), methods=["GET"]),
        Route("/sinks/{name}/dead", guarded(_dead_letters), methods=["GET"]),
        Route("/sinks/{name}/stop", guarded(_stop), methods=["POST"]),
        Route("/sinks/{name}/resume", guarded(_resume), methods=["POST"]),
        Route("/batches/{batch_id}", guarded(_batch), methods=["GET"]),
        Route("/replays", guarded(_bulk), methods=["POST"]),
        Route("/replays", guarded(_bulk_list), methods=["GET"]),
        Route("/replays/{job_id}", guarded(_bulk_state), methods=["GET"]),
        Route("/replays/{job_id}", guarded(_bulk_cancel), methods=["DELETE"]),
        Route("/tasks/{task_id}/purge", guarded(_purge), methods=["POST"]),
        Route("/actions", guarded(_actions), methods=["GET"]),
    ]
    return Starlette(
        routes=routes, exception_handlers={HTTPException: _not_found, Exception: _not_found}
    )
