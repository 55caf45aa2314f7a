"""The HTTP connection's limits, in process, on a fake transport: exact bytes, no sockets.

The e2e tests drive the same protocol over real sockets; these pin the accounting that is
hard to reach from outside: what counts towards the header cap when requests share a read,
and the order of answers when a refusal waits for a request at work.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from receiver.protocol import ConnectionLimits, HookdockProtocol, protocol_class

pytestmark = pytest.mark.anyio

LIMITS = ConnectionLimits(
    header_timeout_seconds=0.2,
    body_timeout_seconds=0.2,
    max_header_bytes=1024,
    max_connections=2,
)


class FakeTransport(asyncio.Transport):
    """Keeps what is written; a close reaches the protocol as a lost connection, as asyncio's
    transports do, on the next turn of the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        if not self.closed and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """Reads the whole body, waits for ``release``, answers 200 with the body's length."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.bodies: list[bytes] = []
        self.returned = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._serve(receive, send)
        finally:
            self.returned += 1

    async def _serve(self, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await self.release.wait()
        answer = f"ok {len(body)}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def connect(app: App, state: ServerState | None = None) -> tuple[HookdockProtocol, FakeTransport]:
    config = uvicorn.Config(app, log_config=None)
    config.load()
    protocol = protocol_class(LIMITS)(
        config=config, server_state=state or ServerState(), app_state={}
    )
    transport = FakeTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


def request(body: bytes = b"{}", *, pad: int = 0) -> bytes:
    padding = f"x-pad: {'p' * pad}\r\n" if pad else ""
    return (
        f"POST /x HTTP/1.1\r\nhost: h\r\n{padding}content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def until(predicate: Any, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_headers_over_the_cap_in_one_endless_line_are_refused() -> None:
    protocol, transport = connect(App())
    protocol.data_received(b"POST /x HTTP/1.1\r\nhost: h\r\nx-endless: ")
    for _ in range(3):
        protocol.data_received(b"a" * 300)
    assert not transport.closed
    protocol.data_received(b"a" * 300)
    assert transport.written.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert transport.written.endswith(
        b"\r\n\r\nhookdock: request headers are larger than 1024 bytes\n"
    )
    assert transport.closed


async def test_requests_that_share_a_read_each_get_the_whole_cap() -> None:
    app = App()
    protocol, transport = connect(app)
    big_body = b"b" * 5000  # the raw bytes of a body must not count as anyone's headers
    protocol.data_received(request(big_body, pad=800) + request(pad=800)[:200])
    protocol.data_received(request(pad=800)[200:])
    await until(lambda: transport.written.count(b"HTTP/1.1 200") == 2)
    assert app.bodies == [big_body, b"{}"]
    assert not transport.closed


async def test_the_header_deadline_answers_408_and_closes() -> None:
    protocol, transport = connect(App())
    protocol.data_received(b"POST /x HTTP/1.1\r\nho")
    await until(lambda: transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.written.endswith(b"hookdock: request headers did not arrive within 0.2 s\n")


async def test_the_body_deadline_tells_the_app_the_client_is_gone() -> None:
    app = App()
    protocol, transport = connect(app)
    protocol.data_received(request(b'{"a": 1}')[:-3])
    await until(lambda: transport.closed)
    assert transport.written.endswith(b"hookdock: request body did not arrive within 0.2 s\n")
    await until(lambda: app.returned == 1)
    assert app.bodies == [], "the app saw the client gone, not a body"


async def test_garbage_after_a_request_at_work_waits_for_its_answer() -> None:
    app = App()
    app.release.clear()
    protocol, transport = connect(app)
    protocol.data_received(request(b"{}") + b"\x00 not http\r\n\r\n")
    await until(lambda: app.bodies == [b"{}"])
    assert transport.written == b"", "nothing is said before the stored request's answer"
    app.release.set()
    await until(lambda: transport.closed)
    first, _, second = transport.written.partition(b"ok 2\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert second.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert second.endswith(b"hookdock: invalid HTTP request\n")


async def test_a_connection_over_the_cap_is_answered_503_as_it_opens() -> None:
    state = ServerState()
    connect(App(), state)
    connect(App(), state)
    _, transport = connect(App(), state)
    assert transport.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert transport.written.endswith(b"hookdock: too many connections, please retry\n")
    assert transport.closed


async def test_bad_bytes_inside_a_body_refuse_that_request_at_once() -> None:
    app = App()
    protocol, transport = connect(app)
    protocol.data_received(
        b"POST /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n"
    )
    protocol.data_received(b"zz\r\n")  # not a chunk size
    await until(lambda: transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    await until(lambda: app.returned == 1)
    assert app.bodies == [], "the app saw the client gone, and stored nothing"
