"""``hookdock events list|show|replay|retry-now|tail`` and ``hookdock purge``: the operator
service (``receiver.operator``) for people at a terminal, and for scripts (``--json``).

Tables have labelled columns; times are shown in UTC, saying so.  Each command opens the
journal alone (no plugin, no secret), and refuses where there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from handlers.files import format_bytes
from receiver.config import ClusterConfig
from receiver.journal import SqlJournal
from receiver.operator import EventQuery, Operator, query_from
from receiver.operator.models import (
    AttemptOut,
    BulkReplayOut,
    DeliveryOut,
    EventItem,
    EventPageOut,
)
from receiver.processes import Heartbeat, new_owner

__all__ = ["actor", "register", "show", "show_time"]

OpenJournal = Callable[[argparse.Namespace], Awaitable[tuple[Operator, SqlJournal, ClusterConfig]]]
Command = Callable[[str, str], argparse.ArgumentParser]


def actor() -> str:
    """Who runs this command, for the journal's record of actions."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()} (cli)"


def show_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _cut(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


_HEADS = ("RECEIVED (UTC)", "EVENT", "STATE", "ROUTE", "KIND", "TASK", "NAME", "SENDS")


def _row(item: EventItem) -> list[str]:
    return [
        item.received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        item.event_id or f"{item.delivery_id} (no event)",
        item.state,
        item.route or "-",
        item.kind or "-",
        _cut(item.task_id, 36),
        _cut(item.display_name, 30),
        " ".join(f"{sink}:{state}" for sink, state in item.sends.items())
        or _cut(item.last_error, 60),
    ]


def _print_json(model: BaseModel | list[BaseModel]) -> None:
    if isinstance(model, list):
        print(json.dumps([m.model_dump(mode="json") for m in model], indent=2))
    else:
        print(model.model_dump_json(indent=2))


def _query(args: argparse.Namespace) -> EventQuery:
    values = {
        "since": args.since,
        "until": args.until,
        "state": args.state or [],
        "route": args.route,
        "vendor": args.vendor,
        "kind": args.kind,
        "sink": args.sink,
        "task_id": args.task,
        "batch_id": args.batch,
        "workspace_id": args.workspace,
        "external_id": args.external_id,
        "q": args.text,
        "page_size": getattr(args, "limit", 50),
        "page_number": getattr(args, "page", 1),
        "cursor": getattr(args, "cursor", None),
    }
    return query_from({k: v for k, v in values.items() if v is not None})


def _print_page(page: EventPageOut) -> None:
    if not page.items:
        print("no events match")
        return
    print(_table(_HEADS, [_row(i) for i in page.items]))
    total = "" if page.total_count is None else f" of {page.total_count}"
    line = f"page {page.page_number}: {len(page.items)}{total} events"
    if page.next_cursor:
        line += f"; next page: --page {page.page_number + 1} --cursor {page.next_cursor}"
    print(line)


def _attempt(a: AttemptOut) -> str:
    took = "" if a.duration_seconds is None else f"  {a.duration_seconds:.3f} s"
    error = f"  {a.error}" if a.error else ""
    return f"#{a.number}  {show_time(a.started_at)}  {a.outcome or 'running'}{took}{error}"


def _print_delivery(d: DeliveryOut) -> None:
    print(f"delivery {d.delivery_id}")
    fields = [
        ("state", d.state),
        ("route", d.route),
        ("source", d.source),
        ("received", show_time(d.received_at)),
        ("size", format_bytes(d.size)),
        ("last error", d.last_error or "-"),
    ]
    for label, value in fields:
        print(f"  {label:11} {value}")
    for a in d.routing_attempts:
        print(f"  routing     {_attempt(a)}")
    for e in d.events:
        event = e.event or {}
        name = f'  "{event["display_name"]}"' if event.get("display_name") else ""
        print(f"event {e.event_id}  {event.get('kind', '-')}  task {event.get('task_id')}{name}")
        for s in e.sends:
            when = ""
            if s.state == "delivered":
                when = f"  delivered {show_time(s.delivered_at)}"
            elif s.state == "pending":
                when = f"  next attempt {show_time(s.next_attempt_at)}"
            code = f"  [{s.code}]" if s.code else ""
            print(f"  -> {s.sink}  send {s.send_id}  {s.state}{code}{when}")
            if s.last_error:
                print(f"       error: {s.last_error}")
            for a in s.attempts:
                print(f"       {_attempt(a)}")
            for f in s.files:
                print(
                    f"       file {f.role}: {format_bytes(f.size)}  {f.content_type}"
                    f"  sha256 {f.sha256}  {f.filename}"
                )
    if d.actions:
        print("actions")
        for x in d.actions:
            target = f"  sink {x.sink}" if x.sink else ""
            print(f"  {show_time(x.at)}  {x.actor}  {x.action}{target}")
    print("payload (as received; credentials redacted)")
    text = d.payload if isinstance(d.payload, str) else json.dumps(d.payload, indent=2)
    print("\n".join("  " + line for line in text.splitlines()))


# ---------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace, work: Callable[[Operator], Awaitable[int]]) -> int:
    async def run() -> int:
        ops, journal, _ = await args.open_journal(args)
        try:
            return await work(ops)
        finally:
            await journal.close()

    code: int = asyncio.run(run())
    return code


def _list(args: argparse.Namespace) -> int:
    query = _query(args)

    async def work(ops: Operator) -> int:
        page = await ops.events(query)
        _print_json(page) if args.json else _print_page(page)
        return 0

    return _run(args, work)


def show(args: argparse.Namespace) -> int:
    """One delivery or event (``args.id``, either id) whole; ``args.json`` for scripts."""

    async def work(ops: Operator) -> int:
        found = await ops.event(args.id)
        _print_json(found) if args.json else _print_delivery(found)
        return 0

    return _run(args, work)


def _replay(args: argparse.Namespace) -> int:
    if (args.id is None) == (not args.all):
        print("hookdock events replay: name an id, or pass --all with filters", file=sys.stderr)
        return 2
    if args.all:
        return _replay_all(args)

    async def work(ops: Operator) -> int:
        done = await ops.replay(args.id, sink=args.sink, actor=actor())
        _print_json(done) if args.json else print(f"{done.delivery_id}: {done.message}")
        return 0

    return _run(args, work)


def _bar(job: BulkReplayOut) -> str:
    share = job.replayed / job.matched if job.matched else 1.0
    filled = "#" * min(30, int(share * 30))
    return f"\r[{filled:30}] {job.replayed} of {job.matched} events"


def _replay_all(args: argparse.Namespace) -> int:
    """Every event the filters match (``--dry-run``: the count only), as a bulk-replay job in
    the journal that this command runs, with a progress bar; Ctrl+C cancels it.  While it
    runs, this command beats like a service does: a server takes the job over if it dies."""
    query = _query(args)

    def progress(now: BulkReplayOut) -> None:
        if not args.json:
            print(_bar(now), end="", file=sys.stderr, flush=True)

    async def run() -> int:
        ops, journal, cluster = await args.open_journal(args)
        try:
            if args.dry_run:
                done = await ops.bulk_replay(query, sink=args.sink, actor=actor(), dry_run=True)
                if args.json:
                    _print_json(done)
                else:
                    print(
                        f"{done.matched} events match; run again without --dry-run to replay them"
                    )
                return 0
            owner = new_owner(cluster.node)
            beat = Heartbeat(
                journal,
                owner,
                "cli",
                every_seconds=cluster.heartbeat_seconds,
                stale_seconds=cluster.stale_seconds,
                node=cluster.node,
            )
            await beat.start()
            try:
                job = await ops.start_replay_job(query, sink=args.sink, actor=actor(), owner=owner)
                assert job.job_id is not None
                if not args.json:
                    print(f"bulk replay {job.job_id}: {job.matched} events match", file=sys.stderr)
                done = await _until_interrupted(
                    ops.run_replay_job(job.job_id, owner=owner, progress=progress),
                    lambda: ops.cancel_replay_job(job.job_id or "", actor=actor(), holder=owner),
                )
            finally:
                await beat.stop()
        finally:
            await journal.close()
        if args.json:
            _print_json(done)
            return 0 if done.state == "done" else 1
        print(file=sys.stderr)
        print(
            f"bulk replay {done.job_id} {done.state}: replayed {done.replayed} of {done.matched}"
            f" events: {done.requeued} sends go out again, {done.created} made,"
            f" {done.in_flight} left to an attempt under way, {done.rerouted} deliveries"
            " routed again"
        )
        return 0 if done.state == "done" else 1

    code: int = asyncio.run(run())
    return code


async def _until_interrupted(
    work: Awaitable[BulkReplayOut], cancel: Callable[[], Awaitable[BulkReplayOut]]
) -> BulkReplayOut:
    """``work``'s result; on Ctrl+C (or SIGTERM) the job is cancelled, and what it had done
    by then is the result."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return await cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _jobs(args: argparse.Namespace) -> int:
    async def work(ops: Operator) -> int:
        jobs = await ops.replay_jobs(args.limit)
        if args.json:
            _print_json(list(jobs))
            return 0
        if not jobs:
            print("no bulk replays")
            return 0
        heads = ("STARTED (UTC)", "JOB", "STATE", "REPLAYED", "BY", "RUNNING ON", "FILTER")
        rows = [
            [
                show_time(j.created_at).removesuffix(" UTC"),
                j.job_id or "-",
                j.state
                + (" (cancel asked)" if j.cancel_requested and j.state == "running" else ""),
                f"{j.replayed} of {j.matched}",
                j.actor or "-",
                j.running_on or "-",
                json.dumps(j.filter, separators=(",", ":")),
            ]
            for j in jobs
        ]
        print(_table(heads, rows))
        return 0

    return _run(args, work)


def _cancel(args: argparse.Namespace) -> int:
    async def work(ops: Operator) -> int:
        job = await ops.cancel_replay_job(args.job_id, actor=actor())
        if args.json:
            _print_json(job)
        elif job.state == "running":
            print(f"bulk replay {job.job_id}: asked to stop; its process stops at its next chunk")
        else:
            print(f"bulk replay {job.job_id} is {job.state}")
        return 0

    return _run(args, work)


def _retry_now(args: argparse.Namespace) -> int:
    async def work(ops: Operator) -> int:
        done = await ops.retry_now(args.send_id, actor=actor())
        _print_json(done) if args.json else print(done.message)
        return 0 if done.due_now else 1

    return _run(args, work)


def _key(item: EventItem) -> str:
    return item.event_id or item.delivery_id


def _tail(args: argparse.Namespace) -> int:
    """The latest events, then each new one as it is routed, until Ctrl+C (or SIGTERM)."""
    base = _query(args)

    async def work(ops: Operator) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        first = await ops.events(base.model_copy(update={"count": False}))
        seen = {_key(i) for i in first.items}
        shown = list(reversed(first.items))
        if not args.json:
            print(_table(_HEADS, [_row(i) for i in shown]) if shown else "waiting for events")
        else:
            for item in shown:
                print(item.model_dump_json(), flush=True)
        sys.stdout.flush()
        # New events: those received since a little before the newest seen (ids made in the
        # same millisecond may be routed out of order), not seen yet.
        since = max((i.received_at for i in first.items), default=datetime.now(UTC))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
            query = base.model_copy(
                update={"since": since - timedelta(seconds=5), "count": False, "page_size": 1000}
            )
            fresh = [i for i in (await ops.events(query)).items if _key(i) not in seen]
            for item in reversed(fresh):
                if item.event_id is None and item.state == "pending":
                    continue  # not routed yet: shown by its events in a moment
                seen.add(_key(item))
                since = max(since, item.received_at)
                print(item.model_dump_json() if args.json else "  ".join(_row(item)), flush=True)
        return 0

    return _run(args, work)


def _purge(args: argparse.Namespace) -> int:
    async def work(ops: Operator) -> int:
        done = await ops.purge_task(args.task, actor=actor())
        _print_json(done) if args.json else print(done.message)
        return 0

    return _run(args, work)


def _filters(sub: argparse.ArgumentParser, *, listing: bool = True) -> None:
    sub.add_argument("--since", help="received at or after (ISO 8601; no zone: UTC)")
    sub.add_argument("--until", help="received before (ISO 8601; no zone: UTC)")
    sub.add_argument(
        "--state",
        action="append",
        choices=["pending", "delivered", "dead", "dropped"],
        help="the event's state (with --sink: its send's); dropped: deliveries whose every"
        " event the rules dropped; repeat for several",
    )
    sub.add_argument("--route", help="the route it came in on")
    sub.add_argument("--vendor", help="the vendor (smartdocumentor)")
    sub.add_argument("--kind", help="the kind of event (text_document, transcript, ...)")
    if listing:
        sub.add_argument("--sink", help="events routed to this sink")
    sub.add_argument("--task", help="the vendor's task id")
    sub.add_argument("--batch", help="the vendor's batch id")
    sub.add_argument("--workspace", help="the vendor's workspace id")
    sub.add_argument("--external-id", help="the vendor's external id")
    sub.add_argument("--text", help="text anywhere in the display name, in any case")
    if listing:
        sub.add_argument("--limit", type=int, default=50, help="events per page (1 to 1000)")
        sub.add_argument("--json", action="store_true", help="JSON, for scripts")


def register(command: Command, open_journal: OpenJournal) -> None:
    """Add ``events`` (with its subcommands) and ``purge`` to the ``hookdock`` parser."""
    events = command("events", "find, show and replay events (either id finds one)")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")

    def sub(name: str, help: str, run: Callable[[argparse.Namespace], int]) -> Any:
        parser = actions.add_parser(name, help=help, description=help)
        parser.set_defaults(run=run, open_journal=open_journal)
        # The parent's --config and --data-dir, again, so they may follow the action too.
        parser.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
        parser.add_argument("--data-dir", default=argparse.SUPPRESS, help="embedded defaults' data")
        return parser

    listing = sub("list", "events, newest first, filtered and paged", _list)
    _filters(listing)
    listing.add_argument("--page", type=int, default=1, help="the page to show (from 1)")
    listing.add_argument("--cursor", help="the cursor a page printed, for the next one (fast)")
    show_one = sub("show", "one delivery or event: payload, events, sends, every attempt", show)
    show_one.add_argument("id", help="a delivery id (from `accepted as <id>`) or an event id")
    show_one.add_argument("--json", action="store_true", help="JSON, for scripts")
    replay = sub("replay", "send an event (or a delivery's events) again, in any state", _replay)
    replay.add_argument("id", nargs="?", help="a delivery id or an event id")
    replay.add_argument(
        "--sink",
        help="only to this sink (default: every sink it went to); with --all, also only the"
        " events routed to it, and --state is their send's to it",
    )
    replay.add_argument("--json", action="store_true", help="JSON, for scripts")
    replay.add_argument("--all", action="store_true", help="every event the filters match")
    replay.add_argument(
        "--dry-run", action="store_true", help="with --all: count them, replay nothing"
    )
    _filters(replay, listing=False)
    jobs = sub("jobs", "bulk replays, newest first, whichever process runs them", _jobs)
    jobs.add_argument("--limit", type=int, default=20, help="how many (1 to 1000)")
    jobs.add_argument("--json", action="store_true", help="JSON, for scripts")
    cancel = sub("cancel", "cancel a bulk replay (what was replayed stays replayed)", _cancel)
    cancel.add_argument("job_id", help="the job's id (see `events jobs`)")
    cancel.add_argument("--json", action="store_true", help="JSON, for scripts")
    now = sub("retry-now", "try a waiting send now (its id: see `events show`)", _retry_now)
    now.add_argument("send_id", type=int, help="the send's id")
    now.add_argument("--json", action="store_true", help="JSON, for scripts")
    tail = sub("tail", "the latest events, then new ones as they come, until Ctrl+C", _tail)
    _filters(tail)
    tail.set_defaults(limit=10)
    tail.add_argument("--interval", type=float, default=1.0, help="seconds between looks")

    purge = command("purge", "erase a task's deliveries, events and payloads from the journal")
    purge.add_argument("--task", required=True, help="the vendor's task id")
    purge.add_argument("--json", action="store_true", help="JSON, for scripts")
    purge.set_defaults(run=_purge, open_journal=open_journal)
