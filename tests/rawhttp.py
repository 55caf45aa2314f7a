"""HTTP/1.1 by hand over a socket, for what well-behaved clients cannot send.

Slow headers, a trickled body, a ``Content-Length`` that lies, pipelined requests, bytes that
are not HTTP: ``httpx`` sends none of these.  ``RawConnection.read_response`` parses an answer
as far as hookdock's one-line answers need (status, headers, a body by ``content-length``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["RawConnection", "Response", "request_bytes"]

HOST = "127.0.0.1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def request_bytes(
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
) -> bytes:
    """A request as bytes; ``content_length`` may lie about ``body``."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}"]
    all_headers = {"content-type": "application/json", **(headers or {})}
    length = len(body) if content_length is None else content_length
    all_headers.setdefault("content-length", str(length))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawConnection:
    """One TCP connection to hookdock on 127.0.0.1."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, or False if the peer has closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _more(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete response before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buffer += chunk
        return bool(chunk)

    def read_response(self, timeout: float = 10.0) -> Response | None:
        """The next response within ``timeout``; None if the peer closed first."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._more(deadline):
                return None
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        self.buffer = rest
        while len(self.buffer) < length and self._more(deadline):
            pass
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split(" ", 2)[1]), headers, body)

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the peer has closed (EOF or reset) within ``timeout``, with no unread
        bytes before the end."""
        deadline = time.monotonic() + timeout
        while not self.buffer:
            try:
                if not self._more(deadline):
                    return not self.buffer
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
