"""Sends of events with files, on the in-memory journal and an injected clock.

The fetcher here is scripted (its ``transfer`` is replaced): what is tested is the dispatcher's
part, which files it fetches, what it records, how long it retries while a link is valid.
The real downloads are tested end to end against a real file server (tests/e2e).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.errors import FileUnavailable, RetryableSinkError
from handlers.event import Event, FileRef, RawDelivery
from handlers.files import FileInfo, IncomingFile
from handlers.sources.smartdocumentor import TranscriptFileSource
from handlers.testing import RecordingSink
from receiver.config import DispatcherConfig, FilesConfig, RetryConfig
from receiver.dispatcher import Dispatcher, RouteTarget, SinkTarget
from receiver.fetch import Fetcher, FetchRetryable
from receiver.ids import new_id
from receiver.journal.base import SendState
from receiver.journal.memory import MemoryJournal
from receiver.retry import RetryPolicy
from receiver.routing import Router
from tests.unit.test_dispatcher import Clock, until

pytestmark = pytest.mark.anyio

DATA = b"%PDF-1.7 " + bytes(range(256)) * 40


class FileRecordingSink(RecordingSink):
    """A RecordingSink that also takes files, keeping their bytes by (event id, role)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[tuple[str, str], bytes] = {}

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        data = b"".join([chunk async for chunk in file])
        self.files[(event.event_id, file.role)] = data


Step = Callable[[FileRef], Awaitable[bytes]]


class ScriptedFetcher(Fetcher):
    """Answers each transfer with the next scripted step (the file's bytes, or an error)."""

    def __init__(self, clock: Clock, *steps: Step | BaseException) -> None:
        super().__init__("r", FilesConfig(fetch=("exported", "original")), None)
        self.steps = list(steps)
        self.fetched: list[tuple[str, float]] = []
        self.clock = clock

    async def transfer(
        self, ref: FileRef, consume: Callable[[IncomingFile], Awaitable[None]]
    ) -> FileInfo:
        self.fetched.append((ref.role, self.clock()))
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, BaseException):
            raise step
        data = DATA if step is None else await step(ref)
        incoming = IncomingFile.from_bytes(ref.role, data, filename="scan.pdf")
        await consume(incoming)
        return incoming.info()


def body(expires: datetime, *, original: bool = False) -> bytes:
    se = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc: dict[str, Any] = {
        "taskId": "t-1",
        "workspaceId": 7,
        "exportedFileUrl": f"https://acct.blob.core.windows.net/x/scan.pdf?se={se}&sig=SeCrEt",
    }
    if original:
        doc["originalFileUrl"] = f"https://acct.blob.core.windows.net/o/o.pdf?se={se}&sig=SeCrEt2"
    return json.dumps(doc).encode()


def make(
    clock: Clock,
    fetcher: Fetcher | None,
    sink: RecordingSink,
    *,
    max_attempts: int = 5,
    base: float = 60.0,
) -> tuple[Dispatcher, MemoryJournal]:
    journal = MemoryJournal(clock)
    retry = RetryConfig(max_attempts=max_attempts, base_seconds=base, cap_seconds=base, jitter=0)
    targets = {"out": SinkTarget(sink, RetryPolicy.from_config(retry, random.Random(1)), 4)}
    route = RouteTarget(TranscriptFileSource(), Router([], ["out"]), fetcher)
    config = DispatcherConfig(concurrency=4, poll_seconds=0.01)
    return Dispatcher(journal, {"r": route}, targets, config, clock=clock), journal


def delivery(data: bytes, clock: Clock) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.transcript_file",
        received_at=datetime.fromtimestamp(clock(), UTC),
        content_type="application/json",
        body=data,
    )


async def run_until_send(
    dispatcher: Dispatcher, journal: MemoryJournal, d: RawDelivery, check: Callable[[Any], bool]
) -> Any:
    await journal.append(d, d.delivery_id)
    await dispatcher.start()
    found: list[Any] = []

    async def reached() -> bool:
        sends = await journal.sends(d.delivery_id)
        # Attempts are counted when a send is claimed: wait for the attempt to be recorded.
        if sends and sends[0].lease_owner is None and check(sends[0]):
            found[:] = sends
            return True
        return False

    try:
        await until(reached)
    finally:
        await dispatcher.stop(1)
    return found[0]


