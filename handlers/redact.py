"""Redaction of credentials, in URLs and in any text hookdock logs, stores or shows.

Three layers, one implementation:

* **URLs.**  Azure-style SAS URLs (SmartDocumentor's ``exportedFileUrl``/``originalFileUrl``)
  carry their credential in the query string.  Whenever a URL is logged or shown we keep the
  parameters that help a person debug (expiry, permissions, version) and replace every other
  value, and the user info.
* **Known values.**  Every secret hookdock holds or derives (tokens, passwords, HMAC and
  Standard Webhooks secrets, S3 keys and session tokens, the ``Basic`` value aiohttp makes of
  a URL's user info) is registered in ``SECRETS`` when its config loads, and scrubbed from
  any text, whichever library wrote it: an endpoint that echoes request headers, a client
  error that quotes its request.
* **Shapes.**  What a credential looks like where its value is not known beforehand (a
  session token from the environment, a signature botocore computes): ``Authorization``
  values, ``Basic``/``Bearer`` credentials, ``x-amz-security-token``, ``Signature=`` and
  ``key=value`` pairs whose key names a secret.

``redact_text`` applies all three; ``RedactingFilter`` applies it to every log record a
handler emits, arguments and traceback included.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

from handlers.vendor_time import vendor_time

__all__ = [
    "REDACTED",
    "SECRETS",
    "RedactingFilter",
    "SecretValues",
    "basic_credentials",
    "redact_json",
    "redact_text",
    "redact_url",
    "sas_expiry",
]

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
        value = _query_value(urlsplit(url).query, "se")
    except ValueError:
        return None
    return vendor_time(value)


def _query_value(query: str, name: str) -> str | None:
    """The first non-blank value of ``name`` in ``query``, as ``parse_qsl`` would give it.

    Only that one value is decoded: a SAS query has a dozen parameters, and decoding them all
    (``parse_qsl``) was most of the cost of normalizing a SmartDocumentor export.
    """
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if not equals or not value:
            continue  # parse_qsl drops blank values
        if key == name or (("%" in key or "+" in key) and unquote_plus(key) == name):
            return unquote_plus(value)
    return None


# A signature runs to the next separator; punctuation that ends the sentence around it (``sig=x:
# reason``) stays.
_SIG_IN_TEXT = re.compile(r"(?i)((?:[?&]|\b)sig=)[^&\s\"'<>]+?(?=[&\s\"'<>]|[:;,.)]+(?:\s|$)|$)")
_USERINFO_IN_TEXT = re.compile(r"(?i)(https?://)[^/@\s\"'<>]+@")


# A value runs to the next separator; as above, sentence punctuation after it stays.
_VALUE = r"""[^\s"'&,;<>(){}\[\]]+?(?=[\s"'&,;<>(){}\[\]]|[:.]+(?:\s|$)|$)"""
# An opening quote, or the b' of a logged bytes value; taken whole or not at all (``?+``), so
# that backtracking cannot leave the quote to be taken for the value.
_BYTES_QUOTE = r"""(?:(?-i:b)?["'])?+"""
# ``name: value``, ``name=value``, ``'name': b'value'`` (a logged dict of headers), and the
# canonical request botocore logs at debug level (``x-amz-security-token:value``).
_SECRET_PAIR = re.compile(
    # Not after a "/": ``POST /connect/token: HTTP 503`` names a path, not a credential.
    r"""(?i)((?<!/)\b(?:x-amz-security-token|x-amz-signature|aws_session_token|"""
    r"""aws_secret_access_key|secret_access_key|session_token|security_token|signature|"""
    r"""password|passwd|secret|token|api[_-]?key)["']?\s*[:=]\s*"""
    + _BYTES_QUOTE
    + r")(?!REDACTED)"
    + _VALUE
)
# ``Authorization: Basic dXNlcjpwYXNz``, ``Authorization: abc123``: the credential, whatever
# the scheme (AWS's is left to ``Signature=`` below, keeping the credential scope readable).
_AUTHORIZATION = re.compile(
    r"""(?i)(\b(?:proxy-)?authorization["']?\s*[:=]\s*"""
    + _BYTES_QUOTE
    + r"(?:(?:basic|bearer|digest)[ \t]+)?+)(?!REDACTED)(?!aws4-hmac-sha256\b)"
    + _VALUE
)
# ``Basic dXNlcjpwYXNz`` or ``Bearer eyJ...`` anywhere else.  A credential has a digit or one
# of ``+/=`` in it, which words do not: "Basic authentication failed" stays as it is.
_SCHEME_CREDENTIAL = re.compile(
    r"(?i)(\b(?:basic|bearer|digest)[ \t]+)(?!REDACTED)"
    r"(?=[A-Za-z0-9+/=._~-]*[0-9+/=])[A-Za-z0-9+/=._~-]{8,}"
)
# Every shape above needs one of these words in the text (case aside), or a URL with user info:
# most lines (an id, a route, a count) have none, and a few substring tests then spare them the
# five substitutions (one case-insensitive regex of these words costs as much as two of them).
_SHAPE_WORDS = (
    "sig=",
    "authorization",
    "basic",
    "bearer",
    "digest",
    "token",
    "signature",
    "secret",
    "passw",
    "api",
)


def _may_hold_shape(text: str) -> bool:
    lowered = text.lower()
    return ("://" in text and "@" in text) or any(word in lowered for word in _SHAPE_WORDS)


_MIN_SECRET = 4
"""Shorter values are not scrubbed by value: they would garble ordinary text."""


class SecretValues:
    """Secret values, scrubbed by value from any text (``redact_text``).

    Each value is kept with the forms it travels in: percent-encoded (in a URL) and, for a
    Standard Webhooks secret, its base64 key without the ``whsec_`` prefix.
    """

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        forms: set[str] = set()
        for value in values:
            if not value:
                continue
            forms.update({value, quote(value, safe=""), value.removeprefix("whsec_")})
        forms = {form for form in forms if len(form) >= _MIN_SECRET}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            # Longest first, so a secret that contains another is scrubbed whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def clear(self) -> None:
        """Forget every value (for tests)."""
        with self._lock:
            self._values = frozenset()
            self._pattern = None


SECRETS = SecretValues()
"""The process's registry: sinks and the host add what they hold when their config loads."""


def basic_credentials(username: str, password: str) -> str:
    """The ``Basic`` value an HTTP client sends for these credentials (as aiohttp makes it)."""
    return base64.b64encode(f"{username}:{password}".encode("latin-1", "replace")).decode()


def redact_text(text: str) -> str:
    """Redact known secrets, SAS signatures, URL user info and credential-shaped values in
    free text such as an error message or a log line."""
    text = SECRETS.scrub(text)
    if not _may_hold_shape(text):
        return text
    text = _SIG_IN_TEXT.sub(rf"\1{REDACTED}", text)
    text = _USERINFO_IN_TEXT.sub(rf"\1{REDACTED}@", text)
    text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    text = _SCHEME_CREDENTIAL.sub(rf"\1{REDACTED}", text)
    return _SECRET_PAIR.sub(rf"\1{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Redacts every record a handler emits, whichever library logged it (``redact_text``).

    The message is formatted here, once, with its arguments, and a traceback is formatted
    and redacted too: a handler's formatter then prints what this filter left.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_hookdock_redacted", False):
            return True  # a second handler: already done
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: keep the record, show the raw msg
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._hookdock_redacted = True
        return True


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
