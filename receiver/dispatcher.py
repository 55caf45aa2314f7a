"""The dispatcher: routes journaled deliveries and delivers each (event, sink) pair on its own.

Two kinds of work, both leased from the journal:

* **routing** a delivery: its route's source normalizes it into events, the route's rules pick
  each event's sinks, and the journal records one *send* per (event, sink) pair, atomically.
  A delivery that cannot be normalized is dead-lettered with its raw bytes kept.
* **sending**: each send is delivered to its sink and its outcome recorded on its own, so a
  failing sink retries on its own schedule while the others go on.  Each sink has its own
  slots (``concurrency``): a slow or failing destination cannot take a healthy one's.  Sends
  created by routing start at once when their sink has a free slot; the rest, and retries,
  are claimed per sink as slots free up.

A retryable error waits by the sink's retry policy (never less than a ``Retry-After``) and is
dead-lettered after its last attempt; a permanent one at once; ``SinkGone`` (HTTP 410) stops
the sink, durably, and its sends wait until an operator resumes it.

**Files.**  When the route fetches files (``[routes.files]``) and the sink takes them
(``FileSink``), a send first streams each file its event refers to from the vendor into the
sink, records it in the journal (a retry does not fetch it again), and only then delivers the
event, which carries each file's size, SHA-256, type and name.  A link that expires (the SAS
``se``) bounds the retries: a retry that would come after it is pulled in to one last try
before it, or, without time for one, dead-lettered as ``link_expired``.  Leases of sends in
flight are renewed while they run, so a long transfer keeps its send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from handlers.errors import HandlerError, PermanentSinkError, RetryableSinkError, SinkGone
from handlers.event import Event, FileRef
from handlers.files import FileInfo, format_bytes
from handlers.redact import redact_text
from handlers.sink import FileSink, Sink
from handlers.source import Source
from receiver.config import DispatcherConfig
from receiver.failures import never_succeeds
from receiver.fetch import Fetcher
from receiver.ingest_first import OVERLOAD, IngestFirst
from receiver.journal.base import Claim, Journal, Outcome, OwnerCheck, SendClaim
from receiver.journal.errors import JournalError
from receiver.logs import log_activity
from receiver.processes import new_owner, owner_is_gone
from receiver.retry import RetryPolicy
from receiver.routing import Router

if TYPE_CHECKING:
    from receiver.metrics import Metrics
    from receiver.ops_webhooks import OpsWebhooks

__all__ = ["Dispatcher", "RouteTarget", "SinkTarget", "owner_is_gone"]

log = logging.getLogger("hookdock.dispatcher")

_C = TypeVar("_C", list[Claim], SendClaim)

# While ingest is busy, how often the dispatcher looks whether it has calmed down.
_BUSY_RECHECK_SECONDS = 0.05
# A delivery whose routing never finishes (its worker dies every time) is given up after this.
ROUTE_MAX_ATTEMPTS = 5
# A retry due after a file's link expires is pulled in to this long before the expiry...
LAST_CHANCE_SECONDS = 5.0
# ...when that is at least this far away; else the send is dead-lettered as link_expired.
MIN_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What the dispatcher needs of a route: its source, its rules, and its file fetcher."""

    source: Source
    router: Router
    fetcher: Fetcher | None = None
    """None when the route fetches no files."""


