"""Runs the configured pollers: schedule, one process per poller, backoff, state, intake.

Each poller has a named lease in the journal, ``poller:<name>``: every process tries to take
it each tick, and only the holder polls, so several replicas poll once.  The holder reads the
poller's row (saved state, next run) and polls when it is due; while a poll runs, the lease is
renewed, so a long poll is not taken over.  What the poll found enters the journal through
``intake``, as a webhook would, and only then is the new state saved (in a statement that
checks the lease): a crash between the two polls the same ground again, and the dedupe keys
make that nothing new.  A failed poll keeps the old state and waits longer each time
(``interval * 2**failures`` up to ``max_backoff_seconds``; ``Retry-After`` is a floor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from handlers.event import RawDelivery
from handlers.poller import (
    POLLED_CONTENT_TYPE,
    RECOVERED_HEADER,
    PolledDelivery,
    PolledEvent,
    PolledEventSource,
    Poller,
    PollError,
    PollRejected,
    RateLimited,
    Watched,
    polled_body,
)
from handlers.redact import redact_text
from handlers.source import Source
from receiver.config import PollerConfig
from receiver.ids import new_id
from receiver.intake import Wakeable, intake
from receiver.journal import AppendResult, SqlJournal
from receiver.journal.pollers import PollOutcome

__all__ = [
    "POLLED_SOURCE",
    "PollReport",
    "PollerRunner",
    "enter_event",
    "lease_name",
    "start_watch",
]

log = logging.getLogger("hookdock.pollers")

POLLED_SOURCE = "hookdock.polled"
"""The ``source`` recorded with a poller's own deliveries."""

_TICK_SECONDS = 5.0
"""How often a process looks at the leases and due times (``hookdock poll`` waits this long
at most for a running service to pick a request up)."""


def lease_name(poller: str) -> str:
    return f"poller:{poller}"


@dataclass(frozen=True, slots=True)
class PollReport:
    ok: bool
    new: int
    """Deliveries and events that were new to the journal."""
    duplicates: int
    calls: int
    error: str | None
    next_in_seconds: float


@dataclass
class _Context:
    poller: str
    journal: SqlJournal

    async def seen(self, subjects: Collection[str]) -> set[str]:
        return await self.journal.known_subjects(subjects)

    async def watches(self) -> list[Watched]:
        return [
            Watched(key=w.key, detail=w.detail, added_at=w.added_at)
            for w in await self.journal.open_watches(self.poller)
        ]


