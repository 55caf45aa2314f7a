"""What every console handler is given: the operator service, the bulk replays, the sessions;
and how a page is rendered with what every page shows (who is logged in, the flash message,
the form token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.bulk_replays import BulkReplays
from receiver.console.recent import Recent
from receiver.console.render import page
from receiver.console.session import FLASH_COOKIE, Session, Sessions
from receiver.operator import Operator

__all__ = ["LIVE_HEADER", "Console", "Form", "Handler", "base_path", "redirect", "render"]

LIVE_HEADER = "x-console-live"
"""Sent by ``console.js`` when it refreshes a page: only the page's live part is answered."""


@dataclass(frozen=True, slots=True)
class Console:
    ops: Operator
    replays: Callable[[], BulkReplays]
    """This process's share of the bulk replays (they live in the journal)."""
    sessions: Sessions
    recent: Recent


Form = ImmutableMultiDict[str, str]
"""A POST's urlencoded fields (empty for a GET)."""

Handler = Callable[[Request, Console, Session, Form], Awaitable[Response]]


def base_path(request: Request) -> str:
    """Where the console is mounted (``/admin``)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(
    request: Request,
    console: Console,
    session: Session | None,
    template: str,
    status: int = 200,
    **context: Any,
) -> Response:
    flash = console.sessions.read_flash(request.cookies.get(FLASH_COOKIE))
    response = page(
        template,
        {
            "base": base_path(request),
            "session": session,
            "flash": flash,
            "fragment": request.headers.get(LIVE_HEADER) == "1",
            "sink_names": sorted(console.ops.sink_types),
            **context,
        },
        status,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=base_path(request) or "/")
    return response


def redirect(request: Request, console: Console, path: str, message: str | None = None) -> Response:
    """303 to ``path`` (under the console), carrying ``message`` to the page shown there."""
    base = base_path(request)
    response = RedirectResponse(f"{base}{path}", status_code=303)
    if message is not None:
        response.set_cookie(
            FLASH_COOKIE,
            console.sessions.flash(message),
            max_age=60,
            path=base or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response
