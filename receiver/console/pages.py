"""The console's pages (GET): each reads through the operator service and renders a template.

A page asked for by ``console.js`` with the live header gets only its live part, so new
events and changed states appear without a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from receiver.console.charts import charts
from receiver.console.context import Console, Form, render
from receiver.console.session import Session
from receiver.errors import BadRequest
from receiver.operator import listing_params, query_from
from receiver.operator.models import EventPageOut
from receiver.operator.service import ACTIVITY_WINDOWS

__all__ = ["batches", "dead", "event", "events", "overview", "replay", "replay_preview", "sinks"]

FILTERS = (
    ("since", "Since (UTC)"),
    ("until", "Until (UTC)"),
    ("route", "Route"),
    ("vendor", "Vendor"),
    ("kind", "Kind"),
    ("sink", "Sink"),
    ("taskId", "Task id"),
    ("batchId", "Batch id"),
    ("workspaceId", "Workspace id"),
    ("externalId", "External id"),
    ("q", "Text in the name"),
)
"""The events page's filter fields: the admin API's parameter names, so a page's URL and an
API call share their query string."""
STATES = ("pending", "delivered", "dead")
OVERVIEW_REFRESH_MS = 15_000
"""The overview counts a whole window of the journal: it refreshes less often than a list."""


async def overview(request: Request, console: Console, session: Session, form: Form) -> Response:
    window = request.query_params.get("window", "6h")
    ops = console.ops
    activity = await console.recent.get(("activity", window), lambda: ops.activity(window))
    sink_list = await ops.sinks()
    groups = await ops.dead_groups()
    batch_list = await console.recent.get("batches", ops.batches)
    return render(
        request,
        console,
        session,
        "overview.html",
        refresh=OVERVIEW_REFRESH_MS,
        window=window,
        windows=list(ACTIVITY_WINDOWS),
        charts=charts(activity),
        sinks=sink_list,
        stopped=[s for s in sink_list if s.stopped],
        dead_groups=groups,
        pollers=await ops.pollers(),
        batches=[b for b in batch_list if b.pending],
    )


def _link(params: Mapping[str, object], **changes: object) -> str:
    merged = {**params, **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        if value is None or value == "":
            continue
        values = value if isinstance(value, list) else [value]
        pairs += [(key, str(v)) for v in values]
    return "?" + urlencode(pairs)


async def events(request: Request, console: Console, session: Session, form: Form) -> Response:
    params = listing_params(request.query_params.multi_items())
    error = None
    result: EventPageOut | None = None
    try:
        result = await console.ops.events(query_from(params))
    except BadRequest as exc:
        error = exc.message
    shown = {k: v for k, v in params.items() if k not in ("cursor", "pageNumber")}
    number = int(params.get("pageNumber", 1)) if error is None else 1
    return render(
        request,
        console,
        session,
        "events.html",
        status=400 if error else 200,
        filters=FILTERS,
        states=STATES,
        params=params,
        chosen_states=params.get("state", []),
        error=error,
        page=result,
        previous_link=_link(shown, pageNumber=number - 1) if number > 1 else None,
        next_link=_link(shown, pageNumber=number + 1) if result and result.has_next_page else None,
        replay_link=_link({k: v for k, v in shown.items() if k != "pageSize"}),
    )


async def event(request: Request, console: Console, session: Session, form: Form) -> Response:
    detail = await console.ops.event(request.path_params["ref"])
    return render(request, console, session, "event.html", d=detail)


async def dead(request: Request, console: Console, session: Session, form: Form) -> Response:
    groups = await console.ops.dead_groups()
    by_sink: dict[str, list[tuple[str, int]]] = {}
    for group in groups:
        by_sink.setdefault(group.sink, []).append((group.code, group.dead))
    return render(
        request,
        console,
        session,
        "dead.html",
        by_sink={sink: (sum(n for _, n in codes), codes) for sink, codes in by_sink.items()},
        replay_link=lambda sink: _link({"sink": sink, "state": "dead"}),
    )


async def replay_preview(
    request: Request, console: Console, session: Session, form: Form
) -> Response:
    """The dry run: how many events the filter matches, and the button that replays them."""
    params = listing_params(request.query_params.multi_items())
    query = query_from(params)
    to = query.sink
    counted = await console.ops.bulk_replay(query, sink=to, actor=session.actor, dry_run=True)
    hidden = [
        (key, str(v))
        for key, value in params.items()
        if key not in ("cursor", "pageNumber", "pageSize", "count")
        for v in (value if isinstance(value, list) else [value])
    ]
    return render(
        request,
        console,
        session,
        "replay_preview.html",
        matched=counted.matched,
        hidden=hidden,
        to=to,
        described=", ".join(f"{k}={v}" for k, v in hidden) or "every event",
    )


async def replay(request: Request, console: Console, session: Session, form: Form) -> Response:
    job = await console.ops.replay_job(request.path_params["job_id"])
    percent = (
        100 if job.state == "done" else (100 * job.replayed // job.matched if job.matched else 0)
    )
    return render(request, console, session, "replay.html", job=job, percent=percent)


async def sinks(request: Request, console: Console, session: Session, form: Form) -> Response:
    return render(request, console, session, "sinks.html", sinks=await console.ops.sinks())


async def batches(request: Request, console: Console, session: Session, form: Form) -> Response:
    return render(request, console, session, "batches.html", batches=await console.ops.batches())
