"""The dispatcher against the in-memory journal and recording sinks, on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.errors import RetryableSinkError, SinkGone
from handlers.event import Event, RawDelivery
from handlers.sink import Sink
from handlers.sources.smartdocumentor import TextDocumentSource
from handlers.testing import RecordingSink
from receiver.config import DEFAULT_SCHEDULE, DispatcherConfig, RetryConfig
from receiver.dispatcher import Dispatcher, RouteTarget, SinkTarget, owner_is_gone
from receiver.ids import new_id
from receiver.journal.base import DeliveryState, SendClaim, SendInfo, SendState
from receiver.journal.memory import MemoryJournal
from receiver.retry import RetryPolicy
from receiver.routing import Router, RuleConfig

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


def delivery(task: str, body: bytes | None = None, workspace: int = 7) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=body
        if body is not None
        else f'{{"taskId": "{task}", "workspaceId": {workspace}}}'.encode(),
    )


def policy(max_attempts: int = 3, **options: float) -> RetryPolicy:
    settings = {"base_seconds": 10.0, "cap_seconds": 100.0, "jitter": 0.0, **options}
    config = RetryConfig(max_attempts=max_attempts, **settings)
    return RetryPolicy.from_config(config, random.Random(1))


def make(
    sinks: Sequence[tuple[str, Sink]],
    clock: Clock | None = None,
    *,
    max_attempts: int = 3,
    rules: Sequence[RuleConfig] = (),
    default: Sequence[str] | None = None,
    concurrency: int = 4,
    **config: float,
) -> tuple[Dispatcher, MemoryJournal]:
    clock = clock or Clock()
    journal = MemoryJournal(clock)
    targets = {name: SinkTarget(sink, policy(max_attempts), concurrency) for name, sink in sinks}
    router = Router(rules, [name for name, _ in sinks] if default is None else default)
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), router)},
        targets,
        DispatcherConfig(concurrency=concurrency, poll_seconds=0.01, **config),
        clock=clock,
    )
    return dispatcher, journal


async def state_of(journal: MemoryJournal, delivery_id: str) -> DeliveryState:
    info = await journal.get(delivery_id)
    assert info is not None
    return info.state


async def send_of(journal: MemoryJournal, delivery_id: str, sink: str) -> SendState:
    [send] = [s for s in await journal.sends(delivery_id) if s.sink == sink]
    return send.state


async def sends_to(journal: MemoryJournal, sink: str) -> list[SendInfo]:
    """Every send to ``sink``, read as an operator would."""
    found = []
    for info in await journal.list(limit=10_000):
        found += [s for s in await journal.sends(info.delivery_id) if s.sink == sink]
    return found


def at(info: SendInfo) -> float:
    assert info.next_attempt_at is not None
    return info.next_attempt_at.timestamp()


async def dead_letter_reason(dispatcher: Dispatcher, journal: MemoryJournal, d: RawDelivery) -> str:
    """Run ``d`` through ``dispatcher`` until it is dead-lettered; the reason it was given."""
    await journal.append(d, "k")
    await dispatcher.start()

    async def dead() -> bool:
        return await state_of(journal, d.delivery_id) is DeliveryState.DEAD

    await until(dead)
    await dispatcher.stop(1)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.last_error is not None
    return info.last_error


async def test_delivers_every_event_to_every_sink_once() -> None:
    a, b = RecordingSink(), RecordingSink()
    dispatcher, journal = make([("a", a), ("b", b)])
    items = [delivery(f"t{i}") for i in range(20)]
    for d in items:
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    await until(lambda: len(a.events) == 20 and len(b.events) == 20)
    await until(lambda: dispatcher.inflight == 0)
    await dispatcher.stop(1)
    assert (await journal.counts())[DeliveryState.DONE] == 20
    assert (a.calls, b.calls) == (20, 20)
    event: Event = a.events[items[0].delivery_id + "-0"]
    assert (event.task_id, event.workspace_id, event.route) == ("t0", "7", "r")
    sends = await journal.sends(items[0].delivery_id)
    assert [(s.sink, s.state, s.attempts) for s in sends] == [
        ("a", SendState.DELIVERED, 1),
        ("b", SendState.DELIVERED, 1),
    ]


async def test_fan_out_with_one_failing_sink() -> None:
    """The healthy sink gets each event once and at once; the failing one retries on its
    schedule, is dead-lettered after its cap with the event kept, and delivers after a fix."""
    clock = Clock()
    good, bad = RecordingSink(), RecordingSink()
    bad.fail_next = 100
    dispatcher, journal = make([("good", good), ("bad", bad)], clock, max_attempts=3)
    items = [delivery(f"t{i}") for i in range(5)]
    for d in items:
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    await until(lambda: len(good.events) == 5 and bad.calls == 5)
    assert good.calls == 5, "the healthy sink is never called twice"

    async def settled(attempts: int) -> bool:
        sends = await sends_to(journal, "bad")
        return len(sends) == 5 and all(
            s.lease_owner is None and s.attempts == attempts for s in sends
        )

    await until(lambda: settled(1))
    # Backoff without jitter: 10 s after attempt 1, 20 s after attempt 2.
    assert [at(s) for s in await sends_to(journal, "bad")] == [pytest.approx(clock.now + 10)] * 5
    clock.now += 9.9
    assert await journal.claim_sends("probe", {"bad": 10}, 60) == [], "not due yet"
    assert bad.calls == 5
    clock.now += 0.2
    await until(lambda: bad.calls == 10)
    await until(lambda: settled(2))
    assert [at(s) for s in await sends_to(journal, "bad")] == [pytest.approx(clock.now + 20)] * 5
    clock.now += 20
    await until(lambda: bad.calls == 15)
    for d in items:

        async def dead(d: RawDelivery = d) -> bool:
            return await send_of(journal, d.delivery_id, "bad") is SendState.DEAD

        await until(dead)
        assert await send_of(journal, d.delivery_id, "good") is SendState.DELIVERED
        info = await journal.get(d.delivery_id)
        assert info is not None and info.state is DeliveryState.DEAD
        assert info.last_error == "sink bad: gave up after 3 attempts: recording sink: told to fail"
    assert good.calls == 5
    # After a fix, the dead letters of that sink alone go out again.
    bad.fail_next = 0
    assert await journal.requeue(sink="bad") == 5
    dispatcher.wake()
    await until(lambda: len(bad.events) == 5)
    await dispatcher.stop(1)
    assert good.calls == 5
    assert (await journal.counts())[DeliveryState.DONE] == 5


async def delivered_while_deliveries_stream_in(
    dispatcher: Dispatcher, journal: MemoryJournal, sink: RecordingSink, first: RawDelivery
) -> None:
    """Wait for ``first``'s event to reach ``sink`` while new deliveries wake the dispatcher
    far more often than it polls, for as long as it takes; then stop the dispatcher."""

    async def stream() -> None:
        for i in range(5000):
            d = delivery(f"t{i}")
            await journal.append(d, d.delivery_id)
            dispatcher.wake()
            await asyncio.sleep(0.001)

    streaming = asyncio.create_task(stream())
    try:
        await until(lambda: first.event_id(0) in sink.events, within=3)
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
    await dispatcher.stop(1)


async def test_retries_go_out_while_new_deliveries_keep_waking_the_dispatcher() -> None:
    clock = Clock()
    sink = RecordingSink()
    sink.fail_next = 1
    dispatcher, journal = make([("s", sink)], clock)
    first = delivery("first")
    await journal.append(first, first.delivery_id)
    await dispatcher.start()
    await until(lambda: sink.calls == 1)

    async def released() -> bool:
        return all(s.lease_owner is None for s in await sends_to(journal, "s"))

    await until(released)
    clock.now += 11  # the retry is due: it never waits out a whole poll interval
    await delivered_while_deliveries_stream_in(dispatcher, journal, sink, first)


async def test_a_send_left_by_a_lapsed_lease_goes_out_while_new_deliveries_keep_coming() -> None:
    clock = Clock()
    sink = RecordingSink()
    dispatcher, journal = make([("s", sink)], clock)
    first = delivery("first")
    await journal.append(first, first.delivery_id)
    # Another worker routed it and died holding the send: due since long ago once it lapses.
    [claim] = await journal.claim("gone", 1, 60)
    [event] = TextDocumentSource().normalize(first)
    assert len(await journal.route(claim, "gone", [(event, "s")], {"s"}, 300)) == 1
    clock.now += 100
    await dispatcher.start()
    second = delivery("second")
    await journal.append(second, second.delivery_id)
    dispatcher.wake()
    await until(lambda: second.event_id(0) in sink.events)  # recent claims are marked by now
    clock.now += 201  # the dead worker's lease lapses
    # Recent claims alone would never see it: the sweeps every poll interval must.
    await delivered_while_deliveries_stream_in(dispatcher, journal, sink, first)


async def test_a_slow_sink_does_not_take_a_healthy_sinks_slots() -> None:
    slow, good = GatedSink(), RecordingSink()
    dispatcher, journal = make([("slow", slow), ("good", good)], concurrency=2)
    for i in range(10):
        d = delivery(f"t{i}")
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    await until(lambda: len(good.events) == 10)
    assert slow.running == 2 and slow.most == 2
    slow.gate.set()
    await until(lambda: slow.done == 10)
    await dispatcher.stop(1)
    assert slow.most == 2


async def test_rules_pick_sinks_and_drop_events() -> None:
    a, b = RecordingSink(), RecordingSink()
    rules = [
        RuleConfig(workspace_id="1", sinks=["a", "b"]),
        RuleConfig(fields={"taskId": ["drop-me", "drop-me-too"]}, drop=True),
    ]
    dispatcher, journal = make([("a", a), ("b", b)], rules=rules, default=["a"])
    both, dropped, default = delivery("x", workspace=1), delivery("drop-me"), delivery("y")
    for d in (both, dropped, default):
        await journal.append(d, d.delivery_id)
    await dispatcher.start()

    async def settled() -> bool:
        return (await journal.counts())[DeliveryState.DONE] == 3

    await until(settled)
    await dispatcher.stop(1)
    assert set(a.events) == {both.event_id(0), default.event_id(0)}
    assert set(b.events) == {both.event_id(0)}
    assert await journal.sends(dropped.delivery_id) == []


async def test_permanent_failure_dead_letters_only_that_sink() -> None:
    bad, good = RecordingSink(), RecordingSink()
    bad.fail_next, bad.permanent = 1, True
    dispatcher, journal = make([("bad", bad), ("good", good)])
    reason = await dead_letter_reason(dispatcher, journal, d := delivery("t"))
    assert bad.calls == 1 and len(good.events) == 1
    assert reason == "sink bad: recording sink: told to fail for good"
    assert await send_of(journal, d.delivery_id, "good") is SendState.DELIVERED


async def test_unreadable_delivery_is_dead_lettered_with_reason() -> None:
    sink = RecordingSink()
    dispatcher, journal = make([("s", sink)])
    reason = await dead_letter_reason(dispatcher, journal, delivery("t", body=b"not json"))
    assert reason.startswith("cannot normalize:")
    assert sink.calls == 0


class ThrottledSink:
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.calls = 0

    async def deliver(self, event: Event) -> None:
        self.calls += 1
        raise RetryableSinkError("429 Too Many Requests", retry_after=self.retry_after)


async def test_retry_after_is_a_floor_for_the_next_attempt() -> None:
    clock = Clock()
    sink = ThrottledSink(retry_after=500)
    dispatcher, journal = make([("t", sink)], clock)
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await until(lambda: sink.calls == 1)

    async def released() -> bool:
        return all(s.lease_owner is None for s in await sends_to(journal, "t"))

    await until(released)
    await dispatcher.stop(1)
    [send] = await sends_to(journal, "t")
    assert at(send) == pytest.approx(clock.now + 500), "the policy alone would wait 10 s"
    assert send.last_error == "429 Too Many Requests"


class GoneSink:
    def __init__(self) -> None:
        self.gone = True
        self.events: list[str] = []

    async def deliver(self, event: Event) -> None:
        if self.gone:
            raise SinkGone("http sink: https://example.invalid/hook answered 410 Gone")
        self.events.append(event.event_id)


async def test_410_stops_that_sink_until_resumed_and_loses_nothing() -> None:
    gone, good = GoneSink(), RecordingSink()
    dispatcher, journal = make([("hook", gone), ("good", good)])
    first = delivery("t0")
    await journal.append(first, first.delivery_id)
    await dispatcher.start()

    async def stopped() -> bool:
        return bool(await journal.stopped_sinks())

    await until(stopped)
    [hook] = await journal.stopped_sinks()
    assert hook.sink == "hook" and hook.reason.endswith("answered 410 Gone")
    # Later events still reach the healthy sink; the stopped one is not even tried.
    later = [delivery(f"t{i}") for i in range(1, 4)]
    for d in later:
        await journal.append(d, d.delivery_id)
    dispatcher.wake()
    await until(lambda: len(good.events) == 4)
    states = {s.state for s in await sends_to(journal, "hook")}
    assert states == {SendState.PENDING}
    gone.gone = False
    assert await journal.resume_sink("hook")
    await until(lambda: len(gone.events) == 4)
    await dispatcher.stop(1)
    assert sorted(gone.events) == sorted(d.event_id(0) for d in [first, *later])


class BrokenSource(TextDocumentSource):
    """A source that can no longer normalize anything (a bad upgrade)."""

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        raise AssertionError("normalized again")


class CountingSource(TextDocumentSource):
    def __init__(self) -> None:
        self.calls = 0

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        self.calls += 1
        return super().normalize(delivery)


async def test_a_delivery_is_normalized_once_whatever_its_sinks_and_retries() -> None:
    clock = Clock()
    good, flaky = RecordingSink(), RecordingSink()
    flaky.fail_next = 2
    dispatcher, journal = make([("good", good), ("flaky", flaky)], clock)
    source = CountingSource()
    dispatcher.routes = {"r": RouteTarget(source, Router([], ["good", "flaky"]))}
    d = delivery("once")
    await journal.append(d, "k")
    await dispatcher.start()
    for attempt in (1, 2):
        await until(lambda attempt=attempt: flaky.calls == attempt)  # type: ignore[misc]
        clock.now += 100
    await until(lambda: len(flaky.events) == 1 and len(good.events) == 1)
    await dispatcher.stop(1)
    assert flaky.calls == 3
    assert source.calls == 1, "every attempt delivers the event stored when it was routed"


async def test_retried_sends_deliver_the_stored_event_without_normalizing_again() -> None:
    clock = Clock()
    sink = RecordingSink()
    sink.fail_next = 1
    dispatcher, journal = make([("s", sink)], clock)
    d = delivery("t-raw")
    await journal.append(d, "k")
    await dispatcher.start()
    await until(lambda: sink.calls == 1)
    await dispatcher.stop(1)
    # A new process whose source could no longer normalize anything: the event comes from
    # the journal, as it was stored when the delivery was routed.
    again, _ = make([("s", sink)], clock)
    again.journal = journal
    again.routes = {"r": RouteTarget(BrokenSource(), Router([], ["s"]))}
    clock.now += 11
    await again.start()
    await until(lambda: len(sink.events) == 1)
    await again.stop(1)
    assert sink.events[d.event_id(0)].task_id == "t-raw"


class SlowSink:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def deliver(self, event: Event) -> None:
        self.started.set()
        await asyncio.sleep(30)


async def test_stop_releases_unfinished_work_within_grace() -> None:
    slow = SlowSink()
    dispatcher, journal = make([("slow", slow)])
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await asyncio.wait_for(slow.started.wait(), 5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await dispatcher.stop(0.2)
    assert loop.time() - began < 5
    [send] = await sends_to(journal, "slow")
    assert send.lease_owner is None and send.attempts == 0 and send.state is SendState.PENDING
    assert not dispatcher.running


class SlowRoutingJournal(MemoryJournal):
    """Holds every ``route`` commit until ``gate`` is set, as a busy disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.routing = asyncio.Event()
        self.gate = asyncio.Event()

    async def route(self, *args: Any, **kwargs: Any) -> list[SendClaim]:
        self.routing.set()
        await self.gate.wait()
        return await super().route(*args, **kwargs)


