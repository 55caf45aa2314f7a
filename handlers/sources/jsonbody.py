"""Reading a JSON webhook body, the same way for every built-in source."""

from __future__ import annotations

from typing import Any

import orjson

from handlers.errors import PayloadRejected

__all__ = ["parse_object"]

_BOM = b"\xef\xbb\xbf"


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; ``PayloadRejected`` (400 not JSON, 422 not an object)."""
    # RFC 8259 lets a parser ignore a UTF-8 BOM, and .NET senders (SmartDocumentor,
    # SuperOffice) sometimes write one; orjson refuses it, and bouncing a delivery over it
    # would help nobody.
    raw = raw.removeprefix(_BOM)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadRejected("body is not JSON", status=400) from exc
    if not isinstance(body, dict):
        raise PayloadRejected("body is not a JSON object", status=422)
    return body
