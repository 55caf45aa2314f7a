"""What the console's buttons do (POST): each acts through the operator service under the
session's actor, then sends the browser back to a page with the service's message.

The guard in ``app`` has already checked the session, the Origin and the form's CSRF token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from receiver.console.context import Console, Form, redirect
from receiver.console.csrf import FORM_FIELD
from receiver.console.session import Session
from receiver.errors import NotFound
from receiver.operator import listing_params, query_from

__all__ = ["cancel_replay", "replay_event", "resume_sink", "retry_now", "start_replay", "stop_sink"]

_NOT_A_FILTER = {FORM_FIELD}


async def replay_event(
    request: Request, console: Console, session: Session, form: Form
) -> Response:
    ref = request.path_params["ref"]
    done = await console.ops.replay(ref, sink=form.get("sink") or None, actor=session.actor)
    return redirect(request, console, f"/events/{ref}", done.message)


async def retry_now(request: Request, console: Console, session: Session, form: Form) -> Response:
    send_id: int = request.path_params["send_id"]
    if send_id >= 2**63:  # beyond any id a journal makes
        raise NotFound(f"no send {send_id} in the journal")
    done = await console.ops.retry_now(send_id, actor=session.actor)
    return redirect(request, console, f"/events/{done.event_id}", done.message)


async def start_replay(
    request: Request, console: Console, session: Session, form: Form
) -> Response:
    """Start the bulk replay the dry-run page showed: its filter comes back as the form."""
    query = query_from(
        listing_params((k, v) for k, v in form.multi_items() if k not in _NOT_A_FILTER)
    )
    if query.sink is not None:
        console.ops.check_sink(query.sink)
    job = await console.replays().begin(query, sink=query.sink, actor=session.actor)
    return redirect(request, console, f"/replays/{job.job_id}")


async def cancel_replay(
    request: Request, console: Console, session: Session, form: Form
) -> Response:
    job = await console.replays().cancel(request.path_params["job_id"], actor=session.actor)
    return redirect(request, console, f"/replays/{job.job_id}", f"bulk replay {job.state}")


async def stop_sink(request: Request, console: Console, session: Session, form: Form) -> Response:
    reason = (form.get("reason") or "").strip() or "stopped by an operator"
    done = await console.ops.stop_sink(
        request.path_params["name"], reason=reason[:500], actor=session.actor
    )
    return redirect(request, console, "/sinks", done.message)


async def resume_sink(request: Request, console: Console, session: Session, form: Form) -> Response:
    done = await console.ops.resume_sink(request.path_params["name"], actor=session.actor)
    return redirect(request, console, "/sinks", done.message)
