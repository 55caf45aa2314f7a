"""The admin API's OpenAPI 3.1 document, made from the models it answers with and the query it
reads (``receiver.operator``), so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from receiver.operator.models import (
    ActionOut,
    BatchOut,
    BulkReplayOut,
    DeliveryOut,
    ErrorOut,
    EventPageOut,
    PurgeOut,
    ReplayOut,
    RetryNowOut,
    SinkActionOut,
    SinkOut,
)
from receiver.operator.service import EventQuery

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    why = {
        400: "a bad parameter or body; the error names it",
        401: "no admin token, or not one of them",
        404: "nothing by that id or name",
        503: "the journal cannot answer right now; retry",
    }
    # Any path can be one that names nothing: 404 everywhere.
    return {str(s): _json(_ref(ErrorOut), why[s]) for s in sorted({401, 404, 503, *statuses})}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: keep the branch that is not null."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**rest, **branches[0]}
    return schema


def _query_parameters() -> list[dict[str, Any]]:
    schema = EventQuery.model_json_schema(by_alias=True)
    out = []
    for name, prop in schema["properties"].items():
        prop = _not_null(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "schema": prop}
        if description:
            parameter["description"] = description
        if prop.get("type") == "array":
            parameter.update(style="form", explode=True)
        out.append(parameter)
    return out


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": False,
        "content": {"application/json": {"schema": model.model_json_schema()}},
    }


def openapi_document(prefix: str) -> dict[str, Any]:
    from receiver.admin_api import BulkReplayIn, ReplayIn, StopIn

    models: list[type[BaseModel]] = [
        ActionOut,
        BatchOut,
        BulkReplayOut,
        DeliveryOut,
        ErrorOut,
        EventPageOut,
        PurgeOut,
        ReplayOut,
        RetryNowOut,
        SinkActionOut,
        SinkOut,
    ]
    _, schemas = models_json_schema(
        [(m, "serialization") for m in models], ref_template=_REF, by_alias=True
    )
    listing = _query_parameters()
    ref = _path("ref")
    ref["description"] = "a delivery id (from `200 accepted as <id>`) or an event id"
    paths: dict[str, Any] = {
        "/events": {
            "get": {
                "summary": "Events, newest first, filtered; paged (cursor for deep pages)",
                "parameters": listing,
                "responses": {"200": _json(_ref(EventPageOut), "a page"), **_errors(400)},
            }
        },
        "/events/{ref}": {
            "get": {
                "summary": "One delivery or event: payload (redacted), events, sends, attempts,"
                " actions",
                "parameters": [ref],
                "responses": {"200": _json(_ref(DeliveryOut), "found"), **_errors(404)},
            }
        },
        "/events/{ref}/replay": {
            "post": {
                "summary": "Send an event (or every event of a delivery) again, to one sink or"
                " all, whatever its state",
                "parameters": [ref],
                "requestBody": _body(ReplayIn),
                "responses": {"200": _json(_ref(ReplayOut), "replayed"), **_errors(400, 404)},
            }
        },
        "/sends/{sendId}/retry": {
            "post": {
                "summary": "Try a waiting send now",
                "parameters": [_path("sendId", {"type": "integer", "minimum": 0})],
                "responses": {"200": _json(_ref(RetryNowOut), "done"), **_errors(404)},
            }
        },
        "/sinks": {
            "get": {
                "summary": "Sinks with their sends by state, stopped or not",
                "responses": {
                    "200": _json({"type": "array", "items": _ref(SinkOut)}, "every sink"),
                    **_errors(),
                },
            }
        },
        "/sinks/{name}/dead": {
            "get": {
                "summary": "The dead letters of a sink",
                "parameters": [_path("name"), *listing],
                "responses": {"200": _json(_ref(EventPageOut), "a page"), **_errors(400)},
            }
        },
        "/sinks/{name}/stop": {
            "post": {
                "summary": "Stop a sink: its sends wait in the journal",
                "parameters": [_path("name")],
                "requestBody": _body(StopIn),
                "responses": {"200": _json(_ref(SinkActionOut), "stopped"), **_errors(400)},
            }
        },
        "/sinks/{name}/resume": {
            "post": {
                "summary": "Resume a stopped sink",
                "parameters": [_path("name")],
                "responses": {"200": _json(_ref(SinkActionOut), "resumed or not"), **_errors()},
            }
        },
        "/batches/{batchId}": {
            "get": {
                "summary": "A vendor batch: its events by state",
                "parameters": [_path("batchId")],
                "responses": {"200": _json(_ref(BatchOut), "counts"), **_errors()},
            }
        },
        "/replays": {
            "post": {
                "summary": "Replay every event a filter matches (dryRun: count them first), as a"
                " job with progress that yields to live traffic",
                "requestBody": _body(BulkReplayIn),
                "responses": {"200": _json(_ref(BulkReplayOut), "started"), **_errors(400)},
            },
            "get": {
                "summary": "The latest bulk replays, newest first, whichever replica runs them",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    }
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref(BulkReplayOut)}, "jobs"),
                    **_errors(400),
                },
            },
        },
        "/replays/{jobId}": {
            "get": {
                "summary": "A bulk replay's progress",
                "parameters": [_path("jobId")],
                "responses": {"200": _json(_ref(BulkReplayOut), "progress"), **_errors()},
            },
            "delete": {
                "summary": "Cancel a bulk replay from any replica (what was replayed stays"
                " replayed): its process stops at its next chunk (cancelRequested until then)",
                "parameters": [_path("jobId")],
                "responses": {"200": _json(_ref(BulkReplayOut), "cancelled"), **_errors()},
            },
        },
        "/tasks/{taskId}/purge": {
            "post": {
                "summary": "Erase a task's deliveries, events and payloads (data-subject request)",
                "parameters": [_path("taskId")],
                "responses": {"200": _json(_ref(PurgeOut), "erased"), **_errors()},
            }
        },
        "/actions": {
            "get": {
                "summary": "The operators' latest actions, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    }
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref(ActionOut)}, "actions"),
                    **_errors(400),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookdock admin API",
            "version": "1",
            "description": "Find, inspect and replay events; sinks; actions.  Bearer tokens"
            " from [admin] tokens.",
        },
        "servers": [{"url": prefix}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
