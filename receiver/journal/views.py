"""What the operator's queries and actions on the journal return: plain frozen values.

``EventFilter`` selects events for a listing (``JournalAdmin.events``); an ``EventPage`` is one
page of them with the cursor of the next; ``DeliveryDetail`` is one delivery with its raw bytes,
its events, each send of each event with every attempt, and the operators' actions on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from handlers.event import Event, RawDelivery
from receiver.journal.base import DeliveryInfo, SendInfo, SendState

__all__ = [
    "ActionInfo",
    "ActivityBucket",
    "AttemptInfo",
    "BatchRow",
    "DeliveryDetail",
    "EventDetail",
    "EventFilter",
    "EventPage",
    "EventRow",
    "ListedState",
    "PurgeResult",
    "ReplayJob",
    "ReplayResult",
    "RetryNowResult",
    "SendDetail",
]


ListedState = Literal["pending", "delivered", "dead", "dropped"]
"""A listed row's state: an event's (``SendState``), or ``dropped`` for a delivery routed with
every event dropped by the rules."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Every condition given must hold; a tuple of ``states`` matches any of them.

    ``states`` is the event's state (``SendState``: pending while any send is, dead when a send
    gave up and none is pending, delivered when every send was), or, with ``sink``, the state
    of the event's send to that sink.  ``since``/``until`` bound the time the delivery was
    received (``until`` excluded), as its id records it: ids begin with the millisecond they
    were made, on receipt, so a range is a range of the index the listing runs on.  ``text``
    is found anywhere in the display name, in any case.

    Deliveries without events (not routed yet, not routable, or every event dropped by the
    rules) are listed too, as rows without an event id, while no filter on an event's own
    fields (vendor, kind, sink, batch, workspace, external id, text) is given: by ``task_id``
    through the delivery's subject (``<vendor>:task:<id>``).  ``dropped`` wants those routed
    with every event dropped, beside any ``states``.
    """

    since: datetime | None = None
    until: datetime | None = None
    states: tuple[SendState, ...] = ()
    route: str | None = None
    vendor: str | None = None
    kind: str | None = None
    sink: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    workspace_id: str | None = None
    external_id: str | None = None
    text: str | None = None
    dropped: bool = False


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event in a listing, or a delivery without events (``event_id`` None)."""

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
    state: ListedState
    sends: Mapping[str, SendState]
    """Sink -> the state of the event's send to it."""
    last_error: str | None = None
    """A delivery without events: why it was not routed (yet)."""


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[EventRow]
    next_cursor: str | None
    """Pass it back for the page after this one; None on the last page."""


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt at routing a delivery or at a send, in the order they were made."""

    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    """``delivered``, ``retry``, ``dead``, ``gone``, ``lost`` (its worker stopped), or
    ``routed`` for a delivery; None while it runs."""
    error: str | None
    owner: str

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class SendDetail:
    info: SendInfo
    attempts: list[AttemptInfo]


@dataclass(frozen=True, slots=True)
class EventDetail:
    event_id: str
    event: Event | None
    """The event as stored when its delivery was routed."""
    sends: list[SendDetail]


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """An operator's action, as recorded: who, when, what, on which delivery, event or sink."""

    action_id: int
    at: datetime
    actor: str
    action: str
    delivery_id: str | None
    event_id: str | None
    sink: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    """A delivery found by its id or by one of its events' ids (then ``event_id`` is that
    event, and ``events`` holds it alone)."""

    delivery: DeliveryInfo
    raw: RawDelivery
    event_id: str | None
    events: list[EventDetail]
    routing_attempts: list[AttemptInfo]
    actions: list[ActionInfo]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    delivery_id: str
    event_ids: list[str]
    requeued: int
    """Sends made pending again, from whatever state they were in."""
    created: int
    """Sends made for a sink the event had none for."""
    in_flight: int
    """Sends left alone because an attempt at them is under way right now."""
    rerouted: bool
    """The delivery had no events (not routable, or every event dropped): it is routed again."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    task_id: str
    deliveries: list[str]
    events: int
    sends: int
    attempts: int
    """Routing and send attempts erased (their errors may quote the payload)."""
    unrouted: int
    """Of ``deliveries``, those that had no events (never routed, not routable, dropped)."""
    payload_bytes: int
    """The raw bodies erased, in bytes."""
    delivered_to: Mapping[str, int]
    """Sink -> events it had received: copies that live on there, for the operator to erase."""


@dataclass(frozen=True, slots=True)
class RetryNowResult:
    send_id: int
    delivery_id: str
    event_id: str
    sink: str
    state: SendState
    due_now: bool
    """False when the send was not waiting (delivered or dead: replay it instead)."""


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    """What happened in one interval: webhooks received (deliveries), sends delivered, and
    send attempts that failed (to be retried, or given up)."""

    start: datetime
    received: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class BatchRow:
    """A vendor batch seen in the journal: its events by state, newest batch first."""

    batch_id: str
    vendor: str | None
    last_received_at: datetime
    events: Mapping[SendState, int]


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """A bulk replay by filter, as the journal keeps it: any replica shows it and may cancel
    it; the process that runs it (``owner``) holds it until ``lease_until``."""

    job_id: str
    actor: str
    filter: Mapping[str, Any]
    """The listing's parameters it replays (``EventQuery``'s, camelCase)."""
    sink: str | None
    state: Literal["running", "done", "cancelled", "failed"]
    matched: int
    replayed: int
    requeued: int
    created: int
    in_flight: int
    rerouted: int
    cursor: str | None
    """Where it goes on from: the listing's cursor after the last chunk replayed."""
    error: str | None
    created_at: datetime
    updated_at: datetime
    cancel_requested: bool
    owner: str | None
    lease_until: datetime | None
    takeovers: int
    """How many times a process took it over from one that stopped."""
