"""The HTTP sink against a real receiver on 127.0.0.1 (tests/webhook_receiver.py), real aiohttp.

Signatures are checked by the published ``standardwebhooks`` package, inside the receiver and
again here; every status class, connection failures and timeouts are provoked for real.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from handlers.errors import (
    FileUnavailable,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkGone,
)
from handlers.event import Event, FileRef
from handlers.files import IncomingFile
from handlers.netguard import AddressRefused
from handlers.sink import FileSink
from handlers.sinks.http import HttpSink, HttpSinkConfig
from handlers.testing import SinkContract, make_event
from receiver.config import format_validation_error
from tests.conftest import free_port
from tests.webhook_receiver import Reply, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
AUTH_VALUE = "Bearer hdr-" + secrets.token_hex(16)
URL_CODE = "code-" + secrets.token_hex(12)
LEAKABLE = [SECRET, SECRET.removeprefix("whsec_"), AUTH_VALUE, URL_CODE]
HOOK = "/hook"
# The receiver runs on 127.0.0.1, which the SSRF guard refuses unless opted in.
LOCAL = ["127.0.0.1/32"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as receiver:
        yield receiver


MakeSink = Callable[..., HttpSink]


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    made: list[HttpSink] = []

    def make(url: str, **options: Any) -> HttpSink:
        options.setdefault("secret", SECRET)
        options.setdefault("allow_networks", LOCAL)
        sink = HttpSink(HttpSinkConfig(url=url, **options))
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()


def copies_in(rx: WebhookReceiver, event: Event) -> int:
    """Stored events (one per distinct webhook-id) whose body is ``event``."""
    return sum(1 for body in rx.stored(HOOK).values() if body["event_id"] == event.event_id)


class TestHttpSinkContract(SinkContract):
    @pytest.fixture
    async def sink(self, rx: WebhookReceiver) -> AsyncIterator[HttpSink]:
        self.rx = rx
        sink = HttpSink(HttpSinkConfig(url=f"{rx.url}{HOOK}", secret=SECRET, allow_networks=LOCAL))
        yield sink
        await sink.aclose()

    async def copies(self, sink: HttpSink, event: Event) -> int:
        return copies_in(self.rx, event)

    async def stored_file(self, sink: HttpSink, event: Event, role: str) -> bytes | None:
        return self.rx.stored_files(HOOK).get(f"{event.event_id}.{role}")


# --------------------------------------------------------------------------- what is sent


@pytest.mark.anyio
async def test_signed_with_standard_webhooks_and_the_event_id(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    event = make_event()
    await make_sink(f"{rx.url}{HOOK}").deliver(event)
    [request] = rx.requests(HOOK)
    assert request.verified is True
    assert request.headers["webhook-id"] == event.event_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    # Once more, outside the receiver: the reference library accepts the request as sent.
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)
    assert rx.stored(HOOK) == {event.event_id: json.loads(event.model_dump_json())}


@pytest.mark.anyio
async def test_a_receiver_with_another_secret_refuses(make_sink: MakeSink) -> None:
    with WebhookReceiver(secret=OTHER_SECRET) as other:
        with pytest.raises(PermanentSinkError, match="401") as caught:
            await make_sink(f"{other.url}{HOOK}").deliver(make_event())
        assert [r.verified for r in other.requests(HOOK)] == [False]
        assert other.stored(HOOK) == {}
    assert type(caught.value) is PermanentSinkError


@pytest.mark.anyio
async def test_body_event_is_the_normalized_event(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    event = make_event()
    await make_sink(f"{rx.url}{HOOK}", body="event").deliver(event)
    [request] = rx.requests(HOOK)
    assert request.json() == json.loads(event.model_dump_json())
    assert request.json()["payload"] == event.payload


@pytest.mark.anyio
async def test_body_payload_is_the_vendor_payload(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    event = make_event(payload={"taskId": "t-1", "nested": {"caf\u00e9": [1, 2.5, None]}})
    await make_sink(f"{rx.url}{HOOK}", body="payload").deliver(event)
    [request] = rx.requests(HOOK)
    assert request.verified is True
    assert request.webhook_id == event.event_id
    assert request.json() == event.payload


@pytest.mark.anyio
async def test_unsigned_only_when_asked_and_still_with_an_id(make_sink: MakeSink) -> None:
    with WebhookReceiver() as plain:
        event = make_event()
        await make_sink(f"{plain.url}{HOOK}", sign=False, secret=None).deliver(event)
        [request] = plain.requests(HOOK)
    assert request.webhook_id == event.event_id
    assert "webhook-signature" not in request.headers
    assert "webhook-timestamp" not in request.headers


@pytest.mark.anyio
async def test_custom_headers_arrive(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    headers = {"Authorization": AUTH_VALUE, "X-Tenant": "acme"}
    await make_sink(f"{rx.url}{HOOK}", headers=headers).deliver(make_event())
    [request] = rx.requests(HOOK)
    assert request.headers["authorization"] == AUTH_VALUE
    assert request.headers["x-tenant"] == "acme"
    assert request.verified is True


@pytest.mark.parametrize(
    "name",
    ["Content-Type", "content-type", "webhook-id", "Webhook-Timestamp", "webhook-signature",
     "webhook-anything", "Content-Length", "Host", "Content-Disposition", "hookdock-file-role",
     "Hookdock-Anything"],
)  # fmt: skip
def test_custom_headers_cannot_override_reserved_ones(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HttpSinkConfig(url="http://127.0.0.1/hook", secret=SECRET, headers={name: AUTH_VALUE})
    [line] = format_validation_error(caught.value, prefix="sinks.out")
    assert line.startswith("sinks.out.headers: ")
    assert repr(name) in line
    assert AUTH_VALUE not in line


# --------------------------------------------------------------------------- answers


async def deliver_answered(
    rx: WebhookReceiver, make_sink: MakeSink, reply: int | Reply, **options: Any
) -> SinkError | None:
    rx.script(HOOK, [reply])
    try:
        await make_sink(f"{rx.url}{HOOK}", **options).deliver(make_event())
    except SinkError as exc:
        return exc
    return None


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_delivered(rx: WebhookReceiver, make_sink: MakeSink, status: int) -> None:
    assert await deliver_answered(rx, make_sink, status) is None
    assert [r.status for r in rx.requests(HOOK)] == [status]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, PermanentSinkError),
        (401, PermanentSinkError),
        (404, PermanentSinkError),
        (422, PermanentSinkError),
        (408, RetryableSinkError),
        (429, RetryableSinkError),
        (500, RetryableSinkError),
        (502, RetryableSinkError),
        (503, RetryableSinkError),
        (410, SinkGone),
    ],
)
async def test_status_classes(
    rx: WebhookReceiver, make_sink: MakeSink, status: int, kind: type[SinkError]
) -> None:
    reply = Reply(status, body=f"because {status}".encode())
    exc = await deliver_answered(rx, make_sink, reply)
    assert type(exc) is kind
    message = str(exc)
    assert f"answered {status}" in message
    assert f"{rx.url}{HOOK}" in message
    assert f"because {status}" in message
    # A refusal is counted by its status (hookdock status, metrics); retries and 410 have none.
    assert exc.code == (f"http_{status}" if kind is PermanentSinkError else None)
    if kind is RetryableSinkError:
        assert isinstance(exc, RetryableSinkError)
        assert exc.retry_after is None


@pytest.mark.anyio
async def test_410_gone_says_so(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    exc = await deliver_answered(rx, make_sink, 410)
    assert isinstance(exc, SinkGone)
    assert "answered 410 Gone" in str(exc)
    assert not exc.retryable


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(
    rx: WebhookReceiver, make_sink: MakeSink, status: int
) -> None:
    reply = Reply(status, headers={"Location": f"{rx.url}/elsewhere?sig=abcdef"})
    exc = await deliver_answered(rx, make_sink, reply)
    assert type(exc) is PermanentSinkError
    assert f"answered {status}" in str(exc)
    assert "not followed" in str(exc)
    assert "sig=REDACTED" in str(exc)
    assert "abcdef" not in str(exc)
    assert len(rx.requests(HOOK)) == 1
    assert rx.requests("/elsewhere") == []


@pytest.mark.anyio
async def test_429_retry_after_seconds(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    exc = await deliver_answered(rx, make_sink, Reply(429, headers={"Retry-After": "7"}))
    assert isinstance(exc, RetryableSinkError)
    assert exc.retry_after == 7.0


@pytest.mark.anyio
async def test_429_retry_after_http_date(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    exc = await deliver_answered(rx, make_sink, Reply(429, headers={"Retry-After": when}))
    assert isinstance(exc, RetryableSinkError)
    assert exc.retry_after is not None
    assert 100 <= exc.retry_after <= 121


@pytest.mark.anyio
async def test_503_retry_after_and_a_past_date_is_zero(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    exc = await deliver_answered(rx, make_sink, Reply(503, headers={"Retry-After": "30"}))
    assert isinstance(exc, RetryableSinkError)
    assert exc.retry_after == 30.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    exc = await deliver_answered(rx, make_sink, Reply(503, headers={"Retry-After": past}))
    assert isinstance(exc, RetryableSinkError)
    assert exc.retry_after == 0.0
    exc = await deliver_answered(rx, make_sink, Reply(503, headers={"Retry-After": "soon"}))
    assert isinstance(exc, RetryableSinkError)
    assert exc.retry_after is None


@pytest.mark.anyio
async def test_retries_then_delivers(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    rx.script(HOOK, [503, 503, 200])
    sink = make_sink(f"{rx.url}{HOOK}")
    event = make_event()
    for _ in range(2):
        with pytest.raises(RetryableSinkError):
            await sink.deliver(event)
    await sink.deliver(event)
    assert [r.status for r in rx.requests(HOOK)] == [503, 503, 200]
    assert {r.webhook_id for r in rx.requests(HOOK)} == {event.event_id}
    assert copies_in(rx, event) == 1


@pytest.mark.anyio
async def test_the_quoted_answer_is_short_and_scrubbed(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    # An endpoint that echoes the request back: neither the header nor the secret may follow.
    echo = f"auth={AUTH_VALUE} key={SECRET} url=https://x.test/f?sig=s1gnature " + "x" * 5000
    exc = await deliver_answered(
        rx, make_sink, Reply(400, body=echo.encode()), headers={"Authorization": AUTH_VALUE}
    )
    message = str(exc)
    assert "answered 400" in message
    assert "sig=REDACTED" in message
    for secret in LEAKABLE:
        assert secret not in message
    assert "x" * 50 in message
    assert "x" * 201 not in message
    assert len(message) < 400


# --------------------------------------------------------------------------- failures on the way


@pytest.mark.anyio
async def test_connection_refused_is_retryable(make_sink: MakeSink) -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}{HOOK}")
    with pytest.raises(RetryableSinkError, match="cannot connect") as caught:
        await sink.deliver(make_event())
    assert caught.value.retry_after is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("read_timeout_seconds", r"sent nothing for 0\.3s"),
        ("total_timeout_seconds", r"did not answer within 0\.3s"),
    ],
)
async def test_read_and_total_timeouts_are_retryable(
    rx: WebhookReceiver, make_sink: MakeSink, option: str, message: str
) -> None:
    rx.script(HOOK, [Reply(200, delay=10)])
    sink = make_sink(f"{rx.url}{HOOK}", **{option: 0.3})
    started = time.monotonic()
    with pytest.raises(RetryableSinkError, match=message):
        await sink.deliver(make_event())
    assert time.monotonic() - started < 5


@pytest.mark.anyio
async def test_secrets_never_in_messages_or_reprs(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    options: dict[str, Any] = {
        "headers": {"Authorization": AUTH_VALUE},
        "read_timeout_seconds": 0.3,
    }
    sinks = [
        make_sink(f"{rx.url}{HOOK}?code={URL_CODE}", **options),
        make_sink(
            f"http://user:{URL_CODE}@127.0.0.1:{free_port()}{HOOK}",
            headers={"X-Api-Key": AUTH_VALUE},
        ),
    ]
    rx.script(HOOK, [Reply(500, body=f"{AUTH_VALUE} {URL_CODE}".encode()), Reply(200, delay=10)])
    shown: list[str] = []
    for sink in sinks:
        shown += [repr(sink), str(sink), repr(sink.config), str(sink.config)]
        for _ in range(2 if sink is sinks[0] else 1):
            with pytest.raises(RetryableSinkError) as caught:
                await sink.deliver(make_event())
            shown += [str(caught.value), repr(caught.value)]
        shown += await sink.check()
    assert "REDACTED" in shown[0]
    for text in shown:
        for secret in LEAKABLE:
            assert secret not in text, text


# --------------------------------------------------------------------------- the client


@pytest.mark.anyio
async def test_one_session_reused_and_closed(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    sink = make_sink(f"{rx.url}{HOOK}")
    assert session_of(sink) is None, "made on first use, not in the constructor"
    await sink.deliver(make_event())
    session = session_of(sink)
    assert session is not None
    for _ in range(3):
        await sink.deliver(make_event())
    assert session_of(sink) is session
    # One kept-alive connection carried the four requests in turn.
    assert len({r.peer for r in rx.requests(HOOK)}) == 1
    await sink.aclose()
    assert session.closed
    await sink.aclose()
    assert session_of(sink) is None


def session_of(sink: HttpSink) -> aiohttp.ClientSession | None:
    return sink._session


@pytest.mark.anyio
async def test_the_same_event_at_once_is_one_request(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    rx.script(HOOK, [Reply(503, delay=0.2)])
    sink = make_sink(f"{rx.url}{HOOK}")
    event = make_event()
    results = await asyncio.gather(*(sink.deliver(event) for _ in range(4)), return_exceptions=True)
    assert len(rx.requests(HOOK)) == 1
    assert all(isinstance(r, RetryableSinkError) for r in results), results
    await asyncio.gather(*(sink.deliver(event) for _ in range(4)))
    assert len(rx.requests(HOOK)) == 2
    assert copies_in(rx, event) == 1


# --------------------------------------------------------------------------- check()


@pytest.mark.anyio
async def test_check_resolves_and_connects_without_posting(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    # localhost may resolve to ::1 too; every address it resolves to must be allowed.
    local = [*LOCAL, "::1/128"]
    assert await make_sink(f"http://localhost:{rx.port}{HOOK}", allow_networks=local).check() == []
    assert await make_sink(f"{rx.url}{HOOK}").check() == []
    assert rx.requests() == []


@pytest.mark.anyio
async def test_check_an_unresolvable_host(make_sink: MakeSink) -> None:
    problems = await make_sink("https://hookdock-test.invalid/hook").check()
    assert len(problems) == 1
    assert "does not resolve" in problems[0]
    assert "hookdock-test.invalid" in problems[0]


@pytest.mark.anyio
async def test_check_a_closed_port(make_sink: MakeSink) -> None:
    url = f"http://127.0.0.1:{free_port()}{HOOK}"
    [problem] = await make_sink(url).check()
    assert "accepted no connection" in problem
    assert url in problem
    assert await make_sink(url, check_connection=False).check() == []


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"url": "ftp://example.test/x"}, "url", "http:// or https://"),
        ({"url": "http:///nohost"}, "url", "with a host"),
        ({"secret": None}, "secret", "required"),
        ({"sign": False}, "secret", "sign = false"),
        ({"secret": "whsec_***not-base64***"}, "secret", "not a valid secret"),
        ({"secret": "hunter2"}, "secret", "is too weak"),
        ({"secret": "whsec_" + base64.b64encode(b"x" * 23).decode()}, "secret", "24 random"),
        ({"body": "xml"}, "body", "'event' or 'payload'"),
        ({"connect_timeout_seconds": 0}, "connect_timeout_seconds", "greater than 0"),
        ({"read_timeout_seconds": -1}, "read_timeout_seconds", "greater than 0"),
        ({"max_connections": 0}, "max_connections", "greater than or equal to 1"),
        ({"headers": {"Bad Name": "v"}}, "headers", "not a valid header name"),
        ({"headers": {"X-A": "line\r\nbreak"}}, "headers", "printable ASCII"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "headers", "given twice"),
        (
            {"url": "https://u:p@example.test/", "headers": {"authorization": "Basic x"}},
            "headers",
            "user info",
        ),
        ({"urll": "http://x.test"}, "urll", "unknown key"),
        ({"allow_networks": ["10.0.0.1/8"]}, "allow_networks[0]", "127.0.0.1/32"),
        ({"allow_hosts": ["https://x.test"]}, "allow_hosts[0]", "without a scheme"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str, words: str) -> None:
    data: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "secret": SECRET, **options}
    with pytest.raises(ValidationError) as caught:
        HttpSinkConfig.model_validate(data)
    lines = format_validation_error(caught.value, prefix="sinks.out")
    assert any(line.startswith(f"sinks.out.{key}: ") and words in line for line in lines), lines
    for line in lines:
        assert SECRET not in line
        assert "not-base64" not in line


def test_defaults() -> None:
    config = HttpSinkConfig(url="https://example.test/hook", secret=SECRET)
    assert (config.body, config.sign, config.max_connections) == ("event", True, 100)
    assert (
        config.connect_timeout_seconds,
        config.read_timeout_seconds,
        config.total_timeout_seconds,
    ) == (5.0, 30.0, 60.0)
    assert HttpSink.config_model is HttpSinkConfig


def test_guard_options_default_to_nothing_allowed() -> None:
    config = HttpSinkConfig(url="https://example.test/hook", secret=SECRET)
    assert (config.allow_networks, config.allow_hosts) == ((), ())


# --------------------------------------------------------------------------- the SSRF guard


@pytest.mark.anyio
async def test_a_local_address_without_opt_in_is_refused_for_good(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    sink = make_sink(f"{rx.url}{HOOK}", allow_networks=[])
    event = make_event()
    with pytest.raises(AddressRefused) as caught:
        await sink.deliver(event)
    message = str(caught.value)
    assert "127.0.0.1 is a loopback address" in message
    assert "allow_networks" in message
    assert not caught.value.retryable
    assert caught.value.code == "address_refused"
    with pytest.raises(AddressRefused):
        await sink.deliver_file(event, IncomingFile.from_bytes("exported", b"data"))
    [problem] = await sink.check()
    assert "127.0.0.1 is a loopback address" in problem
    assert rx.requests() == []


@pytest.mark.anyio
async def test_a_name_that_resolves_to_a_local_address_is_refused_at_connect(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    # A name is judged by what it resolves to, when the connection is made.
    sink = make_sink(f"http://localhost:{rx.port}{HOOK}", allow_networks=[])
    with pytest.raises(AddressRefused) as caught:
        await sink.deliver(make_event())
    message = str(caught.value)
    assert "refused localhost" in message
    assert "loopback" in message
    assert "allow_networks" in message
    assert f"http://localhost:{rx.port}{HOOK}" in message
    [problem] = await sink.check()
    assert "refused localhost" in problem
    assert rx.requests() == []


@pytest.mark.anyio
async def test_allow_hosts_refuses_other_hosts(rx: WebhookReceiver, make_sink: MakeSink) -> None:
    sink = make_sink(f"{rx.url}{HOOK}", allow_hosts=["*.example.com"])
    with pytest.raises(AddressRefused, match="matches none of allow_hosts"):
        await sink.deliver(make_event())
    assert rx.requests() == []
    allowed = make_sink(f"{rx.url}{HOOK}", allow_hosts=["127.0.0.1"])
    await allowed.deliver(make_event())
    assert len(rx.requests(HOOK)) == 1


@pytest.mark.anyio
async def test_cloud_metadata_cannot_be_opted_in(make_sink: MakeSink) -> None:
    sink = make_sink("http://169.254.169.254/latest", allow_networks=["169.254.0.0/16"])
    with pytest.raises(AddressRefused, match="cloud metadata"):
        await sink.deliver(make_event())


# --------------------------------------------------------------------------- files


def file_event() -> Event:
    url = "https://vendor.example/files/scan.pdf?se=2030-01-01T00:00:00Z&sig=SECRET"
    return make_event(files=(FileRef(role="exported", url=url),))


def hmac_v1(key: bytes, msg_id: str, stamp: str, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@pytest.mark.anyio
async def test_a_file_arrives_byte_identical_signed_then_the_event(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    sink = make_sink(f"{rx.url}{HOOK}")
    assert isinstance(sink, FileSink)
    event = file_event()
    data = os.urandom(3 * 1024 * 1024)
    incoming = IncomingFile.from_bytes(
        "exported", data, filename="scan one.pdf", content_type="application/pdf"
    )
    await sink.deliver_file(event, incoming)
    await sink.deliver(event.with_files({"exported": incoming.info()}))

    file_request, event_request = rx.requests(HOOK)
    msg_id = f"{event.event_id}.exported"
    assert rx.stored_files(HOOK) == {msg_id: data}
    assert file_request.body == data
    assert file_request.verified is True
    headers = file_request.headers
    # The signature, checked here too, independently of the receiver and of the sink's code.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    assert headers["webhook-signature"] == hmac_v1(key, msg_id, headers["webhook-timestamp"], data)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    sha256 = hashlib.sha256(data).hexdigest()
    assert headers["webhook-id"] == msg_id
    assert headers["content-type"] == "application/pdf"
    assert headers["content-length"] == str(len(data))
    assert headers["hookdock-event-id"] == event.event_id
    assert headers["hookdock-file-role"] == "exported"
    assert headers["hookdock-file-sha256"] == sha256
    assert headers["hookdock-file-size"] == str(len(data))
    assert headers["content-disposition"] == (
        "attachment; filename=\"scan one.pdf\"; filename*=UTF-8''scan%20one.pdf"
    )
    assert "transfer-encoding" not in headers

    assert event_request.webhook_id == event.event_id
    [stored] = rx.stored(HOOK)[event.event_id]["files"]
    assert stored["sha256"] == headers["hookdock-file-sha256"]
    assert stored["size"] == len(data)
    assert "SECRET" not in stored["url"]


@pytest.mark.anyio
async def test_a_text_file_verifies_with_the_reference_library(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    # standardwebhooks reads bodies as UTF-8, so it can check a text file (not a binary one).
    event = file_event()
    text = "name;amount\nCaf\u00e9;12,50\n".encode()
    incoming = IncomingFile.from_bytes(
        "exported", text, filename="r\u00e9sum\u00e9 \u2116 1.csv", content_type="text/csv"
    )
    await make_sink(f"{rx.url}{HOOK}").deliver_file(event, incoming)
    [request] = rx.requests(HOOK)
    assert request.verified is True
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)
    disposition = request.headers["content-disposition"]
    assert disposition == (
        'attachment; filename="r_sum_ _ 1.csv"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%84%96%201.csv"
    )


@pytest.mark.anyio
async def test_an_unsigned_file_still_carries_its_hash_and_size(make_sink: MakeSink) -> None:
    with WebhookReceiver() as plain:
        event = file_event()
        data = os.urandom(10_000)
        await make_sink(f"{plain.url}{HOOK}", sign=False, secret=None).deliver_file(
            event, IncomingFile.from_bytes("original", data)
        )
        [request] = plain.requests(HOOK)
        assert plain.stored_files(HOOK) == {f"{event.event_id}.original": data}
    assert "webhook-signature" not in request.headers
    assert request.headers["hookdock-file-sha256"] == hashlib.sha256(data).hexdigest()
    assert request.headers["hookdock-file-size"] == "10000"
    assert request.headers["content-type"] == "application/octet-stream"


@pytest.mark.anyio
async def test_a_file_answered_503_is_retried_then_delivered(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    rx.script(HOOK, [Reply(503, headers={"Retry-After": "3"}, body=b"busy"), 200])
    sink = make_sink(f"{rx.url}{HOOK}")
    event = file_event()
    data = os.urandom(200_000)
    with pytest.raises(RetryableSinkError) as caught:
        await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    assert caught.value.retry_after == 3.0
    assert "answered 503" in str(caught.value)
    assert "exported file" in str(caught.value)
    assert rx.stored_files(HOOK) == {}
    await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    assert [r.status for r in rx.requests(HOOK)] == [503, 200]
    assert {r.webhook_id for r in rx.requests(HOOK)} == {f"{event.event_id}.exported"}
    assert rx.stored_files(HOOK) == {f"{event.event_id}.exported": data}


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "kind"), [(410, SinkGone), (413, PermanentSinkError)])
async def test_a_file_answer_is_classified_like_an_event_answer(
    rx: WebhookReceiver, make_sink: MakeSink, status: int, kind: type[SinkError]
) -> None:
    rx.script(HOOK, [status])
    with pytest.raises(kind, match=f"answered {status}"):
        await make_sink(f"{rx.url}{HOOK}").deliver_file(
            file_event(), IncomingFile.from_bytes("exported", b"x" * 1000)
        )


@pytest.mark.anyio
async def test_a_failing_download_propagates_as_the_downloads_error(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    async def cut() -> AsyncIterator[bytes]:
        yield b"x" * 300_000
        raise FileUnavailable("the link expired midway", code="link_expired")

    incoming = IncomingFile("exported", cut(), filename="a.pdf")
    with pytest.raises(FileUnavailable) as caught:
        await make_sink(f"{rx.url}{HOOK}").deliver_file(file_event(), incoming)
    assert caught.value is incoming.failure
    assert caught.value.code == "link_expired"
    assert rx.requests() == []


@pytest.mark.anyio
async def test_a_file_signed_with_another_secret_is_refused(make_sink: MakeSink) -> None:
    # The receiver's own check of file signatures can fail: this is what it looks like.
    with WebhookReceiver(secret=OTHER_SECRET) as other:
        with pytest.raises(PermanentSinkError, match="answered 401"):
            await make_sink(f"{other.url}{HOOK}").deliver_file(
                file_event(), IncomingFile.from_bytes("exported", os.urandom(5000))
            )
        assert [r.verified for r in other.requests(HOOK)] == [False]
        assert other.stored_files(HOOK) == {}


@pytest.mark.anyio
async def test_a_file_request_has_its_own_total_timeout(
    rx: WebhookReceiver, make_sink: MakeSink
) -> None:
    # An event's total timeout would cut off every large upload: files get their own.
    rx.script(HOOK, [Reply(200, delay=0.8), Reply(200, delay=10)])
    sink = make_sink(f"{rx.url}{HOOK}", total_timeout_seconds=0.3)
    event = file_event()
    await sink.deliver_file(event, IncomingFile.from_bytes("exported", b"slow to answer"))
    assert len(rx.stored_files(HOOK)) == 1
    strict = make_sink(f"{rx.url}{HOOK}", file_total_timeout_seconds=0.3)
    with pytest.raises(RetryableSinkError, match=r"did not answer within 0\.3s"):
        await strict.deliver_file(file_event(), IncomingFile.from_bytes("exported", b"x"))
