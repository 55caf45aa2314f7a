"""Secrets scrubbed from any text and any log record, whichever library wrote it."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from handlers.redact import (
    SECRETS,
    RedactingFilter,
    _may_hold_shape,
    basic_credentials,
    redact_text,
    sas_expiry,
)
from receiver.config import parse_config
from receiver.secrets import register_config_secrets, secrets_of

TOKEN = "FQoGZXIvYXdzEBYaDHsessiontoken0123456789"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    SECRETS.clear()
    yield
    SECRETS.clear()


SHAPES = [
    ("Authorization: Basic dXNlcjpwYXNzd29yZA== then", "Authorization: Basic REDACTED then"),
    ("authorization: bearer abc.def.ghi", "authorization: bearer REDACTED"),
    ("Authorization: abcdef123456", "Authorization: REDACTED"),
    (f"x-amz-security-token:{TOKEN}\nhost:h", "x-amz-security-token:REDACTED\nhost:h"),
    (
        f"{{'X-Amz-Security-Token': b'{TOKEN}', 'Authorization': b'AWS4-HMAC-SHA256"
        " Credential=AKID/20260101/eu/s3/aws4_request, SignedHeaders=host, Signature=0a1b2c'}",
        "{'X-Amz-Security-Token': b'REDACTED', 'Authorization': b'AWS4-HMAC-SHA256"
        " Credential=AKID/20260101/eu/s3/aws4_request, SignedHeaders=host,"
        " Signature=REDACTED'}",
    ),
    ("Signature:\n0a1b2c3d4e", "Signature:\nREDACTED"),
    ('{"password": "hunter22"}', '{"password": "REDACTED"}'),
    ("https://user:pw@host/x", "https://REDACTED@host/x"),
    ("host;x-amz-date;x-amz-security-token", "host;x-amz-date;x-amz-security-token"),
    ("the token is fine", "the token is fine"),
    ("authorization: Basic REDACTED x", "authorization: Basic REDACTED x"),
    ("the token provided is wrong", "the token provided is wrong"),
    ("Basic authentication failed", "Basic authentication failed"),
    (
        "proxy-authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "proxy-authorization: Basic REDACTED",
    ),
    ("sent Bearer eyJhbGciOiJIUzI1NiJ9.e30 along", "sent Bearer REDACTED along"),
    (
        "GET https://a.blob/x?sv=1&SIG=abc%2F HTTP/1.1",
        "GET https://a.blob/x?sv=1&SIG=REDACTED HTTP/1.1",
    ),
    ("API-KEY=k3y", "API-KEY=REDACTED"),
]


@pytest.mark.parametrize(("text", "expected"), SHAPES)
def test_credential_shapes_are_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(("text", "expected"), [s for s in SHAPES if s[0] != s[1]])
def test_the_quick_check_lets_no_shape_through(text: str, expected: str) -> None:
    # The shortcut for lines without a credential word must see every line the full pass
    # changes, in any letter case.
    for variant in (text, text.upper(), text.lower()):
        assert _may_hold_shape(variant), variant


def test_a_line_without_credentials_passes_unchanged() -> None:
    line = "delivered event 01J9-0 (route sd-text) to sink archive"
    assert not _may_hold_shape(line)
    assert redact_text(line) == line


def test_known_values_are_redacted_in_every_form() -> None:
    SECRETS.add("pa ss/word", "whsec_c2VjcmV0LWtleS1ieXRlcw==", None, "abc")
    assert redact_text("x pa ss/word y") == "x REDACTED y"
    assert redact_text("q=pa%20ss%2Fword") == "q=REDACTED"
    assert redact_text("key c2VjcmV0LWtleS1ieXRlcw== used") == "key REDACTED used"
    assert redact_text("abc stays: too short to scrub by value") == (
        "abc stays: too short to scrub by value"
    )


def record(logger: str, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(logger, logging.DEBUG, __file__, 1, msg, args, exc_info)


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    SECRETS.add(TOKEN)
    canonical = record(
        "botocore.auth", "CanonicalRequest:\n%s", f"PUT\n/k\n\nx-amz-security-token:{TOKEN}\n"
    )
    assert RedactingFilter().filter(canonical)
    out = logging.Formatter("%(message)s").format(canonical)
    assert TOKEN not in out and "x-amz-security-token:REDACTED" in out
    failing = record("aiohttp.client", "request failed", exc=True)
    assert RedactingFilter().filter(failing)
    out = logging.Formatter("%(message)s").format(failing)
    assert "RuntimeError: failed with REDACTED" in out and TOKEN not in out
    # A second handler's filter leaves the record as the first one made it.
    assert RedactingFilter().filter(failing)
    assert logging.Formatter("%(message)s").format(failing) == out


def test_a_bad_format_string_from_a_library_still_logs_redacted() -> None:
    broken = record("some.lib", "value %s %s", TOKEN)  # one argument short
    SECRETS.add(TOKEN)
    assert RedactingFilter().filter(broken)
    assert TOKEN not in broken.getMessage()


def test_every_secret_a_config_holds_or_implies_is_found(tmp_path: Path) -> None:
    config = parse_config(
        {
            "routes": [
                {
                    "name": "r",
                    "source": "smartdocumentor.text_document",
                    "auth": {"type": "basic", "username": "u", "password": "route-pass"},
                    "sinks": ["h", "b"],
                }
            ],
            "sinks": {
                "h": {
                    "type": "http",
                    "url": "https://hook:p%40ss-word@example.com/x",
                    "headers": {"X-Api-Key": "api-key-value"},
                    "secret": "whsec_c2VjcmV0LWtleS1ieXRlcw==",
                },
                "b": {
                    "type": "thirdparty:Sink",
                    "nested": {"client_secret": "third-party"},
                    "dsn": "postgresql://app:db-pass-1@127.0.0.1/x",
                },
            },
        },
        base_dir=tmp_path,
    )
    found = set(secrets_of(config))
    assert {
        "route-pass",
        basic_credentials("u", "route-pass"),
        "p@ss-word",
        basic_credentials("hook", "p@ss-word"),
        "api-key-value",
        "whsec_c2VjcmV0LWtleS1ieXRlcw==",
        "third-party",
        "db-pass-1",
    } <= found
    register_config_secrets(config)
    assert redact_text("sent Basic-less " + basic_credentials("hook", "p@ss-word")) == (
        "sent Basic-less REDACTED"
    )


@pytest.mark.parametrize(
    "query",
    [
        "sv=2022-11-02&se=2026-09-10T08%3A15%3A00Z&sr=b&sig=abc%2B",
        "se=&se=2026-01-01T00:00:00Z",
        "s%65=2026-02-03T04%3A05%3A06%2B01%3A00&se=2027-01-01",
        "sp=r&se",
        "se=2026-01-01+00:00:00",
        "a=1&&b=2",
        "se=not-a-date",
        "",
    ],
)
def test_the_sas_expiry_is_the_first_se_parse_qsl_finds(query: str) -> None:
    url = f"https://a.blob.core.windows.net/c/f.pdf?{query}"
    first = next((v for k, v in parse_qsl(query) if k == "se"), None)
    expected = None
    if first is not None:
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(first.replace("Z", "+00:00"))
            expected = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    assert sas_expiry(url) == expected