async def test_routing_that_lands_during_shutdown_leaves_its_sends_in_the_journal() -> None:
    sink = RecordingSink()
    journal = SlowRoutingJournal()
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), Router([], ["s"]))},
        {"s": SinkTarget(sink, policy(), 4)},
        DispatcherConfig(poll_seconds=0.01),
    )
    d = delivery("t")
    await journal.append(d, "k")
    await dispatcher.start()
    await asyncio.wait_for(journal.routing.wait(), 5)
    stopping = asyncio.create_task(dispatcher.stop(5))
    await until(lambda: not dispatcher.running)
    journal.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert dispatcher.inflight == 0
    assert sink.calls == 0, "nothing new starts once shutdown has begun"
    [send] = await sends_to(journal, "s")
    assert (send.state, send.lease_owner, send.attempts) == (SendState.PENDING, None, 0)
    info = await journal.get(d.delivery_id)
    assert info is not None and info.state is DeliveryState.PENDING


def test_owner_is_gone_only_for_dead_local_processes() -> None:
    import os
    import socket

    host = socket.gethostname()
    assert not owner_is_gone(f"{host}/{os.getpid()}/x")
    assert not owner_is_gone(f"{host}/1/x")  # pid 1 runs
    assert not owner_is_gone("other-host/999999/x")
    assert not owner_is_gone("garbage")
    assert owner_is_gone(f"{host}/{2**22 + 12345}/x")


