"""The operator service: every query and action an operator has, written once, for the HTTP
API (``receiver.admin_api``) and the CLI (``hookdock events ...``).

It reads and acts through the journal's operator side (``JournalAdmin``) and the
configuration's sink names; it loads no plugin and needs no secret.  Every action is recorded
in the journal with its actor.  What it cannot do raises an ``OperatorError`` whose message
says why, and what to do instead.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from handlers.redact import redact_json, redact_text
from receiver.errors import BadRequest, NotFound, OperatorError
from receiver.ids import new_id
from receiver.journal.base import DeliveryState, JournalAdmin, OwnerCheck, SendInfo, SendState
from receiver.journal.views import (
    ActionInfo,
    AttemptInfo,
    DeliveryDetail,
    EventFilter,
    EventRow,
    ReplayJob,
)
from receiver.operator.models import (
    ActionOut,
    ActivityOut,
    ActivityPoint,
    AttemptOut,
    BatchOut,
    BatchRowOut,
    BulkReplayOut,
    DeadGroupOut,
    DeliveryOut,
    EventItem,
    EventOut,
    EventPageOut,
    FileOut,
    ListedStateName,
    PollerOut,
    PurgeOut,
    ReplayOut,
    RetryNowOut,
    SendOut,
    SinkActionOut,
    SinkOut,
)

__all__ = ["ACTIVITY_WINDOWS", "EventQuery", "Operator", "listing_params", "query_from"]

MAX_PAGE_SIZE = 1000
BULK_CHUNK = 500
"""Events a bulk replay replays per transaction."""
JOB_LEASE_SECONDS = 30.0
"""How long a bulk replay's process holds it without a word (each chunk renews it): one that
stopped on another machine is taken over once it runs out."""

ACTIVITY_WINDOWS: dict[str, tuple[timedelta, int]] = {
    "6h": (timedelta(hours=6), 60),
    "24h": (timedelta(hours=24), 600),
    "7d": (timedelta(days=7), 3600),
}
"""The overview's windows: how far back, in intervals of how many seconds."""
BATCH_DAYS = 7
"""The overview lists the batches with events received this many days back."""


class EventQuery(BaseModel):
    """A listing's filters and page, from the API's query string or the CLI's options.

    Names are camelCase (``taskId``), snake_case accepted too; ``state`` may be repeated.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    since: datetime | None = None
    """Received at or after (ISO 8601; a time without a zone is UTC)."""
    until: datetime | None = None
    """Received before."""
    state: list[ListedStateName] = []
    """The event's state (with ``sink``: its send's there); ``dropped``: deliveries routed
    with every event dropped by the rules.  Repeat for several."""
    route: str | None = None
    vendor: str | None = None
    kind: str | None = None
    sink: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    workspace_id: str | None = None
    external_id: str | None = None
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Text anywhere in the display name, in any case."""
    page_size: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = 50
    page_number: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    """Without ``cursor``: the page to skip to (slow when deep; follow ``nextCursor``)."""
    cursor: Annotated[str, Field(pattern=r"^[0-9a-f]{26}\.[0-9]{1,9}$")] | None = None
    """The ``nextCursor`` of the page before."""
    count: bool = True
    """Count every match for ``totalCount``; false saves a scan on a big journal."""

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def event_filter(self) -> EventFilter:
        return EventFilter(
            since=self.since,
            until=self.until,
            states=tuple(SendState(s) for s in self.state if s != "dropped"),
            dropped="dropped" in self.state,
            route=self.route,
            vendor=self.vendor,
            kind=self.kind,
            sink=self.sink,
            task_id=self.task_id,
            batch_id=self.batch_id,
            workspace_id=self.workspace_id,
            external_id=self.external_id,
            text=self.q,
        )


def listing_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A query string's (name, value) pairs as ``query_from`` takes them (the API's and the
    console's listings read the same URL parameters)."""
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        # An empty value is an absent one (a form's empty field), not a filter on "".
        if value:
            values.setdefault(key, []).append(value)
    # ``state`` may be repeated; any other parameter given twice is refused by the model.
    return {k: v if k == "state" or len(v) > 1 else v[0] for k, v in values.items()}