def moment(clock: Clock, seconds: float) -> datetime:
    return datetime.fromtimestamp(clock() + seconds, UTC)


async def test_the_file_is_stored_then_the_event_records_it() -> None:
    clock = Clock()
    sink = FileRecordingSink()
    dispatcher, journal = make(clock, ScriptedFetcher(clock), sink)
    d = delivery(body(moment(clock, 3600)), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DELIVERED)
    assert sink.files == {(f"{d.delivery_id}-0", "exported"): DATA}
    event = sink.events[f"{d.delivery_id}-0"]
    [ref] = event.files
    assert (ref.size, ref.filename) == (len(DATA), "scan.pdf")
    assert "SeCrEt" not in event.to_json().decode()
    assert send.files["exported"].size == len(DATA)


async def test_only_the_roles_the_route_names_are_fetched() -> None:
    clock = Clock()
    sink = FileRecordingSink()
    fetcher = ScriptedFetcher(clock)
    fetcher.roles = frozenset({"exported"})
    dispatcher, journal = make(clock, fetcher, sink)
    d = delivery(body(moment(clock, 3600), original=True), clock)
    await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DELIVERED)
    assert [role for role, _ in fetcher.fetched] == ["exported"]
    exported, original = sink.events[f"{d.delivery_id}-0"].files
    assert exported.sha256 is not None and original.sha256 is None
    assert "SeCrEt2" in original.url, "a file not fetched keeps its link for the reader"


async def test_a_sink_that_takes_no_files_gets_the_event_with_its_links() -> None:
    clock = Clock()
    sink = RecordingSink()
    fetcher = ScriptedFetcher(clock)
    dispatcher, journal = make(clock, fetcher, sink)
    d = delivery(body(moment(clock, 3600)), clock)
    await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DELIVERED)
    assert fetcher.fetched == []
    assert "SeCrEt" in sink.events[f"{d.delivery_id}-0"].files[0].url


async def test_a_stored_file_is_not_fetched_again_when_the_event_fails() -> None:
    clock = Clock()
    sink = FileRecordingSink()
    sink.fail_next = 1  # the event's delivery fails once, after the file was stored
    fetcher = ScriptedFetcher(clock)
    dispatcher, journal = make(clock, fetcher, sink, base=1.0)
    d = delivery(body(moment(clock, 3600)), clock)
    await journal.append(d, d.delivery_id)
    await dispatcher.start()

    async def retrying() -> bool:
        sends = await journal.sends(d.delivery_id)
        return bool(sends) and sends[0].attempts == 1 and sends[0].state is SendState.PENDING

    await until(retrying)
    clock.now += 2
    dispatcher.wake()

    async def delivered() -> bool:
        return (await journal.sends(d.delivery_id))[0].state is SendState.DELIVERED

    await until(delivered)
    await dispatcher.stop(1)
    assert len(fetcher.fetched) == 1, "the retry used the file recorded in the journal"
    assert sink.events[f"{d.delivery_id}-0"].files[0].size == len(DATA)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            FileUnavailable("the link to the exported file expired", code="link_expired"),
            "link_expired",
        ),
        (FileUnavailable("the exported file was deleted", code="file_deleted"), "file_deleted"),
        (FileUnavailable("too large", code="file_too_large"), "file_too_large"),
    ],
)
async def test_a_file_that_cannot_be_had_is_dead_at_once_with_its_code(
    error: FileUnavailable, code: str
) -> None:
    clock = Clock()
    sink = FileRecordingSink()
    dispatcher, journal = make(clock, ScriptedFetcher(clock, error), sink)
    d = delivery(body(moment(clock, 3600)), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DEAD)
    assert send.code == code
    assert send.attempts == 1
    assert sink.events == {} and sink.files == {}
    assert await journal.dead_codes() == {code: 1}


def retryable(clock: Clock, expires: datetime) -> FetchRetryable:
    return FetchRetryable("cannot fetch the exported file: HTTP 503", expires_at=expires)


async def test_a_retry_within_the_links_life_keeps_its_schedule() -> None:
    clock = Clock()
    expires = moment(clock, 3600)
    dispatcher, journal = make(
        clock, ScriptedFetcher(clock, retryable(clock, expires)), FileRecordingSink()
    )
    d = delivery(body(expires), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.attempts == 1)
    assert send.state is SendState.PENDING
    assert send.next_attempt_at == datetime.fromtimestamp(clock() + 60, UTC)
    assert "HTTP 503" in send.last_error