def test_exponential_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    p = RetryPolicy(5, base_seconds=2.0, cap_seconds=10.0, jitter=0.5, rng=random.Random(3))
    delays = [p.delay(n) for n in range(1, 5)]
    assert p.delay(5) is None
    for n, delay in enumerate(delays, start=1):
        full = min(10.0, 2.0 * 2 ** (n - 1))
        assert delay is not None and full * 0.5 <= delay <= full


def test_the_default_schedule_spans_about_a_day() -> None:
    p = RetryPolicy.from_config(RetryConfig(), random.Random(1))
    assert [p.full_delay(n) for n in range(1, 9)] == [5, 30, 120, 600, 1800, 3600, 3600, 3600]
    assert p.schedule == DEFAULT_SCHEDULE
    assert 23 * 3600 <= p.span() <= 26 * 3600
    assert p.delay(p.max_attempts) is None
    delay = p.delay(1)
    assert delay is not None and 5 * 0.8 <= delay <= 5


def test_retry_after_is_honoured_within_a_day() -> None:
    p = policy(max_attempts=5)
    assert p.delay(1, at_least=300) == 300
    assert p.delay(1, at_least=1) == 10
    assert p.delay(1, at_least=10**9) == 86_400
    assert p.delay(5, at_least=1) is None


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


