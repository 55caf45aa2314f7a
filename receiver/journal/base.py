"""What every journal backend offers: durable appends, leased claims, outcomes, listings.

The journal is the unit of durability.  ``append`` returns only once the delivery is on disk
(the ingest endpoint answers 2xx after it).  Two kinds of work follow, each under a lease, so
several workers (or processes, with a shared backend) never hold the same item at once and a
crashed worker's lease simply runs out:

* a **delivery** is claimed to be *routed*: normalized into events, each event matched to its
  sinks; ``route`` then stores the events and records one **send** per (event, sink) pair,
  atomically.  Every attempt of a send delivers the stored event: a source runs once;
* a **send** is claimed, per sink, to be delivered; each has its own attempts, next attempt
  time, last error (and its short ``code``) and delivered time, so one failing sink never
  holds back another.  The files a send has stored are recorded with it as they land, so a
  retry never fetches them again (the links they came from may have expired by then).

A delivery as a whole is *pending* while it is unrouted or any of its sends is, *dead* when it
could not be routed or a send gave up, and *done* when every send was delivered (or the rules
dropped every event): ``rules.overall_state``.

Two protocols: ``Journal`` is the hot path (append, claim, route, finish, leases), what ingest
and the dispatcher use; ``JournalAdmin`` is what an operator reads and does, which needs no
dispatcher and no plugins.  ``SqlJournal`` implements both, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from handlers.event import Event, RawDelivery
from handlers.files import FileInfo
from receiver.journal.pollers import PollerState, PollOutcome
from receiver.journal.watches import Watch

if TYPE_CHECKING:
    from receiver.journal.backlog import SinkBacklog
    from receiver.journal.views import (
        ActionInfo,
        ActivityBucket,
        BatchRow,
        DeliveryDetail,
        EventFilter,
        EventPage,
        PurgeResult,
        ReplayJob,
        ReplayResult,
        RetryNowResult,
    )

__all__ = [
    "AppendResult",
    "Claim",
    "DeliveryInfo",
    "DeliveryState",
    "Journal",
    "JournalAdmin",
    "NamedLease",
    "Outcome",
    "OwnerCheck",
    "ProcessInfo",
    "SendClaim",
    "SendInfo",
    "SendState",
    "StoppedSink",
]


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    """Waiting for (or under) a dispatcher attempt."""
    DONE = "done"
    """Every send was delivered (or the routing rules dropped every event)."""
    DEAD = "dead"
    """Could not be routed, or a send gave up; nothing pending.  Raw bytes kept; requeueable."""


class SendState(enum.StrEnum):
    PENDING = "pending"
    """Waiting for (or under) an attempt, or for its stopped sink to resume."""
    DELIVERED = "delivered"
    DEAD = "dead"
    """Out of attempts or a permanent failure; requeueable after a fix."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    delivery_id: str
    duplicate: bool
    """True when a delivery with the same dedupe key was already journaled; nothing new stored."""


@dataclass(frozen=True, slots=True)
class Claim:
    delivery: RawDelivery
    attempt: int
    """1 for the first attempt; counted at claim so a delivery that crashes its worker runs out."""
    claimed_at: float


@dataclass(frozen=True, slots=True)
class SendClaim:
    """A leased (event, sink) pair: the stored ``event`` to deliver to ``sink``."""

    send_id: int
    delivery_id: str
    route: str
    event_id: str
    event: Event | None
    """The event as stored when the delivery was routed.  None only for a send routed by a
    hookdock older than stored events: the dispatcher normalizes it once more, by its id."""
    sink: str
    attempt: int
    claimed_at: float
    files: Mapping[str, FileInfo] = field(default_factory=dict)
    """Role -> file already stored by an earlier attempt (``record_file``): not to fetch again."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: ``delivered``, ``retry`` (at ``retry_at``, epoch s) or ``dead``.

    For a send, ``gone`` also stops its sink (the destination said 410 Gone): the send waits,
    pending, until the sink is resumed.  ``code`` is a short, stable name for the failure
    (``link_expired``, ``file_too_large``...), kept with a send next to its error so that
    operators can count failures by kind; a routing attempt does not store it.
    """

    kind: str
    error: str | None = None
    retry_at: float | None = None
    code: str | None = None

    @classmethod
    def delivered(cls) -> Outcome:
        return cls("delivered")

    @classmethod
    def retry(cls, error: str, at: float, code: str | None = None) -> Outcome:
        return cls("retry", error, at, code)

    @classmethod
    def dead(cls, error: str, code: str | None = None) -> Outcome:
        return cls("dead", error, None, code)

    @classmethod
    def gone(cls, error: str) -> Outcome:
        return cls("gone", error)


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    delivery_id: str
    route: str
    source: str
    state: DeliveryState
    attempts: int
    received_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    size: int


