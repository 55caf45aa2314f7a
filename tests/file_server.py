"""A real file server for tests and benchmarks: Azure-Blob-like SAS downloads on 127.0.0.1.

SmartDocumentor's ``exportedFileUrl`` and ``originalFileUrl`` point at Azure Blob Storage
behind expiring SAS links.  This server answers such links the way Azure does, so a fetcher
can be tested against real sockets::

    with FileServer() as srv:
        srv.add("invoice.pdf", b"%PDF-1.7 ...", disposition='attachment; filename="inv.pdf"')
        srv.script("invoice.pdf", [Fault(status=503, retry_after=2), Fault(cut_after=100)])
        url = srv.sas_url("invoice.pdf")            # third request: the whole file
        ...
        srv.wait_for(lambda: len(srv.requests("invoice.pdf")) == 3, timeout=10)

* Files live at ``/<container>/<name>`` (``container`` by default): bytes from memory, or a
  ``Path`` sent with sendfile (fast enough for a 1 GiB benchmark).  ``root=DIR`` also serves
  every file under a folder by its relative name.
* **SAS, checked like Azure.**  ``sas_url`` issues a link with ``sv``, ``se`` (expiry),
  ``sr=b``, ``sp=r`` and a random ``sig``; the server accepts exactly the (name, ``se``,
  ``sig``) triples it issued, so a link with a changed expiry or for another blob fails too.
  A missing or wrong ``sig`` answers 403 ``AuthenticationFailed``, a past ``se`` 403
  ``AuthenticationFailed`` with Azure's "Signed expiry time [...] must be after signed start
  time [...]" detail, an unknown blob 404 ``BlobNotFound``: Azure's XML error bodies (with
  the UTF-8 BOM Azure puts first) and headers (``x-ms-request-id``, ``x-ms-error-code``).
  ``sig=`` and ``accept_any_sig=`` widen what is accepted, for the command line.
* **Azure's headers** on a file: ``Content-Type``, ``Content-Length``, ``ETag``,
  ``Last-Modified``, ``Accept-Ranges``, ``x-ms-request-id``, ``x-ms-version``,
  ``x-ms-blob-type`` and ``Content-Disposition`` when given.  A single ``Range`` is honoured
  (206), as Azure does, so a fetcher may resume.
* **Faults** (``script(name, [Fault, ...])``): each request for ``name`` takes the next one;
  when the script is used up, the file is served normally.  See ``Fault``.
* **Records** every request (``requests(name)``): method, path, name, query, lower-cased
  headers, arrival time (``time.monotonic()``), the status it is answered and the fault it
  took.  Records are made when a request arrives, so a test can wait for a request that is
  still being delayed or stalled.

The server runs an aiohttp application on its own event loop in a background thread.  Leaving
the ``with`` block (``close()``) wakes delayed and stalled responses, closes every connection,
kept-alive ones included, and joins the thread.  Nothing is logged; the ``sig`` of a request is
never printed anywhere (a record's ``repr`` leaves out its query and headers).

Command line, for a benchmark that wants the server in a process of its own::

    python -m tests.file_server --root DIR [--port N] [--sig VALUE] [--container NAME]

serves every file under DIR and prints ``ready http://127.0.0.1:PORT`` once it listens;
SIGTERM or SIGINT stops it.  Without ``--sig`` any ``sig`` is accepted (``se`` still counts);
``make_sas_url`` builds links for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import mimetypes
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = [
    "API_VERSION",
    "Fault",
    "FileServer",
    "ServedRequest",
    "make_sas_url",
    "sas_expiry_text",
]

T = TypeVar("T")

HOST = "127.0.0.1"
API_VERSION = "2022-11-02"
ACCOUNT = "hookdocktest"
DEFAULT_CONTAINER = "container"
DEFAULT_CONTENT_TYPE = "application/pdf"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_CHUNK = 256 * 1024
_SERVER_HEADER = "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"
_AUTH_MESSAGE = (
    "Server failed to authenticate the request. Make sure the value of Authorization header"
    " is formed correctly including the signature."
)
# What Azure answers for the statuses a test is likely to script; others get a generic code.
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidInput", "One of the request inputs is not valid."),
    403: ("AuthenticationFailed", _AUTH_MESSAGE),
    404: ("BlobNotFound", "The specified blob does not exist."),
    410: ("ResourceGone", "The resource is gone."),
    412: (
        "ConditionNotMet",
        "The condition specified using HTTP conditional header(s) is not met.",
    ),
    416: ("InvalidRange", "The range specified is invalid for the current size of the resource."),
    429: ("TooManyRequests", "The request rate is too high."),
    500: ("InternalError", "The server encountered an internal error. Please retry the request."),
    503: (
        "ServerBusy",
        "The server is currently unable to receive requests. Please retry your request.",
    ),
}
# Any of these makes aiohttp's FileResponse answer on its own (206, 304, 412), which would
# disagree with the status recorded on arrival; such requests are streamed here instead.
_CONDITIONAL = (
    "range",
    "x-ms-range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
)


@dataclass(frozen=True)
class Fault:
    """What one request gets instead of (or on the way to) the file.

    ``delay`` combines with any of the others; of ``status``, ``redirect``, ``stall_after``
    and ``cut_after`` at most one is set.  ``status`` and ``redirect`` answer before the SAS
    is looked at, like a front end would; ``stall_after`` and ``cut_after`` apply to a request
    that would be served (a bad link still gets its 403).
    """

    status: int | None = None
    """Answer this error status (400-599) with Azure's XML body for it."""
    retry_after: int | str | None = None
    """With ``status``: a ``Retry-After`` header (seconds, or an HTTP date)."""
    delay: float = 0.0
    """Seconds to wait before anything, headers included, is sent (connect/read timeouts)."""
    stall_after: int | None = None
    """Send the headers and this many body bytes, then send nothing more and keep the
    connection open until the server stops or ``release_stalls()`` (idle-read timeouts)."""
    cut_after: int | None = None
    """Send the headers (with the whole file's ``Content-Length``) and this many body bytes,
    then close the connection."""
    redirect: str | None = None
    """Answer ``redirect_status`` with this ``Location``."""
    redirect_status: int = 302

    def __post_init__(self) -> None:
        chosen = [
            n
            for n in ("status", "stall_after", "cut_after", "redirect")
            if getattr(self, n) is not None
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"a Fault takes one of status/stall_after/cut_after/redirect: {chosen}"
            )
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("Fault.status is an error status (400-599); use redirect for 3xx")
        if self.redirect_status not in (301, 302, 303, 307, 308):
            raise ValueError("Fault.redirect_status must be 301, 302, 303, 307 or 308")
        if self.delay < 0 or (self.stall_after or 0) < 0 or (self.cut_after or 0) < 0:
            raise ValueError("Fault delays and byte counts cannot be negative")


