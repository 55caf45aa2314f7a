"""The poller runner: leases, backoff, state, and the one intake, with fake pollers.

Runs on the in-memory journal (the same SQL as the real one); ``run_once`` is called directly,
so nothing waits for a schedule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from handlers.poller import (
    PollContext,
    PolledDelivery,
    PolledEvent,
    PolledEventSource,
    PollError,
    PollRejected,
    PollResult,
    RateLimited,
    VendorUnavailable,
    Watched,
)
from handlers.sources.smartdocumentor import TextDocumentSource, task_subject
from receiver.config import PollerConfig
from receiver.journal import SqlJournal
from receiver.journal.base import ProcessInfo
from receiver.journal.memory import MemoryJournal
from receiver.pollers import PollerRunner, lease_name

pytestmark = pytest.mark.anyio


class Settings(BaseModel):
    pass


class Scripted:
    """Answers each poll with the next item of ``script``: a result, or an error to raise."""

    config_model: ClassVar[type[BaseModel]] = Settings

    def __init__(self, script: list[PollResult | PollError]) -> None:
        self.script = script
        self.states: list[Mapping[str, Any] | None] = []
        self.seen: list[set[str]] = []

    async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
        self.states.append(state)
        self.seen.append(await context.seen(["smartdocumentor:task:1", "nothing"]))
        step = self.script.pop(0)
        if isinstance(step, PollError):
            raise step
        return step

    async def aclose(self) -> None:
        pass


class Woken:
    def __init__(self) -> None:
        self.times = 0

    def wake(self) -> None:
        self.times += 1


@pytest.fixture
async def journal() -> Any:
    j = MemoryJournal()
    yield j
    await j.close()


def runner(
    journal: SqlJournal, poller: Scripted, owner: str = "a/1/x", **config: Any
) -> PollerRunner:
    options: dict[str, Any] = {
        "name": "p",
        "type": "test",
        "interval_seconds": 100,
        "jitter": 0,
        "max_backoff_seconds": 1000,
        "sinks": ["s"],
        **config,
    }
    return PollerRunner(
        journal,
        owner,
        {"p": PollerConfig.model_validate(options)},
        {"p": poller},
        {"texts": ("smartdocumentor.text_document", TextDocumentSource())},
        Woken(),
    )


def missing(task: str) -> PolledEvent:
    return PolledEvent(
        kind="task.missing",
        vendor="smartdocumentor",
        dedupe_key=f"p:task.missing:{task}",
        task_id=task,
        subject=f"{task_subject(task)}:missing",
    )


TEXT = b'{"taskId": 1, "workspaceId": 7}'


async def test_findings_enter_the_journal_once_and_the_state_is_saved(journal: SqlJournal) -> None:
    found = (PolledDelivery(route="texts", body=TEXT, subject=None), missing("2"))
    poller = Scripted(
        [PollResult(found=found, state={"c": 1}, calls=4), PollResult(found=found, state={"c": 2})]
    )
    run = runner(journal, poller)
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    first = await run.run_once("p")
    second = await run.run_once("p")
    assert (first.ok, first.new, first.duplicates, first.calls) == (True, 2, 0, 4)
    assert (second.new, second.duplicates) == (0, 2)
    assert poller.states == [None, {"c": 1}]
    # The recovered export's subject came from the route's source, as a webhook's would.
    assert poller.seen[1] == {"smartdocumentor:task:1"}
    assert await journal.known_subjects(["smartdocumentor:task:2:missing"]) == {
        "smartdocumentor:task:2:missing"
    }
    state = await journal.poller_state("p")
    assert state is not None and (state.state, state.found, state.calls) == ({"c": 2}, 2, 4)
    assert isinstance(run.dispatcher, Woken) and run.dispatcher.times == 2
    # What the webhook route's source would say of the same body: the same dedupe key.
    claims = await journal.claim("w", 10, 60)
    assert sorted(c.delivery.route for c in claims) == ["p", "texts"]
    recovered = next(c.delivery for c in claims if c.delivery.route == "texts")
    assert recovered.headers == {"hookdock-recovered-by": "p"}
    own = next(c.delivery for c in claims if c.delivery.route == "p")
    [event] = PolledEventSource().normalize(own)
    assert (event.kind, event.task_id, event.route) == ("task.missing", "2", "p")


async def test_failures_back_off_and_keep_the_state(journal: SqlJournal) -> None:
    poller = Scripted(
        [
            PollResult(state={"c": 1}),
            VendorUnavailable("HTTP 503"),
            VendorUnavailable("timed out"),
            RateLimited("HTTP 429", retry_after=900),
            PollRejected("HTTP 401"),
            PollResult(state={"c": 2}),
        ]
    )
    run = runner(journal, poller, max_backoff_seconds=500)
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    waits = [(await run.run_once("p")).next_in_seconds for _ in range(6)]
    # interval, then doubling from it, Retry-After as a floor, capped by max_backoff_seconds.
    assert waits == [100, 100, 200, 900, 500, 100]
    assert poller.states == [None, {"c": 1}, {"c": 1}, {"c": 1}, {"c": 1}, {"c": 1}]
    state = await journal.poller_state("p")
    assert state is not None and (state.failures, state.last_error) == (0, None)


async def test_a_failure_is_recorded_for_the_operator(journal: SqlJournal) -> None:
    run = runner(journal, Scripted([VendorUnavailable("HTTP 503 at /x?sig=SECRETSIG")]))
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    report = await run.run_once("p")
    state = await journal.poller_state("p")
    assert not report.ok and state is not None
    assert state.failures == 1 and state.last_error is not None
    assert "SECRETSIG" not in state.last_error and "HTTP 503" in state.last_error


async def test_a_bug_in_a_poller_is_a_failure_not_a_crash(journal: SqlJournal) -> None:
    class Broken(Scripted):
        async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
            raise KeyError("taskId")

    run = runner(journal, Broken([]))
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    report = await run.run_once("p")
    assert not report.ok and report.error == "KeyError: 'taskId'"


async def test_an_unknown_route_fails_the_poll_and_enters_nothing(journal: SqlJournal) -> None:
    found = (missing("1"), PolledDelivery(route="nope", body=TEXT))
    run = runner(journal, Scripted([PollResult(found=found, state={"c": 1})]))
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    report = await run.run_once("p")
    assert not report.ok and report.error is not None and "nope" in report.error
    state = await journal.poller_state("p")
    assert state is not None and state.state is None


async def test_a_poll_that_lost_its_lease_does_not_save(journal: SqlJournal) -> None:
    run = runner(journal, Scripted([PollResult(state={"c": 1})]))
    report = await run.run_once("p")  # this process never held the lease
    assert report.ok
    assert await journal.poller_state("p") is None


async def test_two_processes_one_poller(journal: SqlJournal) -> None:
    """Only the lease holder polls: the loop of the other finds it held and waits."""
    polled: list[str] = []

    class Counting(Scripted):
        def __init__(self, who: str) -> None:
            super().__init__([])
            self.who = who

        async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
            polled.append(self.who)
            return PollResult(state={"n": len(polled)})

    now = datetime.now(UTC)
    for owner in ("a/1/x", "b/2/y"):  # both alive: neither's lease is up for grabs
        await journal.heartbeat(ProcessInfo(owner, "host", 1, "serve", now, now))
    a = runner(journal, Counting("a"), owner="a/1/x", interval_seconds=0.01)
    b = runner(journal, Counting("b"), owner="b/2/y", interval_seconds=0.01)
    a.tick_seconds = b.tick_seconds = 0.01
    a.start()
    try:
        for _ in range(200):
            if polled:
                break
            await _tick()
        b.start()
        for _ in range(30):
            await _tick()
    finally:
        await a.stop()
        await b.stop()
    assert polled and set(polled) == {"a"}


async def _tick() -> None:
    await asyncio.sleep(0.01)


class _Seen:
    poller = "x"

    async def seen(self, subjects: Collection[str]) -> set[str]:
        return set()

    async def watches(self) -> list[Watched]:
        return []


def test_the_context_and_pollers_match_their_protocols() -> None:
    from handlers.poller import Poller

    assert isinstance(_Seen(), PollContext)
    assert isinstance(Scripted([]), Poller)


async def test_watches_are_handed_to_polls_and_closed_only_after_a_saved_poll(
    journal: SqlJournal,
) -> None:
    class Watching(Scripted):
        async def poll(self, state: Mapping[str, Any] | None, context: PollContext) -> PollResult:
            self.keys = [w.key for w in await context.watches()]
            return await super().poll(state, context)

    await journal.add_watch("p", "b1", {"n": 1})
    await journal.add_watch("p", "b2", {})
    poller = Watching(
        [
            VendorUnavailable("HTTP 503"),
            PollResult(found=(missing("9"),), closed=("b1",)),
            PollResult(closed=("b2",)),
        ]
    )
    run = runner(journal, poller)
    assert await journal.acquire_lease(lease_name("p"), "a/1/x", 60)
    assert not (await run.run_once("p")).ok
    assert [w.key for w in await journal.open_watches("p")] == ["b1", "b2"]
    assert (await run.run_once("p")).ok and poller.keys == ["b1", "b2"]
    assert [w.key for w in await journal.open_watches("p")] == ["b2"]
    # A process that lost the lease saves nothing and closes nothing.
    await journal.release_lease(lease_name("p"), "a/1/x")
    assert await journal.acquire_lease(lease_name("p"), "b/2/y", 60)
    await run.run_once("p")
    assert poller.keys == ["b2"] and [w.key for w in await journal.open_watches("p")] == ["b2"]