def busy_dispatcher(
    sink: GatedSink, journal: MemoryJournal, looked: list[int], pause: float
) -> Dispatcher:
    """A dispatcher whose ingest is busy (10 requests at work, short of overloaded) for as
    long as ``looked`` has no 0."""

    def load() -> int:
        looked.append(1)
        return 0 if 0 in looked else 10

    return Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), Router([], ["gated"]))},
        {"gated": SinkTarget(sink, policy(), 2)},
        DispatcherConfig(
            concurrency=2,
            route_concurrency=2,
            poll_seconds=0.01,
            busy_requests=8,
            busy_pause_seconds=pause,
        ),
        ingest_load=load,
    )


async def test_busy_ingest_pauses_exports_until_it_calms_down() -> None:
    sink, journal, looked = GatedSink(), MemoryJournal(), list[int]()
    dispatcher = busy_dispatcher(sink, journal, looked, pause=60)
    for i in range(6):
        d = delivery(f"t{i}")
        await journal.append(d, d.delivery_id)
    sink.gate.set()
    await dispatcher.start()
    # It has looked at ingest's load a few times, and kept away from the journal meanwhile.
    await until(lambda: len(looked) >= 5)
    assert dispatcher.inflight == 0 and sink.done == 0
    assert len(await journal.claim("probe", 100, 0.001)) == 6, "all wait unrouted"
    # Ingest calms down: exports resume at once, at full concurrency.
    looked.append(0)
    await until(lambda: sink.done == 6)
    await dispatcher.stop(1)
    assert sink.most <= 2