@dataclass(frozen=True)
class ServedRequest:
    """One request as it arrived, and how it is answered."""

    method: str
    path: str
    """The request path, percent-decoded (no query)."""
    name: str
    """The blob name (the path after ``/<container>/``), or "" for any other path."""
    query: dict[str, str] = field(repr=False)
    """Holds the ``sig``: kept out of the ``repr`` so a failing assertion cannot print it."""
    headers: dict[str, str] = field(repr=False)
    """Lower-cased names; a repeated header keeps its last value."""
    received_at: float
    """``time.monotonic()`` when the request arrived: retries can be timed."""
    status: int
    fault: Fault | None = None


@dataclass(frozen=True)
class _Blob:
    data: bytes | None
    path: Path | None
    size: int
    content_type: str
    disposition: str | None
    etag: str
    last_modified: float

    @classmethod
    def of(
        cls, data: bytes | Path, content_type: str, disposition: str | None, *, now: float
    ) -> _Blob:
        if isinstance(data, Path):
            st = data.stat()
            # The same ETag aiohttp's FileResponse sends, so a full answer and a ranged one
            # of the same file agree.
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            return cls(None, data, st.st_size, content_type, disposition, etag, st.st_mtime)
        # Azure's ETags look like "0x8DC5E1A2B3C4D5F": a hex counter, here from the clock.
        etag = f'"0x{time.time_ns() // 100 + 0x8D000000000000:X}"'
        return cls(bytes(data), None, len(data), content_type, disposition, etag, now)