@dataclass(frozen=True, slots=True)
class SendInfo:
    send_id: int
    delivery_id: str
    event_id: str
    sink: str
    state: SendState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    code: str | None = None
    """The last failure's code, if it had one; cleared once delivered or requeued."""
    files: Mapping[str, FileInfo] = field(default_factory=dict)
    """Role -> file stored for this send so far."""
    lease_owner: str | None = None
    """The process attempting it right now, if one is (its lease may have run out)."""
    updated_at: datetime | None = None
    """When its last attempt began or ended."""


@dataclass(frozen=True, slots=True)
class StoppedSink:
    sink: str
    stopped_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A running ``hookdock serve`` or ``worker``, as its heartbeats show it."""

    owner: str
    """The name its leases carry: ``host/pid/random``."""
    host: str
    pid: int
    role: str
    """``serve`` or ``worker``."""
    started_at: datetime
    heartbeat_at: datetime
    alive: bool = True
    """False once its heartbeat is older than the stale limit: its leases are taken over."""


@dataclass(frozen=True, slots=True)
class NamedLease:
    """Work one process at a time does (``retention``, a poller), and who does it now."""

    name: str
    owner: str
    acquired_at: datetime
    lease_until: datetime


class OwnerCheck(Protocol):
    def __call__(self, owner: str) -> bool: ...


class Journal(Protocol):
    async def append(
        self, delivery: RawDelivery, dedupe_key: str, subject: str | None = None
    ) -> AppendResult:
        """Store ``delivery`` durably (fsync'd) unless ``dedupe_key`` is already stored."""
        ...

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        recent_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` unrouted deliveries that are due, oldest first.

        ``max_bytes``: only as many of them as have bodies adding up to no more than this,
        counted from the oldest, but always the oldest (a body larger than the budget is
        routed alone, not never).

        ``recent_only``: only those due since shortly before the last claim that was not, if
        that one saw every due delivery.  On PostgreSQL the index of pending deliveries keeps
        the old version of every delivery claimed and routed until a vacuum, and a claim
        reads them all from the oldest (29,000 a claim after 40,000 deliveries): the
        dispatcher claims recent ones between its sweeps, which look at all (a lease that ran
        out leaves its delivery due since long ago)."""
        ...

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        """Record a routing attempt that did not route (``retry`` or ``dead``); end the lease."""
        ...

    async def route(
        self,
        claim: Claim,
        owner: str,
        sends: Sequence[tuple[Event, str]],
        lease_now: Collection[str],
        lease_seconds: float,
    ) -> list[SendClaim]:
        """Mark the claimed delivery routed, store each event of ``sends`` (by its id: a delivery
        routed again replaces them) and record one send per ``(event, sink)``, once.

        Sends whose sink is in ``lease_now`` (and not stopped) come back leased to ``owner``
        as their first attempt, to be delivered right away; the rest wait to be claimed.
        Nothing happens (and nothing is returned) if ``owner`` no longer holds the lease.
        """
        ...

    async def claim_sends(
        self,
        owner: str,
        limits: Mapping[str, int],
        lease_seconds: float,
        *,
        recent_only: Collection[str] = (),
    ) -> list[SendClaim]:
        """Lease due pending sends, at most ``limits[sink]`` per sink, none of a stopped sink.

        ``recent_only``: sinks whose claim looks only at sends due since shortly before that
        sink's last claim that was not, if that one saw every due send: ``claim``'s rule, per
        sink (the index of pending sends keeps old versions on PostgreSQL as well)."""
        ...

    async def finish_send(self, claim: SendClaim, owner: str, outcome: Outcome) -> None:
        """Record the outcome of ``owner``'s attempt at a send and end its lease.

        The outcome's error and code replace the send's; a delivered send has neither.
        """
        ...

    async def store_event(self, claim: SendClaim, event: Event, position: int) -> None:
        """Store the event of a send routed before events were stored (``event`` is None)."""
        ...

    async def get_raw(self, delivery_id: str) -> RawDelivery | None:
        """The raw delivery as it was accepted."""
        ...

    async def record_file(self, claim: SendClaim, owner: str, role: str, info: FileInfo) -> bool:
        """Durably record that the send stored its ``role`` file, as ``info``.

        Merged into the send's files (replacing an earlier ``role``), which later claims of
        the send carry, through retries and requeues, so that no attempt fetches it again.
        False, and nothing stored, if ``owner`` no longer holds the send's lease.
        """
        ...

    async def renew_sends(self, owner: str, send_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend to ``lease_seconds`` from now the leases ``owner`` still holds among
        ``send_ids`` (a long file transfer); returns how many it still held."""
        ...

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        """Give delivery leases back unattempted (shutdown): the attempt does not count."""
        ...

    async def release_sends(self, owner: str, send_ids: Sequence[int]) -> None:
        """Give send leases back unattempted (shutdown): the attempt does not count."""
        ...

    async def release_stale(
        self, is_dead_owner: OwnerCheck, stale_seconds: float | None = None
    ) -> int:
        """End the leases of owners that are gone: those whose heartbeat is older than
        ``stale_seconds`` (a replica killed on any machine), and those ``is_dead_owner`` says
        are gone (a process of this host that no longer runs), heartbeat or not.  Gone
        processes are forgotten, and their named leases freed."""
        ...

    async def heartbeat(self, process: ProcessInfo) -> None:
        """Record that ``process`` is alive now (on the database's clock)."""
        ...

    async def forget_process(self, owner: str) -> None:
        """A clean shutdown: the process and its named leases are gone at once."""
        ...

    async def acquire_lease(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Take, or keep, the named lease ``name`` for ``lease_seconds`` from now.

        True if ``owner`` holds it now: it was free, ours already, ran out, or its holder's
        heartbeat went stale (``stale_seconds`` as last given to ``release_stale``).
        """
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Let go of ``name`` if ``owner`` holds it."""
        ...

    async def poller_state(self, name: str) -> PollerState | None:
        """The poller's saved state, counts and schedule; None before it first ran."""
        ...

    async def save_poll(self, name: str, owner: str, outcome: PollOutcome) -> bool:
        """Record one poll (its new state when it succeeded) and when the next is due.

        Only while ``owner`` holds the named lease ``poller:<name>``; False (nothing written)
        otherwise.  A failed poll keeps the state of the last one that succeeded.
        """
        ...

    async def known_subjects(self, subjects: Collection[str]) -> set[str]:
        """Which of ``subjects`` at least one journaled delivery has (``append``'s subject)."""
        ...

    async def add_watch(self, poller: str, key: str, detail: Mapping[str, Any]) -> bool:
        """Ask ``poller`` to follow ``key`` (a batch id...); False when it was asked already."""
        ...

    async def open_watches(self, poller: str, limit: int = 1000) -> list[Watch]:
        """What ``poller`` follows and has not closed, oldest first."""
        ...

    async def close_watches(self, poller: str, keys: Collection[str]) -> None:
        """``poller`` has seen these end: no longer open."""
        ...

    async def stopped_sinks(self) -> list[StoppedSink]:
        """Sinks a 410 stopped: the dispatcher says so when it starts."""
        ...

    async def ping(self) -> None:
        """Raise ``JournalUnavailable`` unless a write can be made durable right now."""
        ...

    async def close(self) -> None: ...


class JournalAdmin(Protocol):
    """What an operator reads and does: no lease, no dispatcher, no plugin needed."""

    async def processes(self, stale_seconds: float) -> list[ProcessInfo]:
        """Every process with a heartbeat, oldest first; ``alive`` by ``stale_seconds``."""
        ...

    async def named_leases(self) -> list[NamedLease]: ...

    async def poller_states(self) -> list[PollerState]:
        """Every poller that has run (or was asked to), by name."""
        ...

    async def run_poller_now(self, name: str) -> None:
        """Make the poller due at once, for whichever process holds its lease."""
        ...

    async def prune(self, done_before: float) -> int:
        """Delete done deliveries (sends and attempts too) received before ``done_before``.

        Their dedupe keys go with them: an identical resend after that is a new delivery.
        """
        ...

    async def prune_dead(self, dead_before: float) -> int:
        """Delete dead deliveries (raw bodies, events, sends, attempts) received before
        ``dead_before``: dead letters keep SAS links and personal data, so they too have an
        age limit (``[retention] dead_days``)."""
        ...

    async def requeue(
        self, delivery_ids: Sequence[str] | None = None, *, sink: str | None = None
    ) -> int:
        """Make dead deliveries and dead sends pending again with fresh attempts.

        Each send keeps the event stored when it was routed; see ``renormalize`` for a
        delivery whose source has since been fixed.

        All dead ones when ``delivery_ids`` is None; only sends to ``sink`` when it is given.
        Returns how many deliveries had something requeued.
        """
        ...

    async def renormalize(self, delivery_ids: Sequence[str] | None = None) -> int:
        """Route dead deliveries again from their raw bytes (all dead ones when None).

        Their dead sends are dropped and the delivery goes back to be normalized and routed:
        the events are stored anew, and a sink that already has an event does not get it
        twice.  Returns how many deliveries go back.
        """
        ...

    async def stop_sink(self, sink: str, reason: str) -> None: ...

    async def resume_sink(self, sink: str) -> bool:
        """Let a stopped sink's sends flow again; False if it was not stopped."""
        ...

    async def stopped_sinks(self) -> list[StoppedSink]: ...

    async def sends(self, delivery_id: str) -> list[SendInfo]: ...

    async def sink_counts(self) -> dict[str, dict[SendState, int]]: ...

    async def dead_codes(self) -> dict[str, int]:
        """How many dead sends there are per failure code (sends without a code left out)."""
        ...

    async def sink_backlog(self) -> dict[str, SinkBacklog]:
        """Each sink with pending sends: how many, how many due now, the oldest's receipt."""
        ...

    async def recent_lags(self, limit: int = 1000) -> dict[str, builtins.list[float]]:
        """Receipt-to-delivery seconds of the last ``limit`` sends delivered, per sink."""
        ...

    async def dead_by_sink(self) -> dict[tuple[str, str], int]:
        """Dead sends per (sink, failure code); ``none`` for those without a code."""
        ...

    async def get(self, delivery_id: str) -> DeliveryInfo | None: ...

    async def get_raw(self, delivery_id: str) -> RawDelivery | None: ...

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        """Most recent first."""
        ...

    async def counts(self) -> dict[DeliveryState, int]: ...

    # -------------------------------------------------------------- events (``browse.py``)

    async def events(
        self, where: EventFilter, limit: int = 50, *, cursor: str | None = None, offset: int = 0
    ) -> EventPage:
        """Events matching ``where``, newest first: ``limit`` of them after ``cursor`` (the
        ``next_cursor`` of the page before; ``ValueError`` if it is not one) or ``offset``."""
        ...

    async def count_events(self, where: EventFilter) -> int: ...

    async def detail(self, ref: str) -> DeliveryDetail | None:
        """A delivery, found by its id or by one of its events' ids, with everything known."""
        ...

    async def batch(self, batch_id: str) -> dict[SendState, int]:
        """How many events of a vendor batch are in each state (all zero: no such batch)."""
        ...

    async def actions(self, limit: int = 100) -> builtins.list[ActionInfo]:
        """The latest operators' actions, newest first."""
        ...

    # ---------------------------------------------------- the overview (``activity.py``)

    async def activity(self, since: datetime, bucket_seconds: int) -> builtins.list[ActivityBucket]:
        """Per interval of ``bucket_seconds`` (aligned to the epoch) from ``since`` to now,
        oldest first, intervals without anything included."""
        ...

    async def batches(self, since: datetime, limit: int = 50) -> builtins.list[BatchRow]:
        """The vendor batches with events received since ``since``, newest first."""
        ...

    # -------------------------------------------------------------- actions (``replay.py``)

    async def replay(
        self,
        ref: str,
        *,
        sink: str | None = None,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> ReplayResult | None:
        """Send an event (or every event of a delivery) again, whatever its sends' states:
        each send (only to ``sink`` when given) pending with fresh attempts, its earlier
        attempts kept; a send to ``sink`` made where there was none.  A delivery without
        events is routed again.  Sends under an attempt right now are left to it.  None if
        ``ref`` names nothing.  Recorded as ``actor``'s action."""
        ...

    async def replay_events(
        self,
        event_ids: Sequence[str],
        *,
        sink: str | None = None,
        actor: str,
        detail: Mapping[str, Any] | None = None,
        delivery_ids: Sequence[str] = (),
    ) -> tuple[int, int, int, int]:
        """``replay`` for many events in one transaction (a bulk replay's chunk), and for
        ``delivery_ids`` without events (routed again); returns (sends made pending, sends
        made, sends left to an attempt under way, deliveries routed again)."""
        ...

    async def retry_now(self, send_id: int, *, actor: str) -> RetryNowResult | None:
        """Make a waiting send due now (None: no such send; ``due_now`` False: not waiting)."""
        ...

    async def record_action(
        self,
        actor: str,
        action: str,
        *,
        delivery_id: str | None = None,
        event_id: str | None = None,
        sink: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...

    async def purge_task(self, task_id: str, *, actor: str) -> PurgeResult:
        """Erase every delivery of ``task_id`` (with an event of it, or whose subject names
        it: those never routed too): raw bodies, events, sends, attempts.  Reports exactly
        what it erased, and what the sinks had received (copies that live on there)."""
        ...

    # -------------------------------------------------------------- bulk replays (``jobs.py``)

    async def create_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        filter: Mapping[str, Any],
        sink: str | None,
        matched: int,
        owner: str,
        lease_seconds: float,
    ) -> ReplayJob:
        """A running bulk replay held by ``owner``, the process that runs it."""
        ...

    async def replay_job(self, job_id: str) -> ReplayJob | None: ...

    async def replay_jobs(
        self, limit: int = 100, *, running: bool = False
    ) -> builtins.list[ReplayJob]:
        """The latest bulk replays, newest first."""
        ...

    async def replay_job_step(
        self,
        job_id: str,
        owner: str,
        *,
        event_ids: Sequence[str],
        delivery_ids: Sequence[str],
        next_cursor: str | None,
        lease_seconds: float,
    ) -> ReplayJob | None:
        """One chunk replayed and counted, while the job is ``owner``'s and running."""
        ...

    async def end_replay_job(self, job_id: str, owner: str, *, state: str, error: str) -> None: ...

    async def cancel_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        is_gone: OwnerCheck,
        stale_seconds: float,
        holder: str | None = None,
    ) -> ReplayJob | None:
        """Ask a job to stop (one no live process runs stops now)."""
        ...

    async def take_over_replay_job(
        self, owner: str, *, is_gone: OwnerCheck, stale_seconds: float, lease_seconds: float
    ) -> ReplayJob | None:
        """The oldest running job no live process runs, now ``owner``'s."""
        ...

    async def release_replay_jobs(self, owner: str) -> int: ...

    async def close(self) -> None: ...