async def test_a_sustained_busy_ingest_does_not_starve_exports() -> None:
    sink, journal, looked = GatedSink(), MemoryJournal(), list[int]()
    dispatcher = busy_dispatcher(sink, journal, looked, pause=0.02)
    for i in range(6):
        d = delivery(f"t{i}")
        await journal.append(d, d.delivery_id)
    sink.gate.set()
    await dispatcher.start()
    await until(lambda: sink.done == 6)  # ingest never calms down
    await dispatcher.stop(1)
    assert 0 not in looked


class LeakySink:
    async def deliver(self, event: Event) -> None:
        raise ConnectionError(
            "GET https://acct.blob.core.windows.net/c/f.pdf?sv=2022&sig=TopSecret%3D failed"
        )


async def test_errors_are_redacted_before_they_are_stored() -> None:
    dispatcher, journal = make([("leaky", LeakySink())], max_attempts=1)
    reason = await dead_letter_reason(dispatcher, journal, delivery("t"))
    assert "TopSecret" not in reason
    assert "sig=REDACTED" in reason
    assert "ConnectionError" in reason


async def test_a_send_routed_before_events_were_stored_is_normalized_once_by_its_id() -> None:
    """A journal migrated from version 3 has sends without a stored event."""
    sink = RecordingSink()
    sink.fail_next = 1
    clock = Clock()
    dispatcher, journal = make([("s", sink)], clock)
    source = CountingSource()
    dispatcher.routes = {"r": RouteTarget(source, Router([], ["s"]))}
    d = delivery("legacy")
    await journal.append(d, "k")
    await dispatcher.start()
    await until(lambda: sink.calls == 1)
    await dispatcher.stop(1)

    def forget_events(tx: Any) -> None:
        tx.execute("DELETE FROM events")

    await journal._write(forget_events)
    again, _ = make([("s", sink)], clock)
    again.journal = journal
    again.routes = dispatcher.routes
    clock.now += 11
    await again.start()
    await until(lambda: len(sink.events) == 1)
    await again.stop(1)
    assert sink.events[d.event_id(0)].task_id == "legacy"
    assert source.calls == 2, "routed once, then normalized once more for the legacy send"

    def stored(tx: Any) -> int:
        return int(tx.execute("SELECT count(*) FROM events").fetchone()[0])

    assert await journal._write(stored) == 1, "and stored, so that it happens once"


