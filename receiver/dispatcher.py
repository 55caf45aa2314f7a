"""The dispatcher: claims journaled deliveries, normalizes them and hands events to sinks.

Each delivery is claimed under a lease, normalized by its route's source and delivered to every
sink of the route; the outcome (and every attempt) is recorded in the journal.  Transient
failures are retried with backoff; a permanent failure, a normalizer that cannot read the
delivery, or running out of attempts dead-letters it with its raw bytes kept for a later retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from handlers.errors import PermanentSinkError
from handlers.redact import redact_text
from handlers.sink import Sink
from handlers.source import Source
from receiver.config import DispatcherConfig
from receiver.journal.base import Claim, Journal, Outcome
from receiver.retry import RetryPolicy

__all__ = ["Dispatcher", "RouteTarget", "owner_is_gone"]

log = logging.getLogger("hookdock.dispatcher")

# While ingest is busy, how often the dispatcher looks whether it has calmed down.
_BUSY_RECHECK_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What the dispatcher needs of a route: its source and its sinks, by name."""

    source: Source
    sinks: Sequence[tuple[str, Sink]]


def _new_owner() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{os.urandom(4).hex()}"


def owner_is_gone(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    try:
        host, pid_text, _ = owner.rsplit("/", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, Exception) or type(exc).__module__.startswith("handlers"):
        return redact_text(text)
    return redact_text(f"{type(exc).__name__}: {text}")


class Dispatcher:
    def __init__(
        self,
        journal: Journal,
        routes: Mapping[str, RouteTarget],
        config: DispatcherConfig,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        ingest_load: Callable[[], int] = lambda: 0,
    ) -> None:
        self.journal = journal
        self.routes = routes
        self.config = config
        self.policy = policy or RetryPolicy.from_config(config.retry)
        self.clock = clock
        self.ingest_load = ingest_load
        self.owner = _new_owner()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._busy_batch = float("-inf")
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], str] = {}

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done() and not self._stopping

    def wake(self) -> None:
        """Look for work now rather than at the next poll (called after each new delivery)."""
        self._wake.set()

    async def start(self) -> None:
        released = await self.journal.release_stale(owner_is_gone)
        if released:
            log.info("took back %d deliveries leased by a stopped process", released)
        self._loop_task = asyncio.create_task(self._run(), name="hookdock-dispatcher")

    def stop_claiming(self) -> None:
        self._stopping = True
        self._wake.set()
        self._slot_free.set()

    async def stop(self, grace_seconds: float) -> None:
        """Claim nothing more; let in-flight work finish within the grace, release the rest."""
        self.stop_claiming()
        if self._loop_task is not None:
            await self._loop_task
        if not self._inflight:
            return
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace_seconds)
        if pending:
            ids = [self._inflight[t] for t in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.journal.release(self.owner, ids)
            log.warning("shutdown: released %d unfinished deliveries", len(ids))

    async def _run(self) -> None:
        while not self._stopping:
            busy = self.config.busy_requests
            if busy and self.ingest_load() >= busy:
                # Exports share the event loop and the GIL with ingest, and even a trickle of
                # them cost ingest a quarter of its throughput (bench/): while senders wait,
                # they go first.  One batch per pause keeps exports moving all the same.
                pause = self.config.busy_pause_seconds - (time.monotonic() - self._busy_batch)
                if pause > 0:
                    await asyncio.sleep(min(pause, _BUSY_RECHECK_SECONDS))
                    continue
                self._busy_batch = time.monotonic()
            free = self.config.concurrency - len(self._inflight)
            if free <= 0:
                # Full: new deliveries (which set _wake) can wait for a slot to come free.
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            claims: list[Claim] = []
            try:
                claims = await self.journal.claim(self.owner, free, self.config.lease_seconds)
            except Exception as exc:
                # Expected while another process holds the journal: one line, not a trace.
                log.warning("cannot claim deliveries, trying again: %s", exc)
            for claim in claims:
                task = asyncio.create_task(self._attempt(claim))
                self._inflight[task] = claim.delivery.delivery_id
                task.add_done_callback(self._forget)
            if len(claims) == free:
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_free.set()

    async def _attempt(self, claim: Claim) -> None:
        outcome = await self._outcome(claim)
        delivery = claim.delivery
        try:
            await self.journal.finish(claim, self.owner, outcome)
        except Exception:
            # The lease runs out and another attempt follows: at-least-once, never lost.
            log.exception("cannot record the outcome of delivery %s", delivery.delivery_id)
            return
        if outcome.kind == "retry":
            log.warning(
                "delivery %s (route %s) attempt %d failed, retrying: %s",
                delivery.delivery_id,
                delivery.route,
                claim.attempt,
                outcome.error,
            )
        else:
            log.error(
                "delivery %s (route %s) dead-lettered: %s",
                delivery.delivery_id,
                delivery.route,
                outcome.error,
            )

    async def _outcome(self, claim: Claim) -> Outcome:
        delivery = claim.delivery
        target = self.routes.get(delivery.route)
        if target is None:
            return Outcome.dead(f"route {delivery.route!r} is no longer configured")
        try:
            events = target.source.normalize(delivery)
        except Exception as exc:
            return Outcome.dead(f"cannot normalize: {_describe(exc)}")
        for event in events:
            for name, sink in target.sinks:
                try:
                    await sink.deliver(event)
                except PermanentSinkError as exc:
                    return Outcome.dead(f"sink {name}: {_describe(exc)}")
                except Exception as exc:
                    reason = f"sink {name}: {_describe(exc)}"
                    delay = self.policy.delay(claim.attempt)
                    if delay is None:
                        return Outcome.dead(f"gave up after {claim.attempt} attempts: {reason}")
                    return Outcome.retry(reason, self.clock() + delay)
                log.debug(
                    "delivered event %s (%s %s, task %s) to sink %s",
                    event.event_id,
                    event.vendor,
                    event.kind,
                    event.task_id,
                    name,
                )
        return Outcome.delivered()