def query_from(values: Mapping[str, Any]) -> EventQuery:
    """An ``EventQuery``, or ``BadRequest`` naming every bad or unknown parameter."""
    try:
        return EventQuery.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"]) or "query"
            why = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {why}")
        raise BadRequest("; ".join(problems)) from None


def _attempts(attempts: list[AttemptInfo]) -> list[AttemptOut]:
    return [
        AttemptOut(
            number=a.number,
            started_at=a.started_at,
            finished_at=a.finished_at,
            duration_seconds=a.duration_seconds,
            outcome=a.outcome,
            error=None if a.error is None else redact_text(a.error),
        )
        for a in attempts
    ]


def _send(info: SendInfo, attempts: list[AttemptInfo]) -> SendOut:
    return SendOut(
        send_id=info.send_id,
        sink=info.sink,
        state=info.state.value,
        attempt_count=info.attempts,
        next_attempt_at=info.next_attempt_at,
        delivered_at=info.delivered_at,
        last_error=None if info.last_error is None else redact_text(info.last_error),
        code=info.code,
        in_flight=info.lease_owner is not None,
        files=[FileOut(role=role, **f.model_dump()) for role, f in sorted(info.files.items())],
        attempts=_attempts(attempts),
    )


def _payload(content_type: str, body: bytes) -> Any:
    """The raw body for showing: its JSON, else its text; credentials redacted either way."""
    if "json" in content_type.lower():
        try:
            return redact_json(orjson.loads(body))
        except orjson.JSONDecodeError:
            pass
    return redact_text(body.decode("utf-8", errors="replace"))


def _action(a: ActionInfo) -> ActionOut:
    return ActionOut(
        action_id=a.action_id,
        at=a.at,
        actor=a.actor,
        action=a.action,
        delivery_id=a.delivery_id,
        event_id=a.event_id,
        sink=a.sink,
        detail=dict(a.detail),
    )


def _item(row: EventRow) -> EventItem:
    return EventItem(
        event_id=row.event_id,
        delivery_id=row.delivery_id,
        route=row.route,
        vendor=row.vendor,
        kind=row.kind,
        task_id=row.task_id,
        batch_id=row.batch_id,
        workspace_id=row.workspace_id,
        external_id=row.external_id,
        display_name=row.display_name,
        received_at=row.received_at,
        state=row.state,
        sends={sink: state.value for sink, state in row.sends.items()},
        last_error=None if row.last_error is None else redact_text(row.last_error),
    )


_PAGING = frozenset({"page_size", "page_number", "cursor", "count"})


def _filter_of(query: EventQuery) -> dict[str, Any]:
    """The filters of ``query`` (not its paging), as a job keeps them."""
    return query.model_dump(exclude_defaults=True, exclude=set(_PAGING), mode="json")


def _job_out(job: ReplayJob) -> BulkReplayOut:
    return BulkReplayOut(
        job_id=job.job_id,
        state=job.state,
        matched=job.matched,
        replayed=job.replayed,
        requeued=job.requeued,
        created=job.created,
        in_flight=job.in_flight,
        error=job.error,
        rerouted=job.rerouted,
        actor=job.actor,
        sink=job.sink,
        filter=dict(job.filter),
        created_at=job.created_at,
        updated_at=job.updated_at,
        cancel_requested=job.cancel_requested,
        running_on=job.owner,
        takeovers=job.takeovers,
    )


