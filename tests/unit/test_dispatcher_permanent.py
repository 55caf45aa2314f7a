"""The dispatcher dead-letters at once what can never succeed, however a sink wrapped it."""

from __future__ import annotations

import pytest

from handlers.errors import RetryableSinkError
from handlers.event import Event
from receiver.journal.base import SendState
from tests.unit.test_dispatcher import dead_letter_reason, delivery, make

pytestmark = pytest.mark.anyio


class _Serializing:
    """A third-party sink that wraps every failure as retryable, serialization errors too."""

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, event: Event) -> None:
        self.calls += 1
        try:
            raise RecursionError("maximum recursion depth exceeded while encoding")
        except RecursionError as exc:
            raise RetryableSinkError(f"cannot encode event {event.event_id}") from exc


async def test_an_error_that_can_never_succeed_is_dead_at_its_first_attempt() -> None:
    sink = _Serializing()
    dispatcher, journal = make([("s", sink)], max_attempts=30)
    reason = await dead_letter_reason(dispatcher, journal, d := delivery("t"))
    assert sink.calls == 1
    assert reason == f"sink s: cannot encode event {d.delivery_id}-0"
    [send] = await journal.sends(d.delivery_id)
    assert (send.state, send.attempts) == (SendState.DEAD, 1)