@dataclass(frozen=True)
class _Plan:
    """How one request is answered, decided when it arrives."""

    status: int
    blob: _Blob | None = None
    start: int = 0
    length: int = 0
    fault: Fault | None = None
    error: tuple[str, str, str] | None = None
    """(code, message, extra XML) of an error answer."""
    headers: Mapping[str, str] = field(default_factory=dict)


def sas_expiry_text(expires_in: float, *, now: float | None = None) -> str:
    """The ``se`` value ``expires_in`` seconds from now: ISO 8601 UTC, seconds precision."""
    moment = (time.time() if now is None else now) + expires_in
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_sas_url(
    base_url: str,
    name: str,
    *,
    sig: str,
    expires_in: float = 3600.0,
    container: str = DEFAULT_CONTAINER,
) -> str:
    """``<base_url>/<container>/<name>?sv=..&se=..&sr=b&sp=r&sig=..``, encoded as Azure's SDKs
    do (``se=2026-12-01T10%3A00%3A00Z``), for a server that accepts ``sig``."""
    return _sas_url(base_url, container, name, sas_expiry_text(expires_in), sig)


def _sas_url(base_url: str, container: str, name: str, se: str, sig: str) -> str:
    query = urlencode(
        {"sv": API_VERSION, "se": se, "sr": "b", "sp": "r", "sig": sig}, quote_via=quote, safe=""
    )
    return f"{base_url}/{quote(container, safe='')}/{quote(name, safe='/')}?{query}"


