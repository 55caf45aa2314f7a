"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a background thread.

It behaves like the endpoint a customer would put behind hookdock's HTTP sink::

    with WebhookReceiver(secret="whsec_...") as rx:
        rx.script("/hook", [503, Reply(429, headers={"Retry-After": "7"}), 200])
        ...  # point a sink at f"{rx.url}/hook"
        rx.wait_for(lambda: event_id in rx.stored("/hook"), timeout=10)

* Every request is **verified** with the published ``standardwebhooks`` package (when a secret
  is given) and **recorded** (``rx.requests(path)``): method, path, lower-cased headers, raw
  body, whether the signature verified, the status it was answered, the client's address
  (requests on one kept-alive connection share it) and when it arrived.
* Each request takes the next **scripted** reply of its path (``rx.script``): a status, or a
  ``Reply`` with headers, a body and a ``delay`` before answering (to provoke read timeouts).
  Once a path's script is used up, or for paths without one, the answer is ``default``
  (204).  A request whose signature does not verify is answered 401 when its reply would have
  been 2xx; a body that is not JSON, 400.
* A request with a ``hookdock-file-role`` header is a **file** (the HTTP sink's
  ``deliver_file``): its body is any bytes.  ``standardwebhooks`` verifies only bodies that
  are UTF-8 (it decodes them), so a file's signature is verified here with ``hmac`` over the
  raw bytes, and, when the body is UTF-8, by the library as well: both must agree.
* A request answered 2xx is **stored** under its ``webhook-id`` unless that id is stored
  already, the way a real receiver dedupes redeliveries: ``rx.stored(path)`` maps
  ``webhook-id`` to the parsed JSON body of the first copy; ``rx.stored_files(path)`` maps
  ``webhook-id`` to the bytes of the first copy of each file.

``wait_for(predicate, timeout)`` polls with a deadline.  Leaving the ``with`` block stops the
server, wakes delayed replies, closes kept-alive connections and joins every thread.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import wait_until

__all__ = ["ReceivedRequest", "Reply", "WebhookReceiver"]

T = TypeVar("T")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``status``, extra ``headers``, ``body``, after ``delay`` seconds.

    ``echo`` appends the request's headers to the body, as a careless endpoint does in its
    error pages, the credentials first (``authorization``, ``x-api-key``).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    echo: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived, and how it was answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes
    verified: bool | None
    """The ``standardwebhooks`` verdict, or None when the receiver has no secret."""
    status: int
    peer: tuple[str, int]
    """The client's address and port: requests on one kept-alive connection share it."""
    received_at: float
    """``time.monotonic()`` when the request had arrived whole: retries can be timed."""

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A threaded HTTP/1.1 server (keep-alive) on a free port of 127.0.0.1; a context manager."""

    def __init__(self, secret: str | None = None, *, default: int | Reply = 204) -> None:
        self._webhook = Webhook(secret) if secret is not None else None
        self._key = _key(secret) if secret is not None else None
        self._default = _reply(default)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._requests: list[ReceivedRequest] = []
        self._stored: dict[str, dict[str, Any]] = {}
        self._stored_files: dict[str, dict[str, bytes]] = {}
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        server = _Server((HOST, 0), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving; harmless twice.  Joins the server thread and every handler thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # Wakes handler threads waiting for the next request on a kept-alive connection.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads (block_on_close)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def port(self) -> int:
        assert self._server is not None, "the receiver is not running"
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; append the path the sink should post to."""
        return f"http://{HOST}:{self.port}"

    # ------------------------------------------------------------------ scripting and reading

    def script(self, path: str, replies: Iterable[int | Reply]) -> None:
        """Answer the next requests to ``path`` with ``replies`` in order (replacing any left)."""
        with self._lock:
            self._scripts[path] = [_reply(r) for r in replies]

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Every request so far (to ``path`` only, if given), oldest first."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def stored(self, path: str) -> dict[str, Any]:
        """``webhook-id`` -> parsed JSON body of the first 2xx-answered copy, for ``path``."""
        with self._lock:
            return dict(self._stored.get(path, {}))

    def stored_files(self, path: str) -> dict[str, bytes]:
        """``webhook-id`` -> bytes of the first 2xx-answered copy of each file, for ``path``."""
        with self._lock:
            return dict(self._stored_files.get(path, {}))

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02
    ) -> T:
        """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` passes;
        then fail with what the receiver has seen."""

        def seen() -> str:
            requests = [(r.path, r.status, r.webhook_id, r.verified) for r in self.requests()]
            return f"requests so far (path, status, id, verified): {requests}"

        return wait_until(predicate, timeout, interval, seen)

    # ------------------------------------------------------------------ request handling

    def _handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        peer: tuple[str, int],
    ) -> Reply:
        arrived = time.monotonic()
        parts = urlsplit(target)
        path = parts.path
        with self._lock:
            script = self._scripts.get(path)
            reply = script.pop(0) if script else self._default
        is_file = "hookdock-file-role" in headers
        verified: bool | None = None
        if self._webhook is not None and self._key is not None:
            utf8 = _is_utf8(body)
            if is_file:
                verified = _verify_raw(self._key, body, headers)
            if not is_file or (verified and utf8):
                try:
                    self._webhook.verify(body, headers, json_parse=False)
                    verified = True
                except (WebhookVerificationError, ValueError):
                    verified = False
        status = reply.status
        parsed: Any = None
        if 200 <= status < 300:
            if verified is False:
                reply = Reply(401, body=b"signature does not verify")
            elif not is_file:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    reply = Reply(400, body=b"body is not JSON")
        if reply.echo:
            first = [n for n in ("authorization", "x-api-key") if n in headers]
            names = [*first, *(n for n in headers if n not in first)]
            echoed = "".join(f"{name}: {headers[name]}\n" for name in names)
            reply = Reply(reply.status, reply.headers, reply.body + echoed.encode(), reply.delay)
        if reply.delay:
            self._closing.wait(reply.delay)
        webhook_id = headers.get("webhook-id")
        with self._lock:
            if 200 <= reply.status < 300 and webhook_id:
                if is_file:
                    self._stored_files.setdefault(path, {}).setdefault(webhook_id, body)
                else:
                    self._stored.setdefault(path, {}).setdefault(webhook_id, parsed)
            self._requests.append(
                ReceivedRequest(
                    method, path, parts.query, headers, body, verified, reply.status, peer, arrived
                )
            )
        return reply


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _verify_raw(key: bytes, body: bytes, headers: dict[str, str], tolerance: int = 300) -> bool:
    """Standard Webhooks v1 over the raw body, written out here rather than taken from
    ``handlers.signing``: the check must not share the code it checks."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and stamp and signatures and stamp.isdigit()):
        return False
    if abs(int(stamp) - time.time()) > tolerance:
        return False
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for signature in signatures.split(" "):
        version, _, value = signature.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except ValueError:
            continue
        if hmac.compare_digest(expected, given):
            return True
    return False


def _reply(value: int | Reply) -> Reply:
    return value if isinstance(value, Reply) else Reply(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    timeout = 30  # a last resort for an idle connection that close() did not reach
    server: _Server

    def setup(self) -> None:
        super().setup()
        receiver = self.server.receiver
        with receiver._lock:
            receiver._connections.add(self.connection)
        if receiver._closing.is_set():
            # Accepted just before close() looked at the connections: end it here instead.
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.receiver._lock:
                self.server.receiver._connections.discard(self.connection)

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        reply = self.server.receiver._handle(self.command, self.path, headers, body, peer)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            # The client gave up first (a read-timeout test): nothing to answer to.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded; stderr stays quiet
