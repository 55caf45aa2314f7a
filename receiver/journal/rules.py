"""The journal's rules, written once: every backend (and every reader) decides through these.

* what an attempt's outcome does to a delivery's routing state and to a send's state;
* a delivery's overall state, from its routing state and its sends'; an event's, from its own;
* the attempt count, next attempt time and error an operator sees for a delivery as a whole.

They are plain functions over plain values.  Where SQL must filter by a rule (listing the dead
deliveries), the predicate is generated from the function itself (``overall_state_cases``), so
the rule still has one definition.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from receiver.journal.base import DeliveryState, Outcome, SendState

__all__ = [
    "ROUTING_STATES",
    "SendSummary",
    "delivery_attempts",
    "delivery_next_attempt",
    "event_state",
    "operator_error",
    "overall_state",
    "overall_state_cases",
    "routing_transition",
    "send_transition",
]

ROUTING_STATES = ("pending", "routed", "dead")
"""A delivery's own state: not routed yet, routed into sends, or not routable."""


def routing_transition(outcome: Outcome, now: float) -> tuple[str, float]:
    """(routing state, next attempt time) after a routing attempt that did not route."""
    if outcome.kind == "retry":
        return "pending", outcome.retry_at or now
    if outcome.kind == "dead":
        return "dead", now
    raise ValueError(f"a delivery is routed, never {outcome.kind!r}: use route()")


def send_transition(outcome: Outcome, now: float) -> tuple[SendState, float]:
    """(send state, next attempt time) after an attempt at a send.

    ``gone`` leaves the send pending and due: it waits only because its sink is stopped, and
    goes the moment the sink is resumed.
    """
    if outcome.kind == "delivered":
        return SendState.DELIVERED, now
    if outcome.kind == "retry":
        return SendState.PENDING, outcome.retry_at or now
    if outcome.kind == "gone":
        return SendState.PENDING, now
    if outcome.kind == "dead":
        return SendState.DEAD, now
    raise ValueError(f"unknown outcome {outcome.kind!r}")


def overall_state(routing: str, pending_sends: bool, dead_sends: bool) -> DeliveryState:
    """A delivery is pending while unrouted or any send is, dead when it could not be routed
    or a send gave up (and nothing is pending), done when every send was delivered or the
    rules dropped every event."""
    if routing == "pending" or pending_sends:
        return DeliveryState.PENDING
    if routing == "dead" or dead_sends:
        return DeliveryState.DEAD
    return DeliveryState.DONE


def event_state(pending_sends: bool, dead_sends: bool) -> SendState:
    """An event is pending while any of its sends is, dead when one gave up (and none is
    pending), delivered when every one was: the same rule as a delivery's, per event."""
    if pending_sends:
        return SendState.PENDING
    if dead_sends:
        return SendState.DEAD
    return SendState.DELIVERED


def overall_state_cases(state: DeliveryState) -> list[tuple[str, bool, bool]]:
    """Every (routing state, any send pending, any send dead) that ``overall_state`` maps to
    ``state``: what a SQL filter on the overall state matches."""
    return [
        (routing, pending, dead)
        for routing, pending, dead in itertools.product(
            ROUTING_STATES, (False, True), (False, True)
        )
        if overall_state(routing, pending, dead) is state
    ]


@dataclass(frozen=True, slots=True)
class SendSummary:
    """What the rules read of one send of a delivery."""

    sink: str
    state: SendState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    updated_at: float


def delivery_attempts(routing_attempts: int, sends: Sequence[SendSummary]) -> int:
    """The most telling attempt count: the busiest send's, else routing's."""
    return max((s.attempts for s in sends), default=routing_attempts)


def delivery_next_attempt(
    state: DeliveryState, routing: str, routing_next: float, sends: Sequence[SendSummary]
) -> float | None:
    """When anything of a pending delivery is next due; None unless it is pending."""
    if state is not DeliveryState.PENDING:
        return None
    if routing == "pending":
        return routing_next
    return min((s.next_attempt_at for s in sends if s.state is SendState.PENDING), default=None)


def operator_error(routing_error: str | None, sends: Sequence[SendSummary]) -> str | None:
    """The error an operator should see first: the delivery's own, else its sends' — a send
    that gave up before one still retrying, the latest first — naming the sink."""
    if routing_error is not None:
        return routing_error
    failing = [s for s in sends if s.last_error is not None]
    if not failing:
        return None
    first = min(failing, key=lambda s: (s.state is SendState.PENDING, -s.updated_at))
    return f"sink {first.sink}: {first.last_error}"
