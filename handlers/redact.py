"""Redaction of credentials that hide inside URLs.

Azure-style SAS URLs (SmartDocumentor's ``exportedFileUrl``/``originalFileUrl``) carry their
credential in the query string.  Whenever a URL is logged or shown we keep the parameters that
help a person debug (expiry, permissions, version) and replace every other value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_json", "redact_text", "redact_url", "sas_expiry"]

REDACTED = "REDACTED"

# SAS parameters that are not secret and help a person reading a log.
_SAFE_PARAMS = frozenset({"sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "skoid", "sktid"})


def redact_url(url: str) -> str:
    """Return ``url`` with user info and every non-public query value replaced by REDACTED."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={v if k.lower() in _SAFE_PARAMS else REDACTED}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def sas_expiry(url: str) -> datetime | None:
    """The ``se`` (signed expiry) of a SAS URL as an aware UTC datetime, if present and valid."""
    try:
        pairs = parse_qsl(urlsplit(url).query)
    except ValueError:
        return None
    for key, value in pairs:
        if key == "se":
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# A signature runs to the next separator; punctuation that ends the sentence around it (``sig=x:
# reason``) stays.
_SIG_IN_TEXT = re.compile(r"(?i)((?:[?&]|\b)sig=)[^&\s\"'<>]+?(?=[&\s\"'<>]|[:;,.)]+(?:\s|$)|$)")
_USERINFO_IN_TEXT = re.compile(r"(?i)(https?://)[^/@\s\"'<>]+@")


def redact_text(text: str) -> str:
    """Redact SAS signatures and URL user info inside free text such as an error message."""
    return _USERINFO_IN_TEXT.sub(rf"\1{REDACTED}@", _SIG_IN_TEXT.sub(rf"\1{REDACTED}", text))


def redact_json(value: Any) -> Any:
    """A JSON value with every credential a URL or a text in it may carry redacted: a string
    that is a URL as ``redact_url`` does (every query value but the public SAS ones), any
    other string as ``redact_text`` (signatures, user info).  For showing payloads."""
    if isinstance(value, str):
        if value.startswith(("http://", "https://")) and not any(c.isspace() for c in value):
            return redact_url(value)
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value