@dataclass
class PollerRunner:
    journal: SqlJournal
    owner: str
    configs: Mapping[str, PollerConfig]
    pollers: Mapping[str, Poller]
    sources: Mapping[str, tuple[str, Source]]
    """Webhook routes by name: (source name, source), to admit what a poll recovers."""
    dispatcher: Wakeable | None = None
    tick_seconds: float = _TICK_SECONDS
    polls: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _held: set[str] = field(default_factory=set, repr=False)

    @property
    def lease_seconds(self) -> float:
        return max(30.0, 3 * self.tick_seconds)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(name), name=f"hookdock-poller-{name}")
            for name in self.configs
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for name in sorted(self._held):
            try:
                await self.journal.release_lease(lease_name(name), self.owner)
            except Exception as exc:
                log.warning("poller %s: could not let go of its lease: %s", name, exc)
        self._held = set()
        for name, poller in self.pollers.items():
            try:
                await poller.aclose()
            except Exception:
                log.exception("poller %s did not close cleanly", name)

    async def _loop(self, name: str) -> None:
        while True:
            try:
                held = await self.journal.acquire_lease(
                    lease_name(name), self.owner, self.lease_seconds
                )
            except Exception as exc:
                log.warning("poller %s: cannot take its lease, trying again: %s", name, exc)
                held = False
            if held and name not in self._held:
                log.info("poller %s: this process polls it now", name)
            self._held = self._held | {name} if held else self._held - {name}
            if held:
                try:
                    row = await self.journal.poller_state(name)
                    if row is None or row.due_in <= 0:
                        await self.run_once(name)
                except Exception:
                    log.exception("poller %s: its run failed; trying again", name)
            await asyncio.sleep(self.tick_seconds)

    async def run_once(self, name: str) -> PollReport:
        """Poll ``name`` now (this process must hold its lease) and save the outcome."""
        config, poller = self.configs[name], self.pollers[name]
        self._held.add(name)  # so that stop() lets go of it
        row = await self.journal.poller_state(name)
        failures = row.failures if row is not None else 0
        renew = asyncio.create_task(self._renew(name), name=f"hookdock-poller-renew-{name}")
        try:
            report = await self._poll(name, config, poller, row.state if row else None, failures)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
        self.polls[name] = self.polls.get(name, 0) + 1
        return report

    async def _renew(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.journal.acquire_lease(lease_name(name), self.owner, self.lease_seconds)
            except Exception as exc:
                log.warning("poller %s: could not renew its lease: %s", name, exc)

    async def _poll(
        self,
        name: str,
        config: PollerConfig,
        poller: Poller,
        state: Mapping[str, object] | None,
        failures: int,
    ) -> PollReport:
        retry_after: float | None = None
        try:
            result = await poller.poll(state, _Context(name, self.journal))
            new, duplicates = await self._enter(name, result.found)
        except PollError as exc:
            if isinstance(exc, RateLimited):
                retry_after = exc.retry_after
            level = logging.ERROR if isinstance(exc, PollRejected) else logging.WARNING
            log.log(level, "poller %s: %s", name, redact_text(exc.message))
            return await self._failed(name, config, redact_text(exc.message), failures, retry_after)
        except Exception as exc:
            # A bug in the poller, or the journal refusing the intake: the state stays, and
            # the same ground is polled again (deduped) once the backoff has passed.
            log.exception("poller %s failed", name)
            message = redact_text(f"{type(exc).__name__}: {exc}")
            return await self._failed(name, config, message, failures, None)
        next_in = _jittered(config.interval_seconds, config.jitter)
        outcome = PollOutcome(True, result.state, new, result.calls, None, next_in)
        if not await self.journal.save_poll(name, self.owner, outcome):
            log.warning("poller %s: lost its lease during the poll; state not saved", name)
        elif result.closed:
            # Only now: what the poll found about them is in the journal, its state saved.
            await self.journal.close_watches(name, result.closed)
        if new:
            log.info("poller %s: %d new, %d already known", name, new, duplicates)
        return PollReport(True, new, duplicates, result.calls, None, next_in)

    async def _failed(
        self,
        name: str,
        config: PollerConfig,
        message: str,
        failures: int,
        retry_after: float | None,
    ) -> PollReport:
        wait = min(config.max_backoff_seconds, config.interval_seconds * 2**failures)
        wait = _jittered(wait, config.jitter)
        if retry_after is not None:
            wait = max(wait, retry_after)
        outcome = PollOutcome(False, None, 0, 0, message, wait)
        await self.journal.save_poll(name, self.owner, outcome)
        return PollReport(False, 0, 0, 0, message, wait)

    async def _enter(
        self, name: str, found: tuple[PolledDelivery | PolledEvent, ...]
    ) -> tuple[int, int]:
        """Put everything found into the journal, in order; (new, duplicates)."""
        new = duplicates = 0
        now = datetime.now(UTC)
        for item in found:
            if isinstance(item, PolledDelivery):
                route = self.sources.get(item.route)
                if route is None:
                    raise PollRejected(f"no webhook route named {item.route!r} to recover into")
                source_name, source = route
                delivery = RawDelivery(
                    delivery_id=new_id(),
                    route=item.route,
                    source=source_name,
                    received_at=now,
                    content_type=item.content_type,
                    headers={RECOVERED_HEADER: name},
                    body=item.body,
                )
                result = await intake(self.journal, source, delivery, self.dispatcher)
            else:
                result = await enter_event(self.journal, name, item, self.dispatcher, now)
            if result.duplicate:
                duplicates += 1
            else:
                new += 1
        return new, duplicates


async def enter_event(
    journal: SqlJournal,
    poller: str,
    event: PolledEvent,
    dispatcher: Wakeable | None = None,
    now: datetime | None = None,
) -> AppendResult:
    """Journal one of ``poller``'s own events, as a poll does: deduped by its key, routed by the
    poller's sinks and rules.  Commands that act for a poller (a submit) record theirs here."""
    delivery = RawDelivery(
        delivery_id=new_id(),
        route=poller,
        source=POLLED_SOURCE,
        received_at=now or datetime.now(UTC),
        content_type=POLLED_CONTENT_TYPE,
        headers={},
        body=polled_body(event),
    )
    return await intake(journal, PolledEventSource(), delivery, dispatcher, event.subject)


async def start_watch(
    journal: SqlJournal,
    poller: str,
    key: str,
    detail: Mapping[str, object],
    event: PolledEvent,
    dispatcher: Wakeable | None = None,
) -> bool:
    """Have ``poller`` follow ``key`` and journal ``event`` (what was started there), then make
    the poller due; False when it followed ``key`` already.  What a submit command does once the
    vendor accepted the work, and what the operator API would call."""
    added = await journal.add_watch(poller, key, detail)
    await enter_event(journal, poller, event, dispatcher)
    await journal.run_poller_now(poller)
    return added


def _jittered(seconds: float, jitter: float) -> float:
    return seconds * (1 - jitter + 2 * jitter * random.random())
