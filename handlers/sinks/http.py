"""The HTTP sink: POSTs each event, and each file, signed with Standard Webhooks, to a URL of yours.

The body is the normalized event (``body = "event"``, ``Event.to_json()``) or the
vendor's payload (``body = "payload"``), as JSON.  Every request carries ``webhook-id`` (the
event id, so the receiver can dedupe redeliveries), ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`` made with ``secret``.  The
secret is required: an unsigned webhook is easy to forge, so going without takes an explicit
``sign = false``.  Custom ``headers`` (e.g. ``Authorization``) are added, but may not replace
``content-type``, ``content-disposition``, ``webhook-*``, ``hookdock-*`` or the framing headers
the client owns.

Files (``deliver_file``, so the sink is a ``FileSink``): each file an event carries is POSTed
as its own request to the same ``url``, before the event.  The body is the file's raw bytes;
the headers are ``content-type`` (the file's), ``content-length``, ``content-disposition:
attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded name>`` (RFC 6266,
RFC 8187), ``webhook-id: <event id>.<role>``, ``webhook-timestamp``, ``webhook-signature``
(over ``id.timestamp.<file bytes>``), ``hookdock-event-id``, ``hookdock-file-role``,
``hookdock-file-sha256`` and ``hookdock-file-size``.  The event that follows records the same
SHA-256 and size in its ``files``.  The signature and the hash come before the body but cover
all of it, so the file is read twice: spooled into an anonymous temporary file (unsigned too,
for the hash and size), hashed for the signature in a thread, then streamed from the spool,
never whole in memory.  The same file delivered twice is sent twice with the same
``webhook-id``: the receiver dedupes it like an event.  An error of the download itself
(``IncomingFile.failure``) propagates as it is; nothing is sent then.  A file request has its
own total timeout, ``file_total_timeout_seconds`` (1 h): an event's 60 s would cut off the upload
of a large file every time.

The SSRF guard (``handlers.netguard``): the sink reaches no loopback, private, link-local or
otherwise internal address, nor a cloud metadata address (never, whatever the options say).
``allow_networks`` opts networks in (``["127.0.0.1/32"]`` for a receiver on this machine);
``allow_hosts`` (fnmatch patterns) restricts which host names ``url`` may have.  A host name
is checked at every connection, on every address it resolves to, and the connection goes to
the checked address (a DNS answer cannot change in between); an IP address in ``url``, which
is never resolved, and ``allow_hosts`` are checked once, when the sink is made, and reported
at every delivery and by ``check()``.  A refusal is ``AddressRefused``, permanent, saying
which option would allow it.

What an answer means (events and files alike)::

    2xx                        delivered
    408, 429, 5xx              RetryableSinkError (Retry-After, seconds or HTTP-date, honoured)
    connection error, timeout  RetryableSinkError
    410                        SinkGone: the host stops the sink until someone resumes it
    3xx                        PermanentSinkError: redirects are not followed; point ``url``
                               at the final address
    any other 4xx              PermanentSinkError
    refused address            AddressRefused (permanent), before any request

Messages carry the status, at most 200 characters of the answer (redacted) and the redacted
URL; never the secret nor a header value.

Why aiohttp: httpx's async pool degrades badly under many concurrent requests
(encode/httpx#3215), while aiohttp's pool keeps up; ``bench/http_sink.py`` measures the sink
against a bare aiohttp loop (and httpx).  One ``ClientSession`` per sink, made on first use on
the running loop and closed by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import IO, Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic import ValidationInfo as Info
from yarl import URL

from handlers.errors import PermanentSinkError, RetryableSinkError, SinkGone
from handlers.event import Event
from handlers.files import DEFAULT_CONTENT_TYPE, IncomingFile
from handlers.netguard import (
    AddressRefused,
    AllowedNetwork,
    GuardedResolver,
    HostPattern,
    NetPolicy,
    check_url,
    guarded_connector,
)
from handlers.redact import REDACTED, SECRETS, basic_credentials, redact_text, redact_url
from handlers.retry_after import parse_retry_after
from handlers.signing import (
    decode_whsec,
    standard_webhook_hmac,
    standard_webhook_v1,
    v1_signature,
)

__all__ = ["HttpSink", "HttpSinkConfig"]

MIN_SECRET_BYTES = 24
"""The shortest signing key accepted (Standard Webhooks asks for 24 to 64 bytes)."""

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# The signature, the body's framing and the connection belong to the sink and the client.
_RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-disposition",
        "transfer-encoding",
        "host",
        "connection",
    }
)
_SNIPPET = 200
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_READ_CAP = 64 * 1024
_FILE_CHUNK = 1024 * 1024
_CONTENT_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
# RFC 8187 attr-char, less ALPHA and DIGIT (which quote() keeps anyway).
_ATTR_CHARS = "!#$&+-.^_`|~"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL is not echoed: its query string or user info may be a credential.
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


Seconds = Annotated[float, AfterValidator(_positive)]


class HttpSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: Annotated[str, AfterValidator(_url)] = Field(repr=False)
    sign: bool = True
    """``false`` sends unsigned requests; only for receivers that authenticate otherwise."""
    secret: SecretStr | None = Field(default=None, validate_default=True)
    """A Standard Webhooks secret, ``whsec_<base64 of 24+ bytes>``; required unless
    ``sign = false``."""
    body: Literal["event", "payload"] = "event"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers; values are treated as secrets (an Authorization header is one)."""
    connect_timeout_seconds: Seconds = 5.0
    read_timeout_seconds: Seconds = 30.0
    total_timeout_seconds: Seconds = 60.0
    file_total_timeout_seconds: Seconds = 3600.0
    """The longest a file's request may take, upload included (an event's:
    ``total_timeout_seconds``)."""
    max_connections: Annotated[int, Field(ge=1)] = 100
    check_connection: bool = True
    """``hookdock check`` also opens (and closes) a connection, TLS included; it POSTs nothing."""
    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Networks the sink may reach although they are internal (loopback, private, ...), e.g.
    ``["127.0.0.1/32"]``; cloud metadata addresses stay refused."""
    allow_hosts: tuple[HostPattern, ...] = ()
    """Host name patterns (``*.example.com``) ``url`` must match; empty: any host."""

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None, info: Info) -> SecretStr | None:
        if value is None:
            if info.data.get("sign", True):
                raise ValueError(
                    "required (a Standard Webhooks 'whsec_...' secret) or sign = false"
                )
            return None
        if not info.data.get("sign", True):
            raise ValueError("set, but sign = false: remove one of them")
        secret = value.get_secret_value()
        try:
            key = decode_whsec(secret)
        except ValueError:
            raise ValueError("is not a valid secret: expected 'whsec_<base64>'") from None
        # Standard Webhooks: a secret is whsec_ and base64 of 24 to 64 random bytes.  A short
        # password such as "hunter2" also decodes as base64; it is refused, not used as a key.
        if not secret.startswith("whsec_") or len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"is too weak: expected 'whsec_' and the base64 of {MIN_SECRET_BYTES} random"
                " bytes or more (make one with `hookdock secret`)"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, SecretStr], info: Info) -> dict[str, SecretStr]:
        seen: set[str] = set()
        userinfo = "@" in urlsplit(info.data.get("url", "")).netloc
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name[:60]!r} is not a valid header name")
            if lowered in _RESERVED or lowered.startswith(("webhook-", "hookdock-")):
                raise ValueError(f"header {name!r} is set by the sink and cannot be overridden")
            if lowered in seen:
                raise ValueError(f"header {name!r} is given twice (names ignore case)")
            seen.add(lowered)
            if lowered == "authorization" and userinfo:
                raise ValueError(f"header {name!r} conflicts with the user info in url")
            if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
                raise ValueError(f"header {name!r}: the value must be printable ASCII")
        return headers

    def __repr_args__(self) -> Any:
        yield "url", redact_url(self.url)
        yield from super().__repr_args__()


class HttpSink:
    """POSTs every event to ``config.url``; see the module docstring for what answers mean."""

    config_model: ClassVar[type[BaseModel]] = HttpSinkConfig

    def __init__(self, config: HttpSinkConfig) -> None:
        self.config = config
        self.shown_url = redact_url(config.url)
        self._url = URL(config.url)
        secret = config.secret.get_secret_value() if config.secret is not None else None
        self._key = decode_whsec(secret) if secret is not None else None
        self._headers = {"user-agent": "hookdock-http-sink"}
        self._headers.update((k, v.get_secret_value()) for k, v in config.headers.items())
        self._headers["content-type"] = "application/json"
        # Scrubbed from every text we quote (an echoing endpoint, a client error holding the
        # URL): query values, a password, the secret and header values may be credentials.
        # Values under 4 characters are none, and scrubbing them would garble the text.
        # aiohttp sends a URL's user info as ``Authorization: Basic <base64>``: that value is
        # a credential too, and the one an echoing endpoint sends back.
        hidden = [secret, self._url.password, *self._url.query.values()]
        if self._url.user is not None:
            hidden.append(basic_credentials(self._url.user, self._url.password or ""))
        hidden += [v.get_secret_value() for v in config.headers.values()]
        self._hidden = sorted((h for h in hidden if h and len(h) >= 4), key=len, reverse=True)
        SECRETS.add(*self._hidden)
        self._policy = NetPolicy(
            allow_networks=config.allow_networks, allow_hosts=config.allow_hosts
        )
        # What the guard says of the URL itself cannot change (an IP address is never
        # resolved), so it is judged once; host names are judged at every connection.
        self._refused: str | None = None
        try:
            check_url(self._url, self._policy)
        except AddressRefused as exc:
            self._refused = f"http sink: {exc}"
        self._session: aiohttp.ClientSession | None = None
        # POSTs in progress by event id: a retry racing a slow first attempt joins it and
        # shares its outcome instead of sending a second request.
        self._sending: dict[str, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"HttpSink(url={self.shown_url!r}, body={self.config.body!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            c = self.config
            # sock_connect, not connect: aiohttp's connect also counts the wait for a free
            # pooled connection, which under load is queueing, not an unreachable endpoint.
            timeout = aiohttp.ClientTimeout(
                total=c.total_timeout_seconds,
                sock_connect=c.connect_timeout_seconds,
                sock_read=c.read_timeout_seconds,
            )
            connector = guarded_connector(self._policy, limit=c.max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, raise_for_status=False, trust_env=False
            )
        return self._session

    async def deliver(self, event: Event) -> None:
        joined = self._sending.get(event.event_id)
        if joined is not None:
            await asyncio.shield(joined)  # shielded: a cancelled joiner must not cancel it
            return
        # The first caller POSTs in its own task (no task per event: this is the hot path).
        sending = asyncio.get_running_loop().create_future()
        self._sending[event.event_id] = sending
        try:
            await self._post(event)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else _cancelled()
            sending.set_exception(failure)
            sending.exception()  # marks it retrieved when nobody joined
            raise
        else:
            sending.set_result(None)
        finally:
            del self._sending[event.event_id]

    async def _post(self, event: Event) -> None:
        body = event.to_json() if self.config.body == "event" else orjson.dumps(event.payload)
        headers = dict(self._headers)
        headers["webhook-id"] = event.event_id
        if self._key is not None:
            stamp = int(time.time())
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = standard_webhook_v1(
                self._key, event.event_id, stamp, body
            )
        await self._send(body, headers, "")

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        """POST ``file`` on its own to ``url``, before ``event``; see the module docstring."""
        self._check_refused()
        # Read to the end before anything is sent: the headers need the hash, size and
        # signature.  An error of the download propagates from here, untouched.
        async with file.spooled() as spool:
            info = file.info()
            msg_id = f"{event.event_id}.{file.role}"
            headers = dict(self._headers)
            content_type = info.content_type
            headers["content-type"] = (
                content_type if _CONTENT_TYPE.fullmatch(content_type) else DEFAULT_CONTENT_TYPE
            )
            headers["content-length"] = str(info.size)
            headers["content-disposition"] = _attachment(info.filename)
            headers["webhook-id"] = msg_id
            headers["hookdock-event-id"] = event.event_id
            headers["hookdock-file-role"] = file.role
            headers["hookdock-file-sha256"] = info.sha256
            headers["hookdock-file-size"] = str(info.size)
            if self._key is not None:
                stamp = int(time.time())
                headers["webhook-timestamp"] = str(stamp)
                headers["webhook-signature"] = await asyncio.to_thread(
                    _sign_spool, self._key, msg_id, stamp, spool
                )
            await self._send(
                _stream(spool),
                headers,
                f" to the {file.role} file",
                total=self.config.file_total_timeout_seconds,
            )

    def _check_refused(self) -> None:
        if self._refused is not None:
            raise AddressRefused(self._refused)

    async def _send(
        self,
        data: bytes | AsyncIterator[bytes],
        headers: dict[str, str],
        to: str,
        total: float | None = None,
    ) -> None:
        """POST ``data``; return on 2xx, else raise what the answer means (``to`` says what
        was sent, for the messages; ``total`` replaces ``total_timeout_seconds``)."""
        self._check_refused()
        where = self.shown_url
        c = self.config
        total = c.total_timeout_seconds if total is None else total
        timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=c.connect_timeout_seconds, sock_read=c.read_timeout_seconds
        )
        try:
            async with self._client().post(
                self._url, data=data, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                status = response.status
                answer = await _read_capped(response)
                retry_after = response.headers.get("retry-after")
                location = response.headers.get("location")
        except AddressRefused as exc:
            # From the resolver, unwrapped by aiohttp (it wraps OSErrors only).
            raise AddressRefused(f"http sink: {where}: {exc}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise RetryableSinkError(
                f"http sink: no connection to {where} within {self.config.connect_timeout_seconds}s"
            ) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise RetryableSinkError(
                f"http sink: {where} sent nothing for {self.config.read_timeout_seconds}s"
            ) from exc
        except TimeoutError as exc:
            raise RetryableSinkError(
                f"http sink: {where} did not answer within {total:g}s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            raise RetryableSinkError(f"http sink: cannot connect to {where}: {reason}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableSinkError(
                f"http sink: {where}: {type(exc).__name__}: {self._quote(str(exc))}"
            ) from exc
        if 200 <= status < 300:
            return
        said = f"http sink: {where} answered {status} {_PHRASES.get(status, '')}{to}"
        quoted = self._quote(answer[: _SNIPPET * 4].decode("utf-8", "replace"))
        detail = f": {quoted}" if quoted else ""
        if status in (408, 429) or 500 <= status < 600:
            raise RetryableSinkError(f"{said}{detail}", retry_after=parse_retry_after(retry_after))
        if status == 410:
            raise SinkGone(
                f"{said}: the endpoint is gone for good; the sink stops until it is fixed"
                f" and resumed{detail}"
            )
        if 300 <= status < 400:
            target = f" to {redact_url(location)}" if location else ""
            refused = PermanentSinkError(
                f"{said} (a redirect{target}); redirects are not followed: set url to the"
                f" final address{detail}"
            )
        else:
            refused = PermanentSinkError(f"{said}{detail}")
        # Counted by status where an operator looks (``hookdock status`` failures, metrics).
        refused.code = f"http_{status}"
        raise refused

    def _quote(self, text: str) -> str:
        """``text`` on one line, scrubbed, cut to about 200 characters."""
        text = text.replace(self.config.url, self.shown_url)
        for hidden in self._hidden:
            text = text.replace(hidden, REDACTED)
        # Redacted before it is cut: a secret cut in two would no longer be recognized.
        return redact_text(" ".join(text.split()))[:_SNIPPET]

    async def check(self) -> list[str]:
        """Whether the host resolves to addresses the guard allows and (``check_connection``)
        one of them accepts a connection."""
        if self._refused is not None:
            return [self._refused]
        host, port = self._url.raw_host or "", self._url.port or 0
        resolver = GuardedResolver(self._policy)
        try:
            resolved = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except AddressRefused as exc:
            return [f"http sink: {self.shown_url}: {exc}"]
        except (OSError, UnicodeError) as exc:
            return [f"http sink: the host of {self.shown_url} does not resolve: {exc}"]
        finally:
            await resolver.close()
        if not self.config.check_connection:
            return []
        # Connect to the addresses just checked, not to the name, which could resolve anew.
        tls = self._url.scheme == "https"
        problem = ""
        for address in dict.fromkeys(r["host"] for r in resolved):
            try:
                async with asyncio.timeout(self.config.connect_timeout_seconds):
                    _, writer = await asyncio.open_connection(
                        address, port, ssl=tls or None, server_hostname=host if tls else None
                    )
            except TimeoutError:
                problem = (
                    f"http sink: {self.shown_url} accepted no connection within"
                    f" {self.config.connect_timeout_seconds}s"
                )
                continue
            except OSError as exc:
                reason = self._quote(exc.strerror or str(exc))
                problem = f"http sink: {self.shown_url} accepted no connection: {reason}"
                continue
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.config.connect_timeout_seconds):
                    await writer.wait_closed()
            return []
        return [problem]

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _cancelled() -> RetryableSinkError:
    return RetryableSinkError("http sink: the request this delivery joined was cancelled")


def _sign_spool(key: bytes, msg_id: str, stamp: int, spool: IO[bytes]) -> str:
    """The signature over the whole spool (in a thread: it reads the disk), rewound after."""
    mac = standard_webhook_hmac(key, msg_id, stamp)
    while chunk := spool.read(_FILE_CHUNK):
        mac.update(chunk)
    spool.seek(0)
    return v1_signature(mac)


async def _stream(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(spool.read, _FILE_CHUNK):
        yield chunk


def _attachment(filename: str) -> str:
    """``content-disposition`` naming ``filename``: an ASCII fallback for old readers and the
    exact name as RFC 8187 UTF-8 (``filename*``), which readers that know it prefer."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    exact = quote(filename, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    # Reading the answer to its end lets the connection go back to the pool; a huge one is
    # cut off instead (the connection is then closed).
    chunks: list[bytes] = []
    size = 0
    while size < _READ_CAP:
        chunk = await response.content.read(_READ_CAP - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