async def test_a_retry_due_after_the_link_expires_becomes_a_last_try_before_it() -> None:
    clock = Clock()
    expires = moment(clock, 30)  # the schedule says 60 s
    dispatcher, journal = make(
        clock, ScriptedFetcher(clock, retryable(clock, expires)), FileRecordingSink()
    )
    d = delivery(body(expires), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.attempts == 1)
    assert send.state is SendState.PENDING
    assert send.next_attempt_at == expires - timedelta(seconds=5)
    assert "one last try before the file's link expires" in send.last_error


async def test_without_time_for_another_try_the_send_is_dead_as_link_expired() -> None:
    clock = Clock()
    expires = moment(clock, 3)
    dispatcher, journal = make(
        clock, ScriptedFetcher(clock, retryable(clock, expires)), FileRecordingSink()
    )
    d = delivery(body(expires), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DEAD)
    assert send.code == "link_expired"
    assert "no time left for another try" in send.last_error
    assert "HTTP 503" in send.last_error


async def test_a_failing_sink_is_bounded_by_the_link_too() -> None:
    clock = Clock()
    expires = moment(clock, 3)
    fetcher = ScriptedFetcher(clock, RetryableSinkError("s3: SlowDown"))
    dispatcher, journal = make(clock, fetcher, FileRecordingSink())
    d = delivery(body(expires), clock)
    send = await run_until_send(dispatcher, journal, d, lambda s: s.state is SendState.DEAD)
    assert send.code == "link_expired"
    assert "SlowDown" in send.last_error


async def test_leases_of_long_transfers_are_renewed() -> None:
    clock = Clock()
    renewed: list[list[int]] = []

    class SpyJournal(MemoryJournal):
        async def renew_sends(self, owner: str, send_ids: Sequence[int], lease: float) -> int:
            renewed.append(list(send_ids))
            return await super().renew_sends(owner, send_ids, lease)

    journal = SpyJournal(clock)
    release = asyncio.Event()

    async def slow(_: FileRef) -> bytes:
        await release.wait()
        return DATA

    sink = FileRecordingSink()
    retry = RetryConfig(max_attempts=3, base_seconds=1, jitter=0)
    targets = {"out": SinkTarget(sink, RetryPolicy.from_config(retry), 4)}
    route = RouteTarget(TranscriptFileSource(), Router([], ["out"]), ScriptedFetcher(clock, slow))
    config = DispatcherConfig(concurrency=4, poll_seconds=0.01, lease_seconds=0.03)
    dispatcher = Dispatcher(journal, {"r": route}, targets, config, clock=clock)
    d = delivery(body(moment(clock, 3600)), clock)
    await journal.append(d, d.delivery_id)
    await dispatcher.start()
    try:
        await until(lambda: len(renewed) >= 2)
    finally:
        release.set()
    await until(lambda: bool(sink.events))
    await dispatcher.stop(1)
    assert all(len(ids) == 1 for ids in renewed)


async def test_file_transfers_are_bounded_across_sinks() -> None:
    clock = Clock()
    running = 0
    most = 0
    gate = asyncio.Event()

    async def counted(_: FileRef) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return DATA

    journal = MemoryJournal(clock)
    retry = RetryConfig(max_attempts=3, base_seconds=1, jitter=0)
    sinks = {f"out{n}": FileRecordingSink() for n in range(3)}
    targets = {n: SinkTarget(s, RetryPolicy.from_config(retry), 8) for n, s in sinks.items()}
    fetcher = ScriptedFetcher(clock, *([counted] * 12))
    route = RouteTarget(TranscriptFileSource(), Router([], list(sinks)), fetcher)
    config = DispatcherConfig(concurrency=8, poll_seconds=0.01, file_transfers=2)
    dispatcher = Dispatcher(journal, {"r": route}, targets, config, clock=clock)
    for _ in range(4):
        d = delivery(body(moment(clock, 3600)), clock)
        await journal.append(d, d.delivery_id)
    await dispatcher.start()
    try:
        await until(lambda: running == 2)
        gate.set()
        await until(lambda: sum(len(s.events) for s in sinks.values()) == 12)
    finally:
        gate.set()
        await dispatcher.stop(1)
    assert most == 2
