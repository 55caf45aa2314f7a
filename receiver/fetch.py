"""Fetching the files events refer to: one guarded, streamed download per (event, sink, file).

A route's ``[routes.files]`` table says which references to fetch (``fetch``, by role), how
big a file may be (``max_bytes``), which hosts and private networks may be reached, and the
timeouts.  Each fetch is a GET through the SSRF guard (``handlers.netguard``: every address
checked after one resolution and connected to as checked, every redirect hop checked again,
never https to http), handed to the sink as an ``IncomingFile`` stream that is never held
whole in memory.

What an answer means, for a person reading the dead-letter reason::

    403                 link_expired: the link ran out (or its signature no longer holds)
    404, 410            file_deleted: the vendor no longer has the file
    other 4xx, 3xx      file_refused
    Content-Length      file_too_large when over max_bytes (and the stream is cut at the cap)
    408, 429, 5xx       retried (``Retry-After`` honoured) while the link is valid
    no connection, timeouts, a cut body: retried while the link is valid

A URL's query string is a credential (the SAS signature): every message names the file by
its role, host and redacted URL only.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from yarl import URL

from handlers.errors import FileUnavailable, PermanentSinkError, RetryableSinkError
from handlers.event import FileRef
from handlers.files import (
    DEFAULT_CONTENT_TYPE,
    FileInfo,
    IncomingFile,
    filename_from_url,
    format_bytes,
    sanitize_filename,
)
from handlers.netguard import AddressRefused, NetPolicy, get_following, guarded_connector
from handlers.redact import redact_text
from handlers.retry_after import parse_retry_after
from receiver.config import FilesConfig

__all__ = ["FetchRetryable", "Fetcher"]

log = logging.getLogger("hookdock.fetch")

CHUNK_BYTES = 4 * 1024 * 1024
# aiohttp buffers about this much of a body ahead of the reader (it pauses reading at twice
# it): large chunks keep the per-chunk work (hash, write) small next to the bytes, and a
# transfer still takes only a few chunks of memory (bench/file_transfer.py).
_READ_BUFFER = CHUNK_BYTES
_ERROR_BODY = 4096
_NUMBERED = re.compile(r"-[0-9]+$")
"""The second and later files of one role: ``exported-2`` is fetched with ``exported``."""
_AZURE_CODE = re.compile(rb"<Code>([A-Za-z0-9]{1,64})</Code>")


class FetchRetryable(RetryableSinkError):
    """A fetch that may pass later; ``expires_at`` is when its link stops working, if known."""

    def __init__(
        self, message: str, *, expires_at: datetime | None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.expires_at = expires_at


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _filename(response: aiohttp.ClientResponse, url: str) -> str:
    disposition = response.headers.get("Content-Disposition")
    if disposition:
        with contextlib.suppress(Exception):  # a malformed header from the vendor: use the URL
            kind, params = parse_content_disposition(disposition)
            name = content_disposition_filename(params, "filename") if kind else None
            if name:
                return sanitize_filename(name)
    return filename_from_url(url)


def _content_type(response: aiohttp.ClientResponse) -> str:
    value = response.headers.get("Content-Type", "").strip()
    # Kept as sent (parameters too), unless it could not be a media type at all.
    if not value or "/" not in value or any(ord(c) < 32 for c in value) or len(value) > 200:
        return DEFAULT_CONTENT_TYPE
    return value


class Fetcher:
    """Downloads one route's files: one pooled, guarded aiohttp session, made on first use."""

    def __init__(self, route: str, config: FilesConfig, spool_dir: Path | None) -> None:
        self.route = route
        self.config = config
        self.roles = frozenset(config.fetch)
        self.spool_dir = spool_dir
        self.policy = NetPolicy(
            allow_networks=config.allow_networks, allow_hosts=config.allow_hosts
        )
        self._session: aiohttp.ClientSession | None = None

    def wants(self, ref: FileRef) -> bool:
        return ref.role in self.roles or _NUMBERED.sub("", ref.role) in self.roles

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=self.config.total_seconds,
                sock_connect=self.config.connect_seconds,
                sock_read=self.config.read_seconds,
            )
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.policy),
                timeout=timeout,
                read_bufsize=_READ_BUFFER,
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def transfer(
        self, ref: FileRef, consume: Callable[[IncomingFile], Awaitable[None]]
    ) -> FileInfo:
        """Fetch ``ref`` and let ``consume`` (a sink's ``deliver_file``) read it to the end."""
        what = f"the {ref.role} file"
        try:
            response = await get_following(
                self._client(),
                ref.url,
                self.policy,
                max_redirects=self.config.max_redirects,
                headers={"Accept-Encoding": "identity"},
            )
        except (AddressRefused, PermanentSinkError) as exc:
            raise FileUnavailable(
                f"{what} was not fetched: {redact_text(str(exc))}",
                code=getattr(exc, "code", None) or "address_refused",
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._retryable(ref, f"cannot fetch {what}", exc) from None
        try:
            await self._check_answer(ref, response)
            incoming = IncomingFile(
                ref.role,
                self._chunks(ref, response),
                filename=_filename(response, ref.url),
                content_type=_content_type(response),
                declared_size=response.content_length,
                max_bytes=self.config.max_bytes,
                spool_dir=self.spool_dir,
            )
            try:
                await consume(incoming)
            except BaseException as exc:
                if incoming.failure is not None and incoming.failure is not exc:
                    # The sink wrapped the download's own error: report the download's.
                    raise incoming.failure from None
                raise
            if not incoming.done:
                raise PermanentSinkError(
                    f"the sink returned before reading {what} to its end (a bug in the sink)"
                )
            return incoming.info()
        finally:
            response.release()

    async def _chunks(self, ref: FileRef, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            what = f"the download of the {ref.role} file broke off"
            raise self._retryable(ref, what, exc) from None

    async def _check_answer(self, ref: FileRef, response: aiohttp.ClientResponse) -> None:
        status = response.status
        what = f"the {ref.role} file"
        host = URL(ref.url).host or "?"
        if 200 <= status < 300:
            size = response.content_length
            if size is not None and size > self.config.max_bytes:
                raise FileUnavailable(
                    f"{what} is {format_bytes(size)}, over the route's cap of "
                    f"{format_bytes(self.config.max_bytes)} (files.max_bytes); not fetched",
                    code="file_too_large",
                )
            return
        vendor_code = await self._vendor_code(response)
        said = f"HTTP {status}{f' {vendor_code}' if vendor_code else ''} from {host}"
        if status == 403:
            raise FileUnavailable(self._refused_reason(ref, said), code="link_expired")
        if status in (404, 410):
            raise FileUnavailable(
                f"{what} was deleted at the vendor ({said}); it cannot be fetched any more",
                code="file_deleted",
            )
        if status in (408, 429) or status >= 500:
            raise FetchRetryable(
                f"cannot fetch {what}: {said}",
                expires_at=ref.expires_at,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise FileUnavailable(f"{what} was refused: {said}", code="file_refused")

    @staticmethod
    def _refused_reason(ref: FileRef, said: str) -> str:
        what = f"the {ref.role} file"
        if ref.expires_at is None:
            return f"the link to {what} was refused ({said}): it has expired or was revoked"
        now = datetime.now(UTC)
        if ref.expires_at <= now:
            return (
                f"the link to {what} expired at {_when(ref.expires_at)} ({said}); "
                "ask the vendor to send the webhook again"
            )
        return (
            f"the link to {what} was refused ({said}) although it is valid until "
            f"{_when(ref.expires_at)}: its signature was revoked or is not valid"
        )

    @staticmethod
    async def _vendor_code(response: aiohttp.ClientResponse) -> str | None:
        # Azure names the failure in <Code>; only that word is kept: the rest of its message can
        # quote the request, and a word of letters and digits cannot carry a credential.
        with contextlib.suppress(Exception):
            body = await response.content.read(_ERROR_BODY)
            match = _AZURE_CODE.search(body)
            if match:
                return match.group(1).decode()
        return None

    def _retryable(self, ref: FileRef, what: str, exc: BaseException) -> FetchRetryable:
        config = self.config
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            reason = f"timed out: no connection within {config.connect_seconds:g} s"
        elif isinstance(exc, aiohttp.SocketTimeoutError):
            reason = f"timed out: nothing received for {config.read_seconds:g} s"
        elif isinstance(exc, TimeoutError):
            reason = f"timed out: not done within {config.total_seconds:g} s"
        else:
            reason = redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        host = URL(ref.url).host or "?"
        return FetchRetryable(f"{what} from {host}: {reason}", expires_at=ref.expires_at)