class BudgetWatch(MemoryJournal):
    """Records each claim of deliveries: the byte budget it was given, the bodies it took."""

    def __init__(self) -> None:
        super().__init__(Clock())
        self.claims: list[tuple[int | None, list[int]]] = []

    async def claim(self, *args: Any, **options: Any) -> list[Any]:
        claims = await super().claim(*args, **options)
        self.claims.append((options.get("max_bytes"), [len(c.delivery.body) for c in claims]))
        return claims


async def test_deliveries_are_routed_within_the_byte_budget() -> None:
    journal, sink = BudgetWatch(), RecordingSink()
    small = [delivery(f"t{i}") for i in range(10)]
    large = delivery("big", f'{{"taskId": "big", "pad": "{"x" * 400}"}}'.encode())
    for d in [*small, large]:
        await journal.append(d, d.delivery_id)
    budget = 2 * len(small[0].body) + 5
    dispatcher = Dispatcher(
        journal,
        {"r": RouteTarget(TextDocumentSource(), Router([], ["rec"]))},
        {"rec": SinkTarget(sink, policy(), 4)},
        DispatcherConfig(poll_seconds=0.01, route_bytes=budget),
    )
    await dispatcher.start()
    await until(lambda: len(sink.events) == 11)
    await dispatcher.stop(1)
    taken = [sizes for _, sizes in journal.claims if sizes]
    # Small bodies two at a time, the large one alone (not never), none past the budget.
    assert max(len(sizes) for sizes in taken) == 2
    assert [len(large.body)] in taken
    for given, sizes in journal.claims:
        assert given is not None and given <= budget
        assert len(sizes) <= 1 or sum(sizes) <= given
