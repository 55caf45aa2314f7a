"""The dispatcher against the in-memory journal and a recording sink, on an injected clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from handlers.event import Event, RawDelivery
from handlers.sources.smartdocumentor import TextDocumentSource
from handlers.testing import RecordingSink
from receiver.config import DispatcherConfig, RetryConfig
from receiver.dispatcher import Dispatcher, RouteTarget, owner_is_gone
from receiver.ids import new_id
from receiver.journal.base import DeliveryState
from receiver.journal.memory import MemoryJournal
from receiver.retry import RetryPolicy

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def delivery(task: str, body: bytes | None = None) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=body if body is not None else f'{{"taskId": "{task}", "workspaceId": 7}}'.encode(),
    )


def make(
    sinks: list[tuple[str, RecordingSink]], clock: Clock, max_attempts: int = 3
) -> tuple[Dispatcher, MemoryJournal]:
    journal = MemoryJournal(clock)
    config = DispatcherConfig(
        concurrency=4,
        poll_seconds=0.01,
        retry=RetryConfig(max_attempts=max_attempts, base_seconds=10, cap_seconds=100, jitter=0),
    )
    policy = RetryPolicy.from_config(config.retry, random.Random(1))
    target = RouteTarget(TextDocumentSource(), list(sinks))
    return Dispatcher(journal, {"r": target}, config, policy=policy, clock=clock), journal


async def state_of(journal: MemoryJournal, delivery_id: str) -> DeliveryState:
    info = await journal.get(delivery_id)
    assert info is not None
    return info.state


async def until_dead(journal: MemoryJournal, delivery_id: str) -> None:
    async def dead() -> bool:
        return await state_of(journal, delivery_id) is DeliveryState.DEAD

    await until(dead)


async def dead_letter_reason(dispatcher: Dispatcher, journal: MemoryJournal, d: RawDelivery) -> str:
    """Run ``d`` through ``dispatcher`` until it is dead-lettered; the reason it was given."""
    await journal.append(d, "k")
    await dispatcher.start()
    await until_dead(journal, d.delivery_id)
    await dispatcher.stop(1)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.last_error is not None
    return info.last_error


async def test_delivers_every_event_to_every_sink_once() -> None:
    a, b = RecordingSink(), RecordingSink()
    dispatcher, journal = make([("a", a), ("b", b)], Clock())
    items = [delivery(f"t{i}") for i in range(20)]
    for d in items:
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    await until(lambda: len(a.events) == 20 and len(b.events) == 20)
    await dispatcher.stop(1)
    assert (await journal.counts())[DeliveryState.DONE] == 20
    event: Event = a.events[items[0].delivery_id + "-0"]
    assert (event.task_id, event.workspace_id, event.route) == ("t0", "7", "r")


async def test_retries_on_schedule_then_dead_letters() -> None:
    clock = Clock()
    sink = RecordingSink()
    sink.fail_next = 10
    dispatcher, journal = make([("s", sink)], clock, max_attempts=3)
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await until(lambda: sink.calls == 1)
    await until(lambda: journal.rows[d.delivery_id].lease_owner is None)
    # Backoff without jitter: 10 s after attempt 1, 20 s after attempt 2.
    assert journal.rows[d.delivery_id].next_attempt_at == clock.now + 10
    clock.now += 9.9
    assert await journal.claim("probe", 10, 60) == [], "not due yet"
    assert sink.calls == 1
    clock.now += 0.2
    dispatcher.wake()
    await until(lambda: sink.calls == 2)
    await until(lambda: journal.rows[d.delivery_id].lease_owner is None)
    assert journal.rows[d.delivery_id].next_attempt_at == pytest.approx(clock.now + 20)
    clock.now += 20
    dispatcher.wake()
    await until(lambda: sink.calls == 3)
    await until_dead(journal, d.delivery_id)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.last_error is not None
    assert info.last_error.startswith("gave up after 3 attempts: sink s: recording sink")
    # After a fix, a requeued dead letter is delivered.
    await journal.requeue()
    dispatcher.wake()
    sink.fail_next = 0
    await until(lambda: len(sink.events) == 1)
    await dispatcher.stop(1)


async def test_permanent_failure_dead_letters_at_once() -> None:
    sink = RecordingSink()
    sink.fail_next, sink.permanent = 1, True
    dispatcher, journal = make([("s", sink)], Clock())
    reason = await dead_letter_reason(dispatcher, journal, delivery("t"))
    assert sink.calls == 1
    assert reason == "sink s: recording sink: told to fail for good"


async def test_unreadable_delivery_is_dead_lettered_with_reason() -> None:
    sink = RecordingSink()
    dispatcher, journal = make([("s", sink)], Clock())
    reason = await dead_letter_reason(dispatcher, journal, delivery("t", body=b"not json"))
    assert reason.startswith("cannot normalize:")
    assert sink.calls == 0


async def test_one_failing_sink_retries_the_delivery() -> None:
    good, bad = RecordingSink(), RecordingSink()
    bad.fail_next = 1
    clock = Clock()
    dispatcher, journal = make([("good", good), ("bad", bad)], clock)
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await until(lambda: bad.calls == 1)
    await until(lambda: journal.rows[d.delivery_id].lease_owner is None)
    clock.now += 11
    dispatcher.wake()
    await until(lambda: len(bad.events) == 1)
    await dispatcher.stop(1)
    # The healthy sink was called again but, being idempotent, holds the event once.
    assert good.calls == 2 and len(good.events) == 1


class SlowSink:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def deliver(self, event: Event) -> None:
        self.started.set()
        await asyncio.sleep(30)


async def test_stop_releases_unfinished_work_within_grace() -> None:
    slow = SlowSink()
    journal = MemoryJournal()
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), [("slow", slow)])},
        DispatcherConfig(poll_seconds=0.01),
    )
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await asyncio.wait_for(slow.started.wait(), 5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await dispatcher.stop(0.2)
    assert loop.time() - began < 5
    row = journal.rows[d.delivery_id]
    assert row.lease_owner is None and row.attempts == 0 and row.state is DeliveryState.PENDING
    assert not dispatcher.running


def test_owner_is_gone_only_for_dead_local_processes() -> None:
    import os
    import socket

    host = socket.gethostname()
    assert not owner_is_gone(f"{host}/{os.getpid()}/x")
    assert not owner_is_gone(f"{host}/1/x")  # pid 1 runs
    assert not owner_is_gone("other-host/999999/x")
    assert not owner_is_gone("garbage")
    assert owner_is_gone(f"{host}/{2**22 + 12345}/x")


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(5, 2.0, 10.0, 0.5, random.Random(3))
    delays = [policy.delay(n) for n in range(1, 5)]
    assert policy.delay(5) is None
    for n, delay in enumerate(delays, start=1):
        full = min(10.0, 2.0 * 2 ** (n - 1))
        assert delay is not None and full * 0.5 <= delay <= full


class GatedSink:
    """Holds every delivery until released, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.done = 0
        self.gate = asyncio.Event()

    async def deliver(self, event: Event) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await self.gate.wait()
        self.running -= 1
        self.done += 1


