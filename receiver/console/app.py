"""The console as an ASGI app to mount at ``/admin``: its routes, the guard in front of every
page and action, the login, and the static files shipped in the package.

Without a session a page sends the browser to the login (and back after it); an action is
refused (401).  Every action must also pass ``csrf.check_action``.  A failure becomes a page
with the status and message the admin API would answer (``responses.operator_failure``: an
``OperatorError``'s own, 503 while the journal cannot answer, else a logged 500 showing no
detail).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, quote

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.datastructures import ImmutableMultiDict
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from receiver.bounded_body import read_bounded
from receiver.bulk_replays import BulkReplays
from receiver.console import actions, pages
from receiver.console.context import Console, Form, Handler, base_path, render
from receiver.console.csrf import check_action, check_origin
from receiver.console.recent import Recent
from receiver.console.security import SecureHeaders
from receiver.console.session import COOKIE, Session, Sessions
from receiver.errors import BadRequest, OperatorError, Unauthorized
from receiver.operator import Operator
from receiver.responses import operator_failure

__all__ = ["console_app"]

MAX_FORM_BYTES = 64 * 1024
RECENT_SECONDS = 10.0
"""How long the overview's window counts are shared between open consoles."""
STATIC = Path(__file__).parent / "static"

Endpoint = Callable[[Request], Awaitable[Response]]


async def _form(request: Request) -> Form:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("a console action is a form: application/x-www-form-urlencoded")
    raw = await read_bounded(request, MAX_FORM_BYTES, "form")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not UTF-8 urlencoded fields") from None
    return ImmutableMultiDict(pairs)


def _local_next(base: str, wanted: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if (
        wanted
        and wanted.startswith(f"{base}/")
        and not wanted.startswith("//")
        and not any(c in wanted for c in "\\\r\n")
    ):
        return wanted
    return f"{base}/"


def _cookie_path(request: Request) -> str:
    return base_path(request) or "/"


def console_app(
    operator: Operator,
    tokens: Sequence[SecretStr],
    replays: Callable[[], BulkReplays],
    session_seconds: int,
) -> ASGIApp:
    console = Console(operator, replays, Sessions(tokens, session_seconds), Recent(RECENT_SECONDS))

    def _failed(request: Request, session: Session | None, exc: Exception) -> Response:
        status, message, headers = operator_failure(
            exc, f"the console's {request.method} {request.url.path}"
        )
        response = render(
            request, console, session, "error.html", status=status, message=message, code=status
        )
        response.headers.update(
            {k: v for k, v in (headers or {}).items() if k != "WWW-Authenticate"}
        )
        return response

    def guarded(handler: Handler, *, action: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            session = console.sessions.read(request.cookies.get(COOKIE))
            try:
                if session is None:
                    if action:
                        raise Unauthorized("log in first: this console action needs a session")
                    wanted = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    where = f"{base_path(request)}/login?next={quote(wanted, safe='')}"
                    return RedirectResponse(where, status_code=303)
                form: Form = ImmutableMultiDict()
                if action:
                    form = await _form(request)
                    check_action(request.headers, form, session, console.sessions)
                return await handler(request, console, session, form)
            except Exception as exc:
                return _failed(request, session, exc)

        return endpoint

    async def login_page(request: Request) -> Response:
        return render(
            request,
            console,
            None,
            "login.html",
            next=_local_next(base_path(request), request.query_params.get("next")),
            problem=None,
        )

    async def login(request: Request) -> Response:
        base = base_path(request)
        try:
            check_origin(request.headers)
            form = await _form(request)
        except OperatorError as exc:
            return _failed(request, None, exc)
        made = console.sessions.login(form.get("token", ""), form.get("who", ""))
        target = _local_next(base, form.get("next"))
        if made is None:
            return render(
                request, console, None, "login.html", status=401, next=target,
                problem="That is not one of the [admin] tokens.",
            )  # fmt: skip
        _, cookie = made
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=console.sessions.max_age,
            path=_cookie_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request, console: Console, session: Session, form: Form) -> Response:
        response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
        response.delete_cookie(COOKIE, path=_cookie_path(request), httponly=True, samesite="strict")
        return response

    routes: list[Route | Mount] = [
        Route("/", guarded(pages.overview), methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(logout, action=True), methods=["POST"]),
        Route("/events", guarded(pages.events), methods=["GET"]),
        Route("/events/{ref}", guarded(pages.event), methods=["GET"]),
        Route("/events/{ref}/replay", guarded(actions.replay_event, action=True), methods=["POST"]),
        Route(
            "/sends/{send_id:int}/retry", guarded(actions.retry_now, action=True), methods=["POST"]
        ),
        Route("/dead", guarded(pages.dead), methods=["GET"]),
        Route("/replays/new", guarded(pages.replay_preview), methods=["GET"]),
        Route("/replays", guarded(actions.start_replay, action=True), methods=["POST"]),
        Route("/replays/{job_id}", guarded(pages.replay), methods=["GET"]),
        Route(
            "/replays/{job_id}/cancel",
            guarded(actions.cancel_replay, action=True),
            methods=["POST"],
        ),
        Route("/sinks", guarded(pages.sinks), methods=["GET"]),
        Route("/sinks/{name}/stop", guarded(actions.stop_sink, action=True), methods=["POST"]),
        Route("/sinks/{name}/resume", guarded(actions.resume_sink, action=True), methods=["POST"]),
        Route("/batches", guarded(pages.batches), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "no such console page" if status == 404 else "that method is not allowed here"
        return render(
            request, console, None, "error.html", status=status, message=message, code=status
        )

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    return SecureHeaders(app)
