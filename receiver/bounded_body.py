"""Reading an operator request's body (the admin API's JSON, the console's forms) up to a cap.

A declared ``Content-Length`` over the cap is refused before anything is read; a body that
turns out longer than the cap (chunked, or a lying header) is refused once read.
"""

from __future__ import annotations

from starlette.requests import Request

from receiver.errors import BadRequest

__all__ = ["read_bounded"]


async def read_bounded(request: Request, limit: int, what: str) -> bytes:
    """The body, at most ``limit`` bytes; ``BadRequest`` naming ``what`` ("body", "form")."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the {what} is over {limit} bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise BadRequest(f"the {what} is over {limit} bytes")
    return raw