async def test_busy_ingest_pauses_exports_after_one_batch() -> None:
    sink = GatedSink()
    load = {"requests": 50}
    journal = MemoryJournal()
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), [("gated", sink)])},
        DispatcherConfig(concurrency=2, poll_seconds=0.01, busy_requests=8, busy_pause_seconds=60),
        ingest_load=lambda: load["requests"],
    )
    for i in range(6):
        d = delivery(f"t{i}")
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    await until(lambda: sink.running == 2)
    sink.gate.set()
    await until(lambda: sink.done == 2)
    # Busy, and the pause has not run out: the rest wait in the journal.
    await until(lambda: not dispatcher._inflight)
    probed = await journal.claim("probe", 10, 60)
    assert len(probed) == 4
    await journal.release("probe", [c.delivery.delivery_id for c in probed])
    # Ingest calms down: exports resume at once, at full concurrency.
    load["requests"] = 0
    await until(lambda: sink.done == 6)
    await dispatcher.stop(1)
    assert sink.most == 2


class LeakySink:
    async def deliver(self, event: Event) -> None:
        raise ConnectionError(
            "GET https://acct.blob.core.windows.net/c/f.pdf?sv=2022&sig=TopSecret%3D failed"
        )


async def test_errors_are_redacted_before_they_are_stored() -> None:
    journal = MemoryJournal()
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), [("leaky", LeakySink())])},
        DispatcherConfig(poll_seconds=0.01, retry=RetryConfig(max_attempts=1)),
    )
    reason = await dead_letter_reason(dispatcher, journal, delivery("t"))
    assert "TopSecret" not in reason
    assert "sig=REDACTED" in reason
    assert "ConnectionError" in reason
