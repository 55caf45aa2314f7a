"""The one place where exceptions become HTTP responses, for ingest and the rest of the app.

Every error body of the webhooks is one short plain-text line, ``hookdock: <what is wrong>``:
SmartDocumentor shows it to the reviewer on the document.  The admin API answers JSON,
``{"error": "<what is wrong>"}`` (``api_error_response``).  Never a traceback, never a secret.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response

from receiver.errors import IngestError, JournalError, OperatorError, PayloadTooLarge

__all__ = [
    "api_error_response",
    "error_response",
    "json_response",
    "operator_failure",
    "raw_response",
    "text",
]

log = logging.getLogger("hookdock")

_HTTP_MESSAGES = {404: "not found", 405: "method not allowed"}


def text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(f"hookdock: {message}\n", status_code=status, headers=headers)


def raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for the protocol layer: a refusal
    made before the app has a request to answer (headers too slow or too large, a connection
    over the cap, bytes that are not HTTP).  The same one-line body as every other answer."""
    body = f"hookdock: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def error_response(exc: BaseException, where: str = "") -> Response:
    """The response for ``exc``; unexpected errors are logged (with ``where``) and answer 500."""
    if isinstance(exc, PayloadTooLarge):
        # Without "Connection: close" the server would drain the rest of the body to keep the
        # connection alive; closing it is what makes the cap a cap.
        return text(exc.status, exc.message, {"Connection": "close"})
    if isinstance(exc, IngestError):
        return text(exc.status, exc.message)
    if isinstance(exc, JournalError):
        log.error("journal write failed, answered 503: %s", exc)
        return text(503, "cannot store the delivery right now, please retry", {"Retry-After": "5"})
    if isinstance(exc, HTTPException):
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail).lower())
        return text(exc.status_code, message, dict(exc.headers or {}))
    log.error("unexpected error in %s", where or "a request", exc_info=exc)
    return text(500, "internal error, the delivery was not stored")


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _api_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(orjson.dumps({"error": message}), status, headers)


def operator_failure(exc: BaseException, where: str = "") -> tuple[int, str, dict[str, str] | None]:
    """The status, message and headers the operators' side (the admin API and the console)
    answers ``exc`` with; unexpected errors are logged and answer 500."""
    if isinstance(exc, OperatorError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return exc.status, exc.message, headers
    if isinstance(exc, JournalError):
        log.error("admin: the journal cannot answer, answered 503: %s", exc)
        return 503, "the journal cannot answer right now, retry", {"Retry-After": "5"}
    if isinstance(exc, HTTPException):
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail).lower())
        return exc.status_code, message, dict(exc.headers or {})
    log.error("unexpected error in %s", where or "an admin request", exc_info=exc)
    return 500, "internal error", None


def api_error_response(exc: BaseException, where: str = "") -> Response:
    """The admin API's JSON answer for ``exc`` (``operator_failure``)."""
    return _api_error(*operator_failure(exc, where))