@dataclass(frozen=True, slots=True)
class SinkTarget:
    """A configured sink with its own retry policy and number of slots."""

    sink: Sink
    policy: RetryPolicy
    concurrency: int
    takes_files: bool = field(init=False)
    """Whether the sink stores files (``FileSink``): asked once, not per send, since an
    ``isinstance`` against a runtime-checkable Protocol walks its members every time."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "takes_files", isinstance(self.sink, FileSink))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, Exception) or isinstance(exc, HandlerError):
        return redact_text(text)
    return redact_text(f"{type(exc).__name__}: {text}")


class Dispatcher:
    def __init__(
        self,
        journal: Journal,
        routes: Mapping[str, RouteTarget],
        sinks: Mapping[str, SinkTarget],
        config: DispatcherConfig,
        *,
        clock: Callable[[], float] = time.time,
        ingest_load: Callable[[], int] = lambda: 0,
        owner: str | None = None,
        stale_seconds: float | None = None,
        is_dead_owner: OwnerCheck = owner_is_gone,
        metrics: Metrics | None = None,
        alerts: OpsWebhooks | None = None,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self.alerts = alerts
        self.routes = routes
        self.sinks = sinks
        self.config = config
        self.clock = clock
        self.ingest_load = ingest_load
        self.owner = owner or new_owner()
        self.stale_seconds = stale_seconds
        self.is_dead_owner = is_dead_owner
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._maybe_due: set[str] = set(sinks)
        """Sinks that may have due sends nobody holds: only these are worth a claim query."""
        self._next_sweep = 0.0
        self._sweep_sinks: set[str] = set(sinks)
        """Sinks due a claim that looks at all their due sends: ``_claim_all``, per sink."""
        self._claim_all = True
        """A sweep is due for deliveries (set each poll interval, cleared once a claim that looks
        at every due delivery has run): between sweeps claims look only at recent ones."""
        self._ingest_first = IngestFirst(config.busy_pause_seconds)
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._transfers = asyncio.Semaphore(config.file_transfers)
        self._routing: dict[asyncio.Task[None], list[Claim]] = {}
        """Deliveries being routed, by the task routing them (one per claim)."""
        self._routing_count = 0
        self._routing_bytes = 0
        """How many deliveries ``_routing`` holds, and their bodies' bytes: kept as claims come
        and go rather than summed at each turn of the loop (which runs once a send or more)."""
        self._sending: dict[asyncio.Task[None], SendClaim] = {}
        self._load: Counter[str] = Counter()
        """Slots taken per sink: sends in flight plus those reserved while routing."""
        self._holding: set[int] = set()
        """Sends whose sink call has not returned yet: each holds one of its sink's slots."""

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done() and not self._stopping

    @property
    def inflight(self) -> int:
        return self._routing_count + len(self._sending)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (called after each new delivery)."""
        self._wake.set()

    async def start(self) -> None:
        released = await self.journal.release_stale(self.is_dead_owner, self.stale_seconds)
        if released:
            log.info("took back %d leases held by a stopped process", released)
        for stopped in await self.journal.stopped_sinks():
            log.error(
                "sink %s is STOPPED since %s (%s); its events wait in the journal: fix the"
                " destination, then run `hookdock sinks resume %s`",
                stopped.sink,
                f"{stopped.stopped_at:%Y-%m-%d %H:%M:%S}",
                stopped.reason,
                stopped.sink,
            )
        self._loop_task = asyncio.create_task(self._run(), name="hookdock-dispatcher")
        self._renew_task = asyncio.create_task(self._renew_leases(), name="hookdock-leases")

    def stop_claiming(self) -> None:
        self._stopping = True
        self._wake.set()
        self._slot_free.set()

    async def stop(self, grace_seconds: float) -> None:
        """Claim nothing more; let in-flight work finish within the grace, release the rest."""
        self.stop_claiming()
        if self._loop_task is not None:
            await self._loop_task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        # Routing that finishes now may still start sends it had leased: wait on whatever is in
        # flight, not on a snapshot of it.
        while work := {*self._routing, *self._sending}:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(work, timeout=remaining)
        pending = {*self._routing, *self._sending}
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
        if not pending:
            return
        deliveries = [
            c.delivery.delivery_id for t in pending if t in self._routing for c in self._routing[t]
        ]
        sends = [self._sending[t].send_id for t in pending if t in self._sending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if deliveries:
            await self.journal.release(self.owner, deliveries)
        if sends:
            await self.journal.release_sends(self.owner, sends)
        log.warning("shutdown: released %d unfinished attempts", len(deliveries) + len(sends))

    # ------------------------------------------------------------------ the loop

    def _free_slots(self) -> dict[str, int]:
        return {
            name: free
            for name, target in self.sinks.items()
            if (free := target.concurrency - self._load[name]) > 0
        }

    async def _run(self) -> None:
        while not self._stopping:
            busy = self.config.busy_requests
            load = self.ingest_load() if busy else 0
            pause = self._ingest_first.delay(
                bool(busy) and load >= busy, bool(busy) and load >= OVERLOAD * busy
            )
            if pause > 0:
                await asyncio.sleep(min(pause, _BUSY_RECHECK_SECONDS))
                continue
            free = self._free_slots()
            if self.sinks and not free:
                # Every sink is full: new deliveries (which set _wake) wait for a free slot.
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            if time.monotonic() >= self._next_sweep:
                # Retries come due with time, and another process may requeue or resume: every
                # poll interval each sink is worth a look, however busy the wake-ups keep us.
                self._maybe_due.update(self.sinks)
                self._sweep_sinks.update(self.sinks)
                self._next_sweep = time.monotonic() + self.config.poll_seconds
                self._claim_all = True
            room = self.config.route_concurrency - self._routing_count
            room_bytes = self.config.route_bytes - self._routing_bytes
            # Both claims in one group commit.
            more, claims = await asyncio.gather(
                self._claim_sends(free), self._claim(room, room_bytes)
            )
            if claims:
                self._hold_routing(claims, 1)
                self._track(self._routing, claims, self._route_all(claims))
            if more or (claims and len(claims) == room):
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def _claim(self, room: int, room_bytes: int) -> list[Claim]:
        if room <= 0 or room_bytes <= 0:
            return []  # a sweep that is due waits for the next claim with room
        sweep = self._claim_all
        try:
            claims = await self.journal.claim(
                self.owner,
                room,
                self.config.lease_seconds,
                recent_only=not sweep,
                max_bytes=room_bytes,
            )
        except Exception as exc:
            # Expected while another process holds the journal: one line, not a trace.
            log.warning("cannot claim deliveries, trying again: %s", exc)
            return []
        if sweep:
            self._claim_all = False
        return claims

    async def _claim_sends(self, free: dict[str, int]) -> bool:
        """Claim due sends into the free slots; True if some sink filled up (more may wait)."""
        wanted = {sink: n for sink, n in free.items() if sink in self._maybe_due}
        if not wanted:
            return False
        try:
            claims = await self.journal.claim_sends(
                self.owner,
                wanted,
                self.config.lease_seconds,
                recent_only=set(wanted) - self._sweep_sinks,
            )
        except Exception as exc:
            log.warning("cannot claim sends, trying again: %s", exc)
            return False
        self._sweep_sinks -= set(wanted)
        taken = Counter(c.sink for c in claims)
        for claim in claims:
            self._take_slot(claim)
            self._track(self._sending, claim, self._send(claim))
        full = {sink for sink, n in wanted.items() if taken[sink] >= n}
        self._maybe_due -= set(wanted) - full  # those sinks have nothing more due now
        return bool(full)

    def _track(
        self,
        where: dict[asyncio.Task[None], _C],
        claim: _C,
        work: Coroutine[Any, Any, None],
    ) -> None:
        task = asyncio.create_task(work)
        where[task] = claim
        task.add_done_callback(self._forget)

    def _hold_routing(self, claims: list[Claim], sign: int) -> None:
        self._routing_count += sign * len(claims)
        self._routing_bytes += sign * sum(len(c.delivery.body) for c in claims)

    def _forget(self, task: asyncio.Task[None]) -> None:
        routed = self._routing.pop(task, None)
        if routed is not None:
            self._hold_routing(routed, -1)
        claim = self._sending.pop(task, None)
        if claim is not None:
            self._free_slot(claim)
        self._slot_free.set()
        self._wake.set()

    def _take_slot(self, claim: SendClaim) -> None:
        self._load[claim.sink] += 1
        self._holding.add(claim.send_id)

    def _free_slot(self, claim: SendClaim) -> None:
        """The sink call is over: its slot goes to the next send while the outcome commits
        (the send keeps its lease until then, so nobody else takes it meanwhile)."""
        if claim.send_id in self._holding:
            self._holding.discard(claim.send_id)
            self._load[claim.sink] -= 1
            self._slot_free.set()
            self._wake.set()

    async def _renew_leases(self) -> None:
        """Keep the leases of sends in flight: a transfer of a large file outlasts a lease."""
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            ids = [claim.send_id for claim in self._sending.values()]
            if not ids:
                continue
            try:
                await self.journal.renew_sends(self.owner, ids, self.config.lease_seconds)
            except Exception as exc:
                log.warning("cannot renew the leases of %d sends, trying again: %s", len(ids), exc)

    # ------------------------------------------------------------------ routing

    async def _route_all(self, claims: list[Claim]) -> None:
        """Route a claim's deliveries: every one normalized first, then all recorded at once,
        so that their writes reach the journal together and share one group commit."""
        routes = [self._pairs(claim) for claim in claims]
        results = await asyncio.gather(
            *(
                self._finish_route(claim, pairs)
                if isinstance(pairs, Outcome)
                else self._route(claim, pairs)
                for claim, pairs in zip(claims, routes, strict=True)
            ),
            return_exceptions=True,
        )
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, Exception):
                log.error("routing delivery %s failed", claim.delivery.delivery_id, exc_info=result)

    def _pairs(self, claim: Claim) -> list[tuple[Event, str]] | Outcome:
        """(event, sink) for each send the delivery makes, or why it cannot be routed."""
        delivery = claim.delivery
        target = self.routes.get(delivery.route)
        if target is None:
            return Outcome.dead(f"route {delivery.route!r} is no longer configured")
        if claim.attempt > ROUTE_MAX_ATTEMPTS:
            return Outcome.dead(f"routing did not finish in {ROUTE_MAX_ATTEMPTS} attempts")
        try:
            events = list(target.source.normalize(delivery))
        except Exception as exc:
            return Outcome.dead(f"cannot normalize: {_describe(exc)}")
        return [
            (event, sink)
            for event in events
            for sink in target.router.sinks_for(event)
            if sink in self.sinks
        ]

    async def _route(self, claim: Claim, pairs: list[tuple[Event, str]]) -> None:
        delivery = claim.delivery
        # Reserve a slot for each sink that has one, so that its sends start right away; once
        # shutdown has begun, they wait in the journal for the next start instead.
        lease_now = {
            sink
            for _, sink in pairs
            if not self._stopping and self._load[sink] < self.sinks[sink].concurrency
        }
        reserved = Counter(sink for _, sink in pairs if sink in lease_now)
        self._load.update(reserved)
        try:
            sends = await self.journal.route(
                claim, self.owner, pairs, lease_now, self.config.lease_seconds
            )
        except Exception:
            # The lease runs out and routing is tried again: at-least-once, never lost.
            self._load.subtract(reserved)
            _journal_failed("cannot record the routing of delivery %s", delivery.delivery_id)
            return
        self._load.subtract(reserved)
        if self._stopping and sends:
            # Shutdown began while this commit was on its way: the sends wait for the next start.
            await self.journal.release_sends(self.owner, [send.send_id for send in sends])
            return
        for send in sends:
            self._take_slot(send)
            self._track(self._sending, send, self._send(send))
        # A send left unleased (its sink was full, or is stopped) waits to be claimed.
        self._maybe_due.update({sink for _, sink in pairs} - {s.sink for s in sends})
        if not pairs:
            log.debug("delivery %s: every event dropped by the rules", delivery.delivery_id)
        else:
            log.debug(
                "delivery %s (route %s) routed: %d events, %d sends",
                delivery.delivery_id,
                delivery.route,
                len({event.event_id for event, _ in pairs}),
                len(pairs),
                extra={"delivery_id": delivery.delivery_id, "route": delivery.route},
            )

    async def _finish_route(self, claim: Claim, outcome: Outcome) -> None:
        delivery = claim.delivery
        try:
            await self.journal.finish(claim, self.owner, outcome)
        except Exception:
            _journal_failed("cannot record the outcome of delivery %s", delivery.delivery_id)
            return
        log.error(
            "delivery %s (route %s) dead-lettered: %s",
            delivery.delivery_id,
            delivery.route,
            outcome.error,
            extra={"delivery_id": delivery.delivery_id, "route": delivery.route},
        )

    # ------------------------------------------------------------------ sending

    async def _send(self, claim: SendClaim) -> None:
        try:
            outcome = await self._send_outcome(claim)
        finally:
            self._free_slot(claim)
        try:
            await self.journal.finish_send(claim, self.owner, outcome)
        except Exception:
            # The lease runs out and another attempt follows: at-least-once, never lost.
            _journal_failed(
                "cannot record the outcome of event %s to sink %s", claim.event_id, claim.sink
            )
            return
        if self.metrics is not None:
            received = None if claim.event is None else claim.event.received_at
            self.metrics.attempt(claim.sink, outcome.kind, received)
        if self.alerts is not None:
            self.alerts.outcome(
                sink=claim.sink,
                kind=outcome.kind,
                delivery_id=claim.delivery_id,
                event_id=claim.event_id,
                code=outcome.code,
                error=outcome.error,
            )
        ids = {"delivery_id": claim.delivery_id, "event_id": claim.event_id, "sink": claim.sink}
        if outcome.kind == "delivered":
            log_activity(
                "delivered event %s (route %s) to sink %s",
                claim.event_id,
                claim.route,
                claim.sink,
                ids=ids,
            )
        elif outcome.kind == "retry":
            log.warning(
                "event %s (route %s) to sink %s: attempt %d failed, retrying in %.0fs: %s",
                claim.event_id,
                claim.route,
                claim.sink,
                claim.attempt,
                (outcome.retry_at or 0) - self.clock(),
                outcome.error,
                extra=ids,
            )
        elif outcome.kind == "gone":
            log.error(
                "sink %s STOPPED: %s.  Its events wait in the journal; fix the destination,"
                " then run `hookdock sinks resume %s`",
                claim.sink,
                outcome.error,
                claim.sink,
                extra=ids,
            )
        else:
            log.error(
                "event %s (route %s) to sink %s dead-lettered: %s",
                claim.event_id,
                claim.route,
                claim.sink,
                outcome.error,
                extra=ids,
            )

    async def _send_outcome(self, claim: SendClaim) -> Outcome:
        target = self.sinks.get(claim.sink)
        if target is None:
            return Outcome.dead(f"sink {claim.sink!r} is no longer configured")
        route = self.routes.get(claim.route)
        event = claim.event
        if event is None:
            found = await self._legacy_event(claim, route)
            if isinstance(found, Outcome):
                return found
            event = found
        sink = target.sink
        fetcher = route.fetcher if route is not None else None
        wanted: list[FileRef] = []
        if fetcher is not None and event.files and target.takes_files:
            wanted = [ref for ref in event.files if fetcher.wants(ref)]
        stored: dict[str, FileInfo] = dict(claim.files)
        try:
            if wanted:
                event = await self._store_files(claim, event, wanted, stored)
            await sink.deliver(event)
        except SinkGone as exc:
            return Outcome.gone(_describe(exc))
        except PermanentSinkError as exc:
            return Outcome.dead(_describe(exc), code=exc.code)
        except Exception as exc:
            reason = _describe(exc)
            code = getattr(exc, "code", None)
            if never_succeeds(exc):
                return Outcome.dead(reason, code=code)
            after = exc.retry_after if isinstance(exc, RetryableSinkError) else None
            delay = target.policy.delay(claim.attempt, at_least=after)
            if delay is None:
                tries = f"{claim.attempt} attempt{'s' if claim.attempt != 1 else ''}"
                return Outcome.dead(f"gave up after {tries}: {reason}", code=code)
            now = self.clock()
            expiries = [
                ref.expires_at for ref in wanted if ref.role not in stored and ref.expires_at
            ]
            if not expiries:
                return Outcome.retry(reason, now + delay, code=code)
            return self._retry_before_expiry(reason, code, now, now + delay, min(expiries))
        return Outcome.delivered()

    async def _store_files(
        self, claim: SendClaim, event: Event, wanted: list[FileRef], stored: dict[str, FileInfo]
    ) -> Event:
        """Store each wanted file not stored yet (``stored`` grows as they are); the event
        with every stored file recorded."""
        fetcher = self.routes[claim.route].fetcher
        sink = self.sinks[claim.sink].sink
        if fetcher is None or not isinstance(sink, FileSink):  # checked by the caller
            return event
        for ref in wanted:
            if ref.role not in stored:
                stored[ref.role] = await self._store_file(claim, event, ref, fetcher, sink)
        return event.with_files(stored)

    async def _store_file(
        self, claim: SendClaim, event: Event, ref: FileRef, fetcher: Fetcher, sink: FileSink
    ) -> FileInfo:
        async with self._transfers:
            info = await fetcher.transfer(ref, partial(sink.deliver_file, event))
        if self.metrics is not None:
            self.metrics.stored_file(claim.sink, info.size)
        if not await self.journal.record_file(claim, self.owner, ref.role, info):
            # Another worker took the send over; it finds the file in place or stores it again.
            log.warning("event %s: lost the lease of its send to %s", claim.event_id, claim.sink)
        log.debug(
            "stored the %s file of event %s (%s, sha256 %s) in sink %s",
            ref.role,
            claim.event_id,
            format_bytes(info.size),
            info.sha256[:12],
            claim.sink,
        )
        return info

    async def _legacy_event(self, claim: SendClaim, route: RouteTarget | None) -> Event | Outcome:
        """The event of a send routed before events were stored: normalized once more, found
        by its id, and stored, so that this happens once."""
        if route is None:
            return Outcome.dead(f"route {claim.route!r} is no longer configured")
        raw = await self.journal.get_raw(claim.delivery_id)
        if raw is None:
            return Outcome.dead("its delivery is no longer in the journal")
        try:
            events: Sequence[Event] = route.source.normalize(raw)
        except Exception as exc:
            return Outcome.dead(f"cannot normalize: {_describe(exc)}")
        for position, event in enumerate(events):
            if event.event_id == claim.event_id:
                await self.journal.store_event(claim, event, position)
                return event
        return Outcome.dead("the delivery no longer normalizes to this event")

    @staticmethod
    def _retry_before_expiry(
        reason: str, code: str | None, now: float, retry_at: float, expires: datetime
    ) -> Outcome:
        expiry = expires.timestamp()
        if retry_at < expiry:
            return Outcome.retry(reason, retry_at, code=code)
        when = expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        last_chance = expiry - LAST_CHANCE_SECONDS
        if last_chance - now >= MIN_RETRY_SECONDS:
            return Outcome.retry(
                f"{reason} (one last try before the file's link expires at {when})",
                last_chance,
                code=code,
            )
        return Outcome.dead(
            f"the file's link expires at {when}, with no time left for another try: {reason}",
            code="link_expired",
        )


def _journal_failed(message: str, *args: object) -> None:
    """Log a journal write the dispatcher could not make: one line while the journal is away
    (a database restart makes hundreds), a traceback for anything else."""
    exc = sys.exc_info()[1]
    if isinstance(exc, JournalError):
        log.warning(message + " (its lease runs out and it is tried again): %s", *args, exc)
    else:
        log.exception(message, *args)
