"""The HTTP connection: uvicorn's httptools protocol, with limits a hostile client cannot outwait.

uvicorn waits as long as a client likes for headers and for a body, and httptools takes
headers of any size.  A sender at one byte a second, or one that promises more body than it
sends, would hold a connection, and a request, for ever.  On each connection:

* **headers** must all arrive within ``header_timeout_seconds`` of the request's first byte
  (of the connection, for its first request), and take at most ``max_header_bytes``: else
  408 or 431, then close;
* **the body** must all arrive within ``body_timeout_seconds`` of the headers: else 408, then
  close (the app, waiting on the body, sees the client gone and stores nothing);
* **connections** beyond ``max_connections`` are answered 503 and closed as they open.

A refusal while an earlier request of the same connection is still at work waits for that
request's answer, then follows it: bytes that are not HTTP after a valid request (a
``Content-Length`` shorter than the body, with a request pipelined behind it) get the first
request its ``200`` before the ``400`` that closes the connection, never a ``400`` for what
was stored.  Every refusal is the one-line ``hookdock: ...`` body of ``receiver.responses``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.responses import raw_response

__all__ = ["ConnectionLimits", "protocol_class"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_header_bytes: int
    max_connections: int


class _TooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it in its own error."""


class HookdockProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        """Between requests, or inside a request's line and headers."""
        self._header_bytes = 0
        """Bytes of the request line and the headers the parser has handed over so far."""
        self._raw_header_bytes = 0
        """Bytes received while the headers were awaited, including a line still arriving."""
        self._headers_done = 0
        self._refusal: tuple[int, str] | None = None
        self._deferred: bytes | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._close_with(raw_response(503, "too many connections, please retry"))
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        awaiting, headers_done = self._awaiting_headers, self._headers_done
        super().data_received(data)
        if not self._awaiting_headers or self.transport.is_closing() or self._deferred:
            return
        # A header line still arriving is not seen by the callbacks: count the raw bytes too,
        # so one endless line cannot grow past the cap.  A read that began and ended while
        # headers were awaited is all headers; one that also held a body is counted by the
        # callbacks alone (where the body ended is unknown), and the reads after it count.
        if awaiting and headers_done == self._headers_done:
            self._raw_header_bytes += len(data)
        if self._raw_header_bytes > self.limits.max_header_bytes:
            self._refuse(431, self._too_large_message())

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._headers_done += 1
        self._cancel(self._header_timer)
        self._header_timer = None
        super().on_headers_complete()
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._body_timed_out
        )

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()
        # What arrives next is the next request's line and headers.
        self._awaiting_headers = True
        self._raw_header_bytes = 0

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._refusal = (431, self._too_large_message())
            raise _TooLarge

    def _too_large_message(self) -> str:
        return f"request headers are larger than {self.limits.max_header_bytes} bytes"

    # ------------------------------------------------------------ refusals

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this for any parser error; a callback of ours may have said why.
        status, message = self._refusal or (400, "invalid HTTP request")
        self._refuse(status, message)

    def _refuse(self, status: int, message: str) -> None:
        if self.transport.is_closing() or self._deferred is not None:
            return
        self._cancel_timers()
        answer = raw_response(status, message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            if not cycle.more_body:
                # A whole request is at work (being journaled): its answer goes first, then
                # this one, so a sender is never told "rejected" for what was stored.
                self._deferred = answer
                self.flow.pause_reading()
                return
            # The bad bytes are inside this request's own body: the request is refused and
            # the app, still waiting on the body, sees the client gone and stores nothing.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                answer = b""
        self._close_with(answer)

    def on_response_complete(self) -> None:
        if self._deferred is not None:
            self.server_state.total_requests += 1
            self._close_with(self._deferred)
            return
        super().on_response_complete()

    def _close_with(self, answer: bytes) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()

    # ------------------------------------------------------------ deadlines

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_seconds, self._headers_timed_out
            )

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers:
            seconds = f"{self.limits.header_timeout_seconds:g}"
            self._refuse(408, f"request headers did not arrive within {seconds} s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            if not self.transport.is_closing():
                self.transport.close()  # answered without reading the body: stop waiting
            return
        if any(queued is cycle for queued, _ in self.pipeline):
            # Its body is not being read yet (an earlier request is at work): not its fault.
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )
            return
        if cycle.response_started:
            self.transport.close()
            return
        seconds = f"{self.limits.body_timeout_seconds:g}"
        # The app waits on the body: it is told the client is gone, so nothing of this
        # request is stored.
        cycle.disconnected = True
        cycle.message_event.set()
        self._close_with(raw_response(408, f"request body did not arrive within {seconds} s"))

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def protocol_class(limits: ConnectionLimits) -> type[HookdockProtocol]:
    """The protocol uvicorn instantiates per connection, with ``limits`` for each."""
    return type("HookdockProtocol", (HookdockProtocol,), {"limits": limits})