class FileServer:
    """An Azure-Blob-like HTTP/1.1 file server on 127.0.0.1, in a thread; a context manager."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        container: str = DEFAULT_CONTAINER,
        port: int = 0,
        sig: str | None = None,
        accept_any_sig: bool = False,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        """``root``: also serve every file under this folder by its relative name.  ``port``:
        0 picks a free one.  ``sig``: a signature accepted for every blob and expiry, besides
        those ``sas_url`` issues; ``accept_any_sig``: any non-empty one is.  ``access_log``
        is called with ``METHOD /path STATUS`` (never the query) for each request."""
        self.root = root.resolve() if root is not None else None
        self.container = container
        self._wanted_port = port
        self._fixed_sig = sig
        self._any_sig = accept_any_sig
        self._access_log = access_log
        self._lock = threading.Lock()
        self._blobs: dict[str, _Blob] = {}
        self._grants: set[tuple[str, str, str]] = set()
        self._scripts: dict[str, list[Fault]] = {}
        self._requests: list[ServedRequest] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._port: int | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FileServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self._wanted_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, started), name=f"file-server-{self._port}", daemon=True
        )
        self._thread.start()
        if not started.wait(START_TIMEOUT):
            raise RuntimeError(f"file server did not start within {START_TIMEOUT:.0f}s")
        if self._failure is not None:
            self._thread.join(STOP_TIMEOUT)
            raise RuntimeError("file server could not start") from self._failure

    def close(self) -> None:
        """Stop serving; harmless twice.  Ends delayed and stalled responses, closes every
        connection and joins the server thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended already (start failed)
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"file server thread did not stop within {STOP_TIMEOUT:.0f}s")

    def _run(self, sock: socket.socket, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, started))
        except BaseException as exc:
            self._failure = exc
        finally:
            started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    async def _serve(self, sock: socket.socket, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Woken handlers end at once; the timeout only bounds a handler stuck elsewhere.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.SockSite(runner, sock)
            await site.start()
            started.set()
            await self._stop.wait()
        finally:
            self._release.set()
            await runner.cleanup()

    @property
    def port(self) -> int:
        assert self._port is not None, "the file server is not running"
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    # ------------------------------------------------------------------ files and links

    def add(
        self,
        name: str,
        data: bytes | Path,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        disposition: str | None = None,
    ) -> None:
        """Serve ``data`` (bytes, or a file sent with sendfile) at ``/<container>/<name>``,
        replacing what was there.  ``disposition`` is sent as ``Content-Disposition``."""
        blob = _Blob.of(data, content_type, disposition, now=time.time())
        with self._lock:
            self._blobs[name] = blob

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (its links then answer 404 ``BlobNotFound``)."""
        with self._lock:
            self._blobs.pop(name, None)

    def blob_url(self, name: str) -> str:
        """The link without a query string (Azure answers it 404 for a private container)."""
        return f"{self.url}/{quote(self.container, safe='')}/{quote(name, safe='/')}"

    def sas_url(self, name: str, *, expires_in: float = 3600.0, sig: str | None = None) -> str:
        """A SAS link to ``name`` valid for ``expires_in`` seconds (negative: expired already).
        ``sig`` defaults to a fresh random secret; the server accepts it for this name and
        expiry only."""
        sig = secrets.token_urlsafe(32) if sig is None else sig
        se = sas_expiry_text(expires_in)
        with self._lock:
            self._grants.add((name, se, sig))
        return _sas_url(self.url, self.container, name, se, sig)

    # ------------------------------------------------------------------ scripting and reading

    def script(self, name: str, faults: Iterable[Fault]) -> None:
        """The next requests for ``name`` take these faults in order (replacing any left)."""
        with self._lock:
            self._scripts[name] = list(faults)

    def requests(self, name: str | None = None) -> list[ServedRequest]:
        """Every request so far (for blob ``name`` only, if given), oldest first."""
        with self._lock:
            return [r for r in self._requests if name is None or r.name == name]

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02
    ) -> T:
        """Call ``predicate`` until it returns something truthy (returned) or ``timeout``
        passes; then fail the test with the requests seen so far."""
        # Imported here so that the command line does not need pytest.
        from tests.conftest import wait_until

        def seen() -> str:
            served = [(r.method, r.name, r.status) for r in self.requests()]
            return f"requests so far (method, name, status): {served}"

        return wait_until(predicate, timeout, interval, seen)

    def release_stalls(self) -> None:
        """Close the connections of responses stalled so far (later stalls stall again)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._release_now)

    def _release_now(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    # ------------------------------------------------------------------ answering

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        name = self._blob_name(request.path)
        query = dict(request.query)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            script = self._scripts.get(name) if name else None
            fault = script.pop(0) if script else None
            plan = self._plan(request.method, name, query, headers, fault)
            self._requests.append(
                ServedRequest(
                    request.method, request.path, name, query, headers, arrived, plan.status, fault
                )
            )
        if self._access_log is not None:
            self._access_log(f"{request.method} {request.path} {plan.status}")
        release = self._release
        assert release is not None
        if fault is not None and fault.delay and await _wait(release, fault.delay):
            return _drop(request)
        if plan.error is not None:
            return _error_response(plan)
        if plan.status in (301, 302, 303, 304, 307, 308):
            return web.Response(status=plan.status, headers=plan.headers)
        assert plan.blob is not None
        if fault is not None and (fault.stall_after is not None or fault.cut_after is not None):
            return await self._send_partial(request, plan, fault, release)
        blob = plan.blob
        if blob.path is not None and not any(h in headers for h in _CONDITIONAL):
            return web.FileResponse(blob.path, chunk_size=_CHUNK, headers=plan.headers)
        if blob.data is not None:
            body = blob.data[plan.start : plan.start + plan.length]
            return web.Response(status=plan.status, body=body, headers=plan.headers)
        response = web.StreamResponse(status=plan.status, headers=plan.headers)
        response.content_length = plan.length
        # A client that goes away mid-body is no error of the server's (aiohttp would log a
        # traceback for it).
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            if request.method != "HEAD":
                await _write_range(response, blob, plan.start, plan.length)
        return response

    async def _send_partial(
        self, request: web.Request, plan: _Plan, fault: Fault, release: asyncio.Event
    ) -> web.StreamResponse:
        assert plan.blob is not None
        response = web.StreamResponse(status=plan.status, headers=plan.headers)
        response.content_length = plan.length
        limit = fault.stall_after if fault.stall_after is not None else fault.cut_after
        assert limit is not None
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            if request.method != "HEAD":
                await _write_range(response, plan.blob, plan.start, min(limit, plan.length))
        if fault.stall_after is not None:
            await release.wait()
        return _drop(request, response)

    def _blob_name(self, path: str) -> str:
        prefix = f"/{self.container}/"
        return path[len(prefix) :] if path.startswith(prefix) else ""

    def _plan(
        self,
        method: str,
        name: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        fault: Fault | None,
    ) -> _Plan:
        """Everything but the sending; called under the lock."""
        base = {"Server": _SERVER_HEADER, "x-ms-request-id": str(uuid.uuid4())}
        base["x-ms-version"] = API_VERSION
        if fault is not None and fault.status is not None:
            code, message = _STATUS_ERRORS.get(fault.status, ("ServerError", "Error."))
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return _Plan(fault.status, fault=fault, error=(code, message, ""), headers=base | extra)
        if fault is not None and fault.redirect is not None:
            headers_out = base | {"Location": fault.redirect}
            return _Plan(fault.redirect_status, fault=fault, headers=headers_out)
        if method not in ("GET", "HEAD"):
            error = ("UnsupportedHttpVerb", "The resource doesn't support specified Http Verb.", "")
            return _Plan(405, fault=fault, error=error, headers=base | {"Allow": "GET, HEAD"})
        if not name:
            error = ("ContainerNotFound", "The specified container does not exist.", "")
            return _Plan(404, fault=fault, error=error, headers=base)
        denied = self._check_sas(name, query)
        if denied is not None:
            code, detail = denied
            status = 403
            return _Plan(status, fault=fault, error=(code, _message(code), detail), headers=base)
        blob = self._lookup(name)
        if blob is None:
            error = ("BlobNotFound", "The specified blob does not exist.", "")
            return _Plan(404, fault=fault, error=error, headers=base)
        out = base | {
            "Content-Type": blob.content_type,
            "ETag": blob.etag,
            "Last-Modified": email.utils.formatdate(blob.last_modified, usegmt=True),
            "Accept-Ranges": "bytes",
            "x-ms-blob-type": "BlockBlob",
            "x-ms-lease-status": "unlocked",
            "x-ms-lease-state": "available",
            "x-ms-server-encrypted": "true",
        }
        if blob.disposition is not None:
            out["Content-Disposition"] = blob.disposition
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None and blob.etag in (if_none_match, "*"):
            return _Plan(304, fault=fault, headers=out)
        wanted = _range(headers, blob)
        if isinstance(wanted, str):
            error = ("InvalidRange", _message("InvalidRange"), "")
            extra = {"Content-Range": f"bytes */{blob.size}"}
            return _Plan(416, fault=fault, error=error, headers=base | extra)
        if wanted is None:
            return _Plan(200, blob, 0, blob.size, fault, headers=out)
        start, end = wanted
        out["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        return _Plan(206, blob, start, end - start + 1, fault, headers=out)

    def _check_sas(self, name: str, query: Mapping[str, str]) -> tuple[str, str] | None:
        """None when the link may read ``name``, else (error code, AuthenticationErrorDetail)."""
        sig = query.get("sig", "")
        se = query.get("se", "")
        if not sig:
            return "AuthenticationFailed", "sig is mandatory. Cannot be empty"
        if not se:
            return "AuthenticationFailed", "se is mandatory. Cannot be empty"
        issued = (name, se, sig) in self._grants
        if not (
            issued or self._any_sig or (self._fixed_sig is not None and sig == self._fixed_sig)
        ):
            # Azure shows the string it signed; it holds no secret, only the link's fields.
            resource = f"/blob/{ACCOUNT}/{self.container}/{name}"
            sp, st, spr, sv, sr = (query.get(k, "") for k in ("sp", "st", "spr", "sv", "sr"))
            signed = "\n".join([sp, st, se, resource, "", "", spr, sv, sr, *[""] * 7])
            return (
                "AuthenticationFailed",
                f"Signature did not match. String to sign used was {signed}",
            )
        try:
            expiry = datetime.fromisoformat(se.replace("Z", "+00:00"))
        except ValueError:
            return "AuthenticationFailed", "Signature fields not well formed."
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        now = datetime.now(UTC).replace(microsecond=0)
        if expiry <= now:
            detail = (
                f"Signed expiry time [{email.utils.format_datetime(expiry, usegmt=True)}] must be"
                f" after signed start time [{email.utils.format_datetime(now, usegmt=True)}]"
            )
            return "AuthenticationFailed", detail
        if "r" not in query.get("sp", ""):
            return "AuthorizationPermissionMismatch", ""
        return None

    def _lookup(self, name: str) -> _Blob | None:
        blob = self._blobs.get(name)
        if blob is not None or self.root is None:
            return blob
        path = (self.root / name).resolve()
        # Nothing outside the root, whatever ".." or symlinks the name holds.
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return _Blob.of(path, content_type, None, now=time.time())


# --------------------------------------------------------------------------- helpers


def _message(code: str) -> str:
    messages = {
        "AuthenticationFailed": _AUTH_MESSAGE,
        "AuthorizationPermissionMismatch": (
            "This request is not authorized to perform this operation using this permission."
        ),
        "InvalidRange": _STATUS_ERRORS[416][1],
    }
    return messages.get(code, "Error.")


def _error_response(plan: _Plan) -> web.Response:
    assert plan.error is not None
    code, message, detail = plan.error
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 10:07d}Z"
    request_id = plan.headers.get("x-ms-request-id", "")
    extra = (
        f"<AuthenticationErrorDetail>{escape(detail)}</AuthenticationErrorDetail>" if detail else ""
    )
    # Azure's error bodies start with a UTF-8 byte order mark.
    body = (
        '\ufeff<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}\n"
        f"RequestId:{request_id}\nTime:{stamp}</Message>{extra}</Error>"
    ).encode()
    headers = {**plan.headers, "Content-Type": "application/xml", "x-ms-error-code": code}
    return web.Response(status=plan.status, body=body, headers=headers)


def _range(headers: Mapping[str, str], blob: _Blob) -> tuple[int, int] | str | None:
    """The one byte range asked for, inclusive; None for the whole file; "invalid" for 416.
    A form Azure ignores (several ranges, other units) is the whole file, as there."""
    value = headers.get("x-ms-range") or headers.get("range")
    if value is None or not value.startswith("bytes=") or "," in value:
        return None
    first, dash, last = value.removeprefix("bytes=").strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or blob.size == 0:
            return "invalid"
        return max(0, blob.size - count), blob.size - 1
    start = int(first)
    if start >= blob.size:
        return "invalid"
    end = min(int(last), blob.size - 1) if last.isdigit() else blob.size - 1
    return None if end < start else (start, end)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``event`` is set first; True when it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def _write_range(response: web.StreamResponse, blob: _Blob, start: int, length: int) -> None:
    if blob.data is not None:
        view = memoryview(blob.data)[start : start + length]
        for offset in range(0, len(view), _CHUNK):
            await response.write(bytes(view[offset : offset + _CHUNK]))
        return
    assert blob.path is not None
    with blob.path.open("rb") as file:
        file.seek(start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(file.read, min(_CHUNK, left))
            if not chunk:
                break
            await response.write(chunk)
            left -= len(chunk)


def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the connection where the response stands; the client sees it end early."""
    transport = request.transport
    if transport is not None:
        # close() sends what is buffered first, so the client gets exactly the bytes written.
        transport.close()
    return response if response is not None else web.StreamResponse(status=499)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.file_server",
        description="Serve every file under a folder as Azure-Blob-like SAS downloads.",
    )
    parser.add_argument("--root", type=Path, required=True, help="the folder to serve")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--container", default=DEFAULT_CONTAINER)
    parser.add_argument(
        "--sig", default=None, help="the only sig accepted (default: any non-empty sig)"
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="print METHOD /path STATUS per request on stderr (never the query)",
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a folder")

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    server = FileServer(
        root=args.root,
        container=args.container,
        port=args.port,
        sig=args.sig,
        accept_any_sig=args.sig is None,
        access_log=log if args.access_log else None,
    )
    with server:
        print(f"ready {server.url}", flush=True)
        while not stop.is_set():
            # A bounded wait, so the signal handler runs promptly whatever the platform.
            stop.wait(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