def delivery_out(detail: DeliveryDetail) -> DeliveryOut:
    info, raw = detail.delivery, detail.raw
    return DeliveryOut(
        delivery_id=info.delivery_id,
        found_by="delivery" if detail.event_id is None else "event",
        route=info.route,
        source=info.source,
        state=info.state.value,
        received_at=info.received_at,
        size=info.size,
        content_type=raw.content_type,
        headers=dict(raw.headers),
        last_error=None if info.last_error is None else redact_text(info.last_error),
        payload=_payload(raw.content_type, raw.body),
        events=[
            EventOut(
                event_id=e.event_id,
                event=None if e.event is None else redact_json(e.event.model_dump(mode="json")),
                sends=[_send(s.info, s.attempts) for s in e.sends],
            )
            for e in detail.events
        ],
        routing_attempts=_attempts(detail.routing_attempts),
        actions=[_action(a) for a in detail.actions],
    )


class Operator:
    """The queries and actions, over one journal and the configured sink names (their types
    only, for showing; no sink is built)."""

    def __init__(self, journal: JournalAdmin, sinks: Mapping[str, str]) -> None:
        self.journal = journal
        self.sink_types = dict(sinks)

    def check_sink(self, sink: str) -> None:
        """``BadRequest`` unless ``sink`` is configured."""
        self._configured(sink)

    def _configured(self, sink: str, missing: type[OperatorError] = BadRequest) -> str:
        if sink not in self.sink_types:
            known = ", ".join(sorted(self.sink_types)) or "none"
            raise missing(f"no sink named {sink!r} is configured (configured: {known})")
        return sink

    # ------------------------------------------------------------------ reading

    async def events(self, query: EventQuery) -> EventPageOut:
        where = query.event_filter()
        offset = 0 if query.cursor else (query.page_number - 1) * query.page_size
        try:
            page = await self.journal.events(
                where, query.page_size, cursor=query.cursor, offset=offset
            )
        except ValueError as exc:
            raise BadRequest(f"cursor: {exc}; pass the nextCursor of a page") from None
        total = await self.journal.count_events(where) if query.count else None
        pages = None if total is None else max(1, math.ceil(total / query.page_size))
        return EventPageOut(
            items=[_item(row) for row in page.items],
            page_number=query.page_number,
            page_size=query.page_size,
            total_count=total,
            total_pages=pages,
            has_previous_page=query.page_number > 1,
            has_next_page=page.next_cursor is not None,
            next_cursor=page.next_cursor,
        )

    async def dead_letters(self, sink: str, query: EventQuery) -> EventPageOut:
        """The events whose send to ``sink`` is dead."""
        return await self.events(query.model_copy(update={"sink": sink, "state": ["dead"]}))

    async def event(self, ref: str) -> DeliveryOut:
        detail = await self.journal.detail(ref)
        if detail is None:
            raise NotFound(f"no delivery or event {ref!r} in the journal")
        return delivery_out(detail)

    async def sinks(self) -> list[SinkOut]:
        counts = await self.journal.sink_counts()
        stopped = {s.sink: s for s in await self.journal.stopped_sinks()}
        out = []
        for name in sorted({*self.sink_types, *counts, *stopped}):
            by_state = counts.get(name, {})
            stop = stopped.get(name)
            out.append(
                SinkOut(
                    name=name,
                    type=self.sink_types.get(name),
                    pending=by_state.get(SendState.PENDING, 0),
                    delivered=by_state.get(SendState.DELIVERED, 0),
                    dead=by_state.get(SendState.DEAD, 0),
                    stopped=stop is not None,
                    stopped_at=None if stop is None else stop.stopped_at,
                    stopped_reason=None if stop is None else stop.reason,
                )
            )
        return out

    async def batch(self, batch_id: str) -> BatchOut:
        counts = await self.journal.batch(batch_id)
        total = sum(counts.values())
        if not total:
            raise NotFound(f"no events of batch {batch_id!r} in the journal")
        return BatchOut(
            batch_id=batch_id,
            events=total,
            pending=counts[SendState.PENDING],
            delivered=counts[SendState.DELIVERED],
            dead=counts[SendState.DEAD],
        )

    async def actions(self, limit: int = 100) -> list[ActionOut]:
        return [_action(a) for a in await self.journal.actions(limit)]

    async def activity(self, window: str) -> ActivityOut:
        """Webhooks received, sends delivered and failed attempts per interval of ``window``
        (one of ``ACTIVITY_WINDOWS``)."""
        if window not in ACTIVITY_WINDOWS:
            raise BadRequest(f"window: one of {', '.join(ACTIVITY_WINDOWS)}, not {window!r}")
        span, seconds = ACTIVITY_WINDOWS[window]
        buckets = await self.journal.activity(datetime.now(UTC) - span, seconds)
        return ActivityOut(
            window=window,
            bucket_seconds=seconds,
            points=[
                ActivityPoint(
                    start=b.start, received=b.received, delivered=b.delivered, failed=b.failed
                )
                for b in buckets
            ],
        )

    async def dead_groups(self) -> list[DeadGroupOut]:
        """Dead sends per sink and failure code, by sink then by most dead first."""
        found = await self.journal.dead_by_sink()
        ordered = sorted(found.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
        return [DeadGroupOut(sink=sink, code=code, dead=n) for (sink, code), n in ordered]

    async def batches(self, limit: int = 50) -> list[BatchRowOut]:
        since = datetime.now(UTC) - timedelta(days=BATCH_DAYS)
        return [
            BatchRowOut(
                batch_id=row.batch_id,
                vendor=row.vendor,
                last_received_at=row.last_received_at,
                events=sum(row.events.values()),
                pending=row.events.get(SendState.PENDING, 0),
                delivered=row.events.get(SendState.DELIVERED, 0),
                dead=row.events.get(SendState.DEAD, 0),
            )
            for row in await self.journal.batches(since, limit)
        ]

    async def pollers(self) -> list[PollerOut]:
        return [
            PollerOut(
                name=p.name,
                polls=p.polls,
                failures=p.failures,
                found=p.found,
                last_run_at=p.last_run_at,
                last_ok_at=p.last_ok_at,
                last_error=None if p.last_error is None else redact_text(p.last_error),
                next_run_at=p.next_run_at,
            )
            for p in await self.journal.poller_states()
        ]

    async def why_not_retried(self, ref: str) -> str:
        """Why ``hookdock retry`` requeued nothing of ``ref``, and what would."""
        detail = await self.journal.detail(ref)
        if detail is None:
            return f"no delivery or event {ref!r} in the journal"
        info = detail.delivery
        if info.state is DeliveryState.DONE:
            return (
                f"delivery {info.delivery_id} is done: every send was delivered, and retry sends"
                f" again only what failed; to send it again anyway: hookdock events replay {ref}"
            )
        if info.state is DeliveryState.PENDING:
            return (
                f"delivery {info.delivery_id} is still pending (nothing is dead yet); to try a"
                " waiting send now: hookdock events retry-now SEND_ID (see hookdock events show)"
            )
        return f"delivery {info.delivery_id} has nothing dead at that sink"

    # ------------------------------------------------------------------ actions

    async def replay(self, ref: str, *, sink: str | None, actor: str) -> ReplayOut:
        if sink is not None:
            self._configured(sink)
        result = await self.journal.replay(ref, sink=sink, actor=actor)
        if result is None:
            raise NotFound(f"no delivery or event {ref!r} in the journal")
        if result.rerouted:
            message = "it had no events: it is normalized and routed again"
        elif not result.event_ids:
            message = "it is not routed yet: it goes out as soon as it is"
        else:
            where = f"to sink {sink}" if sink else "to every sink it had"
            message = f"{result.requeued + result.created} sends go out again {where}"
            if result.in_flight:
                message += f"; {result.in_flight} under an attempt right now were left to it"
        return ReplayOut(
            delivery_id=result.delivery_id,
            event_ids=result.event_ids,
            requeued=result.requeued,
            created=result.created,
            in_flight=result.in_flight,
            rerouted=result.rerouted,
            message=message,
        )

    async def bulk_replay(
        self,
        query: EventQuery,
        *,
        sink: str | None,
        actor: str,
        dry_run: bool = False,
        owner: str | None = None,
        progress: Callable[[BulkReplayOut], None] | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> BulkReplayOut:
        """Count what ``query`` matches (``dry_run``), or start a job replaying it and run it
        here to its end (``start_replay_job`` then ``run_replay_job``, as ``owner``)."""
        if dry_run:
            if sink is not None:
                self._configured(sink)
            matched = await self.journal.count_events(query.event_filter())
            return BulkReplayOut(
                job_id=None,
                state="dry-run",
                matched=matched,
                replayed=0,
                requeued=0,
                created=0,
                in_flight=0,
                sink=sink,
                filter=_filter_of(query),
            )
        runner = owner or f"operator/{new_id()}"
        job = await self.start_replay_job(query, sink=sink, actor=actor, owner=runner)
        assert job.job_id is not None
        return await self.run_replay_job(job.job_id, owner=runner, progress=progress, pause=pause)

    # ------------------------------------------------------------------ bulk-replay jobs

    async def start_replay_job(
        self,
        query: EventQuery,
        *,
        sink: str | None,
        actor: str,
        owner: str,
        lease_seconds: float = JOB_LEASE_SECONDS,
    ) -> BulkReplayOut:
        """A bulk replay of what ``query`` matches (to ``sink`` only when given), as a job in
        the journal held by ``owner``, the process that runs it next (``run_replay_job``).
        Every replica shows it (``replay_job``) and may cancel it."""
        if sink is not None:
            self._configured(sink)
        matched = await self.journal.count_events(query.event_filter())
        job = await self.journal.create_replay_job(
            f"replay_{new_id()}",
            actor=actor,
            filter=_filter_of(query),
            sink=sink,
            matched=matched,
            owner=owner,
            lease_seconds=lease_seconds,
        )
        return _job_out(job)

    async def run_replay_job(
        self,
        job_id: str,
        *,
        owner: str,
        progress: Callable[[BulkReplayOut], None] | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
        lease_seconds: float = JOB_LEASE_SECONDS,
        chunk: int | None = None,
    ) -> BulkReplayOut:
        """Run ``owner``'s job from where it is, ``chunk`` (``BULK_CHUNK``) events a
        transaction, newest first, until it is done, cancelled, or no longer ``owner``'s.

        ``pause`` is awaited between chunks: the server's yields to ingest while webhooks are
        coming.  Each event is recorded as replayed by the job's actor under its filter."""
        job = await self.journal.replay_job(job_id)
        if job is None:
            raise NotFound(f"no bulk replay {job_id!r} in the journal")
        where = query_from(job.filter).event_filter()
        cursor = job.cursor
        try:
            while job is not None and job.state == "running" and job.owner == owner:
                page = await self.journal.events(where, chunk or BULK_CHUNK, cursor=cursor)
                ids = [row.event_id for row in page.items if row.event_id is not None]
                # With a sink named, only events go to it: a delivery without events is
                # routed again only by a replay to every sink.
                bare = [r.delivery_id for r in page.items if r.event_id is None and not job.sink]
                job = await self.journal.replay_job_step(
                    job_id,
                    owner,
                    event_ids=ids,
                    delivery_ids=bare,
                    next_cursor=page.next_cursor,
                    lease_seconds=lease_seconds,
                )
                cursor = page.next_cursor
                if job is not None and progress is not None:
                    progress(_job_out(job))
                if job is not None and job.state == "running" and pause is not None:
                    await pause()
        except Exception as exc:
            error = redact_text(str(exc)) or type(exc).__name__
            await self.journal.end_replay_job(job_id, owner, state="failed", error=error)
            raise
        return await self.replay_job(job_id)

    async def replay_job(self, job_id: str) -> BulkReplayOut:
        job = await self.journal.replay_job(job_id)
        if job is None:
            raise NotFound(f"no bulk replay {job_id!r} in the journal")
        return _job_out(job)

    async def replay_jobs(self, limit: int = 100) -> list[BulkReplayOut]:
        """The latest bulk replays, newest first, whichever process ran them."""
        return [_job_out(j) for j in await self.journal.replay_jobs(limit)]

    async def cancel_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        is_gone: OwnerCheck = lambda owner: False,
        stale_seconds: float = JOB_LEASE_SECONDS,
        holder: str | None = None,
    ) -> BulkReplayOut:
        """Ask a job to stop, from any replica: the process running it stops at its next
        chunk; one no live process runs (or ``holder``'s, which asks having stopped running
        it) is cancelled at once.  An ended job is left as is."""
        job = await self.journal.cancel_replay_job(
            job_id, actor=actor, is_gone=is_gone, stale_seconds=stale_seconds, holder=holder
        )
        if job is None:
            raise NotFound(f"no bulk replay {job_id!r} in the journal")
        return _job_out(job)

    async def take_over_replay_job(
        self,
        owner: str,
        *,
        is_gone: OwnerCheck,
        stale_seconds: float,
        lease_seconds: float = JOB_LEASE_SECONDS,
    ) -> BulkReplayOut | None:
        """The oldest running job whose process stopped, now ``owner``'s to go on with."""
        job = await self.journal.take_over_replay_job(
            owner, is_gone=is_gone, stale_seconds=stale_seconds, lease_seconds=lease_seconds
        )
        return None if job is None else _job_out(job)

    async def retry_now(self, send_id: int, *, actor: str) -> RetryNowOut:
        result = await self.journal.retry_now(send_id, actor=actor)
        if result is None:
            raise NotFound(f"no send {send_id} in the journal")
        if result.due_now:
            message = f"send {send_id} to sink {result.sink} is due now"
            if result.sink in {s.sink for s in await self.journal.stopped_sinks()}:
                message += f", but sink {result.sink} is stopped: resume it first"
        else:
            message = (
                f"send {send_id} is {result.state.value}, not waiting: to send it again,"
                f" replay its event {result.event_id}"
            )
        return RetryNowOut(
            send_id=result.send_id,
            delivery_id=result.delivery_id,
            event_id=result.event_id,
            sink=result.sink,
            state=result.state.value,
            due_now=result.due_now,
            message=message,
        )

    async def stop_sink(self, sink: str, *, reason: str, actor: str) -> SinkActionOut:
        self._configured(sink, NotFound)
        already = sink in {s.sink for s in await self.journal.stopped_sinks()}
        if not already:
            await self.journal.stop_sink(sink, reason)
            detail = {"reason": reason}
            await self.journal.record_action(actor, "stop-sink", sink=sink, detail=detail)
        message = f"sink {sink} was already stopped" if already else f"stopped sink {sink}"
        return SinkActionOut(sink=sink, stopped=True, changed=not already, message=message)

    async def resume_sink(self, sink: str, *, actor: str) -> SinkActionOut:
        resumed = await self.journal.resume_sink(sink)
        if resumed:
            await self.journal.record_action(actor, "resume-sink", sink=sink)
            message = f"resumed sink {sink}: its waiting events go out now"
        else:
            message = f"sink {sink} is not stopped"
        return SinkActionOut(sink=sink, stopped=False, changed=resumed, message=message)

    async def purge_task(self, task_id: str, *, actor: str) -> PurgeOut:
        result = await self.journal.purge_task(task_id, actor=actor)
        elsewhere = ", ".join(f"{sink} ({n})" for sink, n in result.delivered_to.items())
        routed = len(result.deliveries) - result.unrouted
        message = (
            f"erased {len(result.deliveries)} deliveries of task {task_id} from the journal"
            f" ({routed} routed, {result.unrouted} never routed), {result.events} events,"
            f" {result.sends} sends, {result.attempts} attempts and {result.payload_bytes}"
            " bytes of payload"
        )
        if elsewhere:
            message += f"; copies live on in the sinks that received them: {elsewhere}"
        return PurgeOut(
            task_id=task_id,
            deliveries=result.deliveries,
            unrouted=result.unrouted,
            events=result.events,
            sends=result.sends,
            attempts=result.attempts,
            payload_bytes=result.payload_bytes,
            delivered_to=dict(result.delivered_to),
            message=message,
        )
