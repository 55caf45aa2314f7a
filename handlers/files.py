"""Files that travel with events: what a sink is handed, and what is recorded once stored.

The host downloads a file an event refers to (``FileRef``) and hands it to each sink that
takes files as an ``IncomingFile``: a one-shot stream of chunks that counts, hashes (SHA-256)
and caps the bytes as they pass.  A sink reads it once, to the end, straight into its
destination; a sink that must read it twice (to sign it before sending it, say) spools it with
``IncomingFile.spooled()`` into an anonymous temporary file, which the kernel frees even if the
process is killed.  Once the stream is read, ``info()`` is the ``FileInfo`` the host records
with the send and puts into the event the sink delivers next.

Errors of the download itself are raised from the stream and also kept on ``failure``: the
host reports them as the fetch's, whatever a sink made of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Annotated
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from handlers.errors import FileUnavailable, HandlerError

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "FileInfo",
    "IncomingFile",
    "filename_from_url",
    "format_bytes",
    "sanitize_filename",
    "stored_name",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_HASH_IN_THREAD = 256 * 1024


class FileInfo(BaseModel):
    """What hookdock recorded of a file it stored: the same for every sink that got it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    content_type: str
    filename: str
    """Sanitized: a plain name, no folders, no control characters."""


# Characters that are unsafe or troublesome in a file name on some system or tool.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_MAX_NAME_BYTES = 200


def sanitize_filename(name: str, *, fallback: str = "file") -> str:
    """A plain, portable file name from ``name`` as a vendor sent it (header or URL).

    Keeps the last path component only, NFC-normalizes, replaces control and reserved
    characters with ``_``, drops leading dots and trailing dots and spaces (hidden files,
    Windows), and shortens to 200 UTF-8 bytes keeping the extension.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").rstrip(". ")
    if not name:
        return fallback
    encoded = name.encode()
    if len(encoded) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or len(ext.encode()) > 16:
            stem, ext = name, ""
        room = _MAX_NAME_BYTES - (len(ext.encode()) + 1 if ext else 0)
        stem = stem.encode()[:room].decode(errors="ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name or fallback


def filename_from_url(url: str) -> str:
    """The sanitized last path segment of ``url`` (percent-decoded), or ``file``."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "file"
    return sanitize_filename(unquote(PurePosixPath(path).name))


_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def stored_name(stem: str, role: str, filename: str) -> str:
    """How sinks name a stored file beside its event: ``<stem>.<role><.ext of filename>``.

    Only the extension of the vendor's file name goes into the stored name (an extension of
    letters and digits, at most ten), so the name is safe and predictable; the full name is
    recorded in ``FileInfo.filename`` and the object metadata.
    """
    suffix = PurePosixPath(filename).suffix
    return f"{stem}.{role}{suffix.lower() if _SUFFIX.match(suffix) else ''}"


def format_bytes(size: int) -> str:
    """``2147483648`` as ``2.0 GiB``, for messages a person reads."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class IncomingFile:
    """One download, handed to one sink as a stream; iterate it once, to the end.

    ``declared_size`` is the sender's ``Content-Length`` when it gave one.  The stream raises
    ``FileUnavailable`` (code ``file_too_large``) as soon as more than ``max_bytes`` have
    passed, and a ``HandlerError`` if it ends short of ``declared_size``.
    """

    def __init__(
        self,
        role: str,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
        declared_size: int | None = None,
        max_bytes: int | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.role = role
        self.filename = filename
        self.content_type = content_type
        self.declared_size = declared_size
        self.max_bytes = max_bytes
        self.spool_dir = spool_dir
        self._chunks = chunks
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._started = False
        self._done = False
        self.failure: BaseException | None = None
        """The download's own error, if it failed while a sink was reading it."""

    @classmethod
    def from_bytes(
        cls,
        role: str,
        data: bytes,
        *,
        filename: str = "file.bin",
        content_type: str = DEFAULT_CONTENT_TYPE,
        chunk_size: int = 64 * 1024,
    ) -> IncomingFile:
        """A file from memory, in ``chunk_size`` pieces: for tests and for small payloads."""

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), chunk_size):
                yield data[start : start + chunk_size]

        return cls(
            role, chunks(), filename=filename, content_type=content_type, declared_size=len(data)
        )

    @property
    def done(self) -> bool:
        """True once the whole file has been read."""
        return self._done

    @property
    def bytes_read(self) -> int:
        return self._size

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError(f"file {self.role!r} is a one-shot stream and was read already")
        self._started = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        # hashlib lets go of the GIL on large inputs, so a large chunk is hashed in a thread
        # while the consumer stores it and the download goes on: one hash in flight at a time
        # keeps the updates in order.
        hashing: asyncio.Future[None] | None = None
        try:
            async for chunk in self._chunks:
                if not chunk:
                    continue
                self._size += len(chunk)
                if self.max_bytes is not None and self._size > self.max_bytes:
                    raise FileUnavailable(
                        f"the {self.role} file is larger than the route's cap of "
                        f"{format_bytes(self.max_bytes)} (files.max_bytes); not stored",
                        code="file_too_large",
                    )
                if hashing is not None:
                    await hashing
                    hashing = None
                if len(chunk) >= _HASH_IN_THREAD:
                    hashing = asyncio.ensure_future(asyncio.to_thread(self._sha256.update, chunk))
                else:
                    self._sha256.update(chunk)
                yield chunk
            if hashing is not None:
                await hashing
            if self.declared_size is not None and self._size != self.declared_size:
                raise HandlerError(
                    f"the {self.role} file ended after {self._size} of "
                    f"{self.declared_size} bytes (connection cut)"
                )
        except BaseException as exc:
            if self.failure is None and not isinstance(exc, GeneratorExit):
                self.failure = exc
            raise
        self._done = True

    @asynccontextmanager
    async def spooled(self) -> AsyncIterator[IO[bytes]]:
        """Read the whole stream into an anonymous temporary file; yield it rewound.

        The file has no name on disk (``O_TMPFILE``, or unlinked at once where that is not
        available): it is gone when closed, and when the process dies, whatever kills it.
        """
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            async for chunk in self:
                spool.write(chunk)
            spool.flush()
            spool.seek(0)
            yield spool

    def info(self) -> FileInfo:
        """Size, SHA-256, content type and name; only once the stream was read to the end."""
        if not self._done:
            raise RuntimeError(f"file {self.role!r} was not read to the end")
        return FileInfo(
            size=self._size,
            sha256=self._sha256.hexdigest(),
            content_type=self.content_type,
            filename=self.filename,
        )
