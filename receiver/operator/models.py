"""What the operator service answers, as pydantic models: the HTTP API's JSON, its OpenAPI
schemas (``model_json_schema``) and ``hookdock events ... --json`` are the same documents.

Keys are camelCase, like the paged envelope of SmartDocumentor's own API (``items``,
``pageNumber``, ``pageSize``, ``totalCount``, ``totalPages``, ``hasPreviousPage``,
``hasNextPage``), which the listings use.  Times are ISO 8601 with their zone (UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = [
    "ActionOut",
    "ActivityOut",
    "ActivityPoint",
    "AttemptOut",
    "BatchOut",
    "BatchRowOut",
    "BulkReplayOut",
    "DeadGroupOut",
    "DeliveryOut",
    "ErrorOut",
    "EventItem",
    "EventOut",
    "EventPageOut",
    "FileOut",
    "PollerOut",
    "PurgeOut",
    "ReplayOut",
    "RetryNowOut",
    "SendOut",
    "SinkActionOut",
    "SinkOut",
]

SendStateName = Literal["pending", "delivered", "dead"]
ListedStateName = Literal["pending", "delivered", "dead", "dropped"]
"""A listed row's state: its event's, or ``dropped`` (routed, every event dropped by rules)."""


class _Out(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )


class ErrorOut(_Out):
    error: str
    """One line saying what is wrong and, where there is one, what to do instead."""


class EventItem(_Out):
    """One event in a listing, or a delivery that has none (``eventId`` null): not routed yet
    (pending), not routable (dead, ``lastError`` says why), or every event dropped by the rules
    (dropped).  Either is shown whole by ``GET /events/{deliveryId}``."""

    event_id: str | None
    delivery_id: str
    route: str | None
    vendor: str | None
    kind: str | None
    task_id: str | None
    batch_id: str | None
    workspace_id: str | None
    external_id: str | None
    display_name: str | None
    received_at: datetime
    state: ListedStateName
    """pending while any send is, dead when one gave up (none pending), else delivered."""
    sends: dict[str, SendStateName]
    """Sink -> the state of the event's send to it."""
    last_error: str | None = None
    """A delivery without events: why it is not routed (credentials redacted)."""


class EventPageOut(_Out):
    """A page of events in SmartDocumentor's envelope, with a cursor for deep paging."""

    items: list[EventItem]
    page_number: int
    page_size: int
    total_count: int | None
    """None when counting was turned off (``count=false``): counting every match costs a scan."""
    total_pages: int | None
    has_previous_page: bool
    has_next_page: bool
    next_cursor: str | None
    """Pass as ``cursor`` for the next page: as fast at page 10,000 as at the first."""


class AttemptOut(_Out):
    number: int
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    outcome: str | None
    error: str | None


class FileOut(_Out):
    role: str
    size: int
    sha256: str
    content_type: str
    filename: str


class SendOut(_Out):
    send_id: int
    sink: str
    state: SendStateName
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    code: str | None
    in_flight: bool
    """An attempt is under way (or its process died and its lease has not run out yet)."""
    files: list[FileOut]
    attempts: list[AttemptOut]


class EventOut(_Out):
    event_id: str
    event: dict[str, Any] | None
    """The normalized event as stored when its delivery was routed (links redacted)."""
    sends: list[SendOut]


class ActionOut(_Out):
    action_id: int
    at: datetime
    actor: str
    action: str
    delivery_id: str | None
    event_id: str | None
    sink: str | None
    detail: dict[str, Any]


class DeliveryOut(_Out):
    """One delivery (found by its id or one of its events'), everything known about it."""

    delivery_id: str
    found_by: Literal["delivery", "event"]
    route: str
    source: str
    state: Literal["pending", "done", "dead"]
    received_at: datetime
    size: int
    content_type: str
    headers: dict[str, str]
    last_error: str | None
    payload: Any
    """The raw body as received: parsed JSON, or text; SAS signatures and secrets redacted."""
    events: list[EventOut]
    routing_attempts: list[AttemptOut]
    actions: list[ActionOut]


class ReplayOut(_Out):
    delivery_id: str
    event_ids: list[str]
    requeued: int
    created: int
    in_flight: int
    rerouted: bool
    message: str


class RetryNowOut(_Out):
    send_id: int
    delivery_id: str
    event_id: str
    sink: str
    state: SendStateName
    due_now: bool
    message: str


class SinkOut(_Out):
    name: str
    type: str | None
    """The plugin configured for it; None for a sink the journal knows but config no longer has."""
    pending: int
    delivered: int
    dead: int
    stopped: bool
    stopped_at: datetime | None
    stopped_reason: str | None


class SinkActionOut(_Out):
    sink: str
    stopped: bool
    changed: bool
    message: str


class PurgeOut(_Out):
    task_id: str
    deliveries: list[str]
    """Every delivery erased, with its raw body (routed or not)."""
    unrouted: int
    """Of those, the ones that had no events (never routed, not routable, or dropped)."""
    events: int
    sends: int
    attempts: int
    """Routing and send attempts erased."""
    payload_bytes: int
    delivered_to: dict[str, int]
    message: str


class BatchOut(_Out):
    """A vendor batch: its events by state."""

    batch_id: str
    events: int
    pending: int
    delivered: int
    dead: int


class BulkReplayOut(_Out):
    """A bulk replay by filter: its count first (``dryRun``), then its job's progress, as the
    journal keeps it (so every replica shows the same)."""

    job_id: str | None
    """None for a dry run (nothing is done)."""
    state: Literal["dry-run", "running", "done", "cancelled", "failed"]
    matched: int
    """Events the filter matched when the replay began."""
    replayed: int
    """Events replayed so far."""
    requeued: int
    created: int
    in_flight: int
    error: str | None = None
    rerouted: int = 0
    """Deliveries without events routed again."""
    actor: str | None = None
    sink: str | None = None
    filter: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None
    cancel_requested: bool = False
    """A cancel was asked for: the process running it stops at its next chunk."""
    running_on: str | None = None
    """The process running it (``host/pid/random``); None once it ended."""
    takeovers: int = 0
    """Times a process took it over from one that stopped."""


class ActivityPoint(_Out):
    start: datetime
    received: int
    """Webhooks received (deliveries) in the interval."""
    delivered: int
    """Sends delivered."""
    failed: int
    """Send attempts that failed (to be retried, or given up)."""


class ActivityOut(_Out):
    window: str
    """``6h``, ``24h`` or ``7d``."""
    bucket_seconds: int
    points: list[ActivityPoint]
    """Oldest first, one per interval."""


class DeadGroupOut(_Out):
    sink: str
    code: str
    """The failure code the sink gave, ``none`` without one."""
    dead: int


class BatchRowOut(_Out):
    """A vendor batch with events received lately."""

    batch_id: str
    vendor: str | None
    last_received_at: datetime
    events: int
    pending: int
    delivered: int
    dead: int


class PollerOut(_Out):
    name: str
    polls: int
    failures: int
    """Failed polls in a row."""
    found: int
    last_run_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    next_run_at: datetime | None
