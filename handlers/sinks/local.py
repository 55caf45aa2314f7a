"""The local folder sink: one JSON file per event, written atomically under a root folder.

A write is temp file, fsync, rename, fsync of the directory: a reader never sees half a file
and a crash leaves either the old state or the whole new file.  Events delivered at once are
written together, each folder fsync'd once per batch (``local_batch.py``).  Every level under
the root is opened without following links (``local_fs.py``): a link there dead-letters the
send, naming it, rather than let a file land outside the root.  The final name holds the event
id, so delivering the same event again finds the file and does nothing (idempotent).

Files an event refers to are stored beside its JSON, named ``<event name>.<role><.ext>``
(``evt-0.exported.pdf``), streamed chunk by chunk straight into the folder through a
``.<name>.part`` temp file, renamed once complete and fsync'd; the next attempt removes what a
writer killed mid-transfer left.  Writeback starts while the file downloads (every 32 MiB), so
the fsync at the end waits for the last few MiB, not the whole file.  Size, SHA-256, content
type and the vendor's file name go into the event JSON beside it and, where the file system
keeps extended attributes, into ``user.mime_type`` and ``user.hookdock.*`` of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path, PurePosixPath
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from handlers.errors import PermanentSinkError
from handlers.event import Event
from handlers.files import FileInfo, IncomingFile, stored_name
from handlers.name_limits import NAME_MAX, NameLimits
from handlers.sinks.local_batch import CREATE, BatchWriter
from handlers.sinks.local_fs import ParentDir, write_error
from handlers.templates import EventTemplate, check_template

__all__ = ["LocalSink", "LocalSinkConfig"]

DEFAULT_TEMPLATE = "{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json"
LAST_SEGMENT_MAX = 200
"""Bytes the file name of an event may take: the rest of NAME_MAX is for the temp name
(``.<name>.tmp``) and a stored file's suffixes (``.<role>.<ext>``, ``.<name>.part``)."""


class LocalSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = "local"
    root: Path
    """Folder the files go under; relative paths are taken from the config file's folder."""
    path_template: str = DEFAULT_TEMPLATE
    """Relative path of each file, with ``{field}`` placeholders over the event's fields."""
    fsync: bool = True

    @field_validator("root")
    @classmethod
    def _resolve_root(cls, root: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not root.is_absolute() and base is not None:
            root = Path(base) / root
        return root

    @field_validator("path_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        return check_template(template)


class LocalSink:
    """Writes each event as pretty JSON to ``root / path_template``."""

    config_model: ClassVar[type[BaseModel]] = LocalSinkConfig
    default_concurrency: ClassVar[int] = 256
    """Slots unless ``concurrency`` is set: events written at once share their fsyncs, and
    while one batch waits on the disk and the journal the next is written (64 slots held
    1,000 events/s on PostgreSQL to 520 to 590 a second, each send's attempt 80 to 140 ms;
    256 to 770)."""

    def __init__(self, config: LocalSinkConfig) -> None:
        self.config = config
        self.root = config.root.resolve()
        self._template = EventTemplate(config.path_template, sink="local sink")
        self._limits = NameLimits(segment_bytes=NAME_MAX, last_segment_bytes=LAST_SEGMENT_MAX)
        # Writes in progress by target: the same event delivered twice at once (a retry racing
        # a slow first attempt) joins the first write instead of racing it for the temp file.
        self._writing: dict[Path, asyncio.Future[None]] = {}
        self._writer = BatchWriter(self.root, fsync=config.fsync)

    def path_for(self, event: Event) -> Path:
        # No resolve(): it asks the disk about every path component.  The template is relative
        # without "..", and every value is free of separators, "." and "..", so the joined path
        # stays under the root by construction; the check below is a cheap second guard.
        rendered = self._template.render(event)
        template = self.config.path_template
        self._limits.check(rendered, template, event, sink="local sink", what="path")
        target = self.root / rendered
        if ".." in target.parts or not target.is_relative_to(self.root) or target == self.root:
            raise PermanentSinkError("local sink: the path template leaves the root folder")
        return target

    async def deliver(self, event: Event) -> None:
        target = self.path_for(event)
        writing = self._writing.get(target)
        if writing is None:
            data = event.to_json(indent=True)
            writing = asyncio.ensure_future(self._writer.write(target, data))
            self._writing[target] = writing
            writing.add_done_callback(lambda _: self._writing.pop(target, None))
        try:
            await asyncio.shield(writing)
        except OSError as exc:
            raise write_error(target, exc) from exc

    def file_path_for(self, event: Event, role: str, filename: str) -> Path:
        target = self.path_for(event)
        stem = target.name.removesuffix(".json")
        return target.with_name(stored_name(stem, role, filename))

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        target = self.file_path_for(event, file.role, file.filename)
        try:
            writer = await asyncio.to_thread(_FileWriter.open, self.root, target)
        except OSError as exc:
            raise write_error(target, exc) from exc
        writing: asyncio.Future[None] | None = None
        try:
            # One write in flight while the next chunk arrives (and is hashed): the disk, the
            # hash and the network each keep busy.
            async for chunk in file:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(writer.write, chunk))
            if writing is not None:
                await writing
                writing = None
            await asyncio.to_thread(writer.commit, file.info(), event.event_id, self.config.fsync)
        except OSError as exc:
            raise write_error(target, exc) from exc
        finally:
            if writing is not None:
                # The stream failed with a write in flight: let it end before closing the file.
                await asyncio.gather(writing, return_exceptions=True)
            await asyncio.to_thread(writer.close)

    async def aclose(self) -> None:
        """Let the fsync threads go (at shutdown; harmless twice)."""
        await asyncio.to_thread(self._writer.close)

    async def check(self) -> list[str]:
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            return [f"local sink: root {self.root} is not writable: {exc}"]
        return []

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".hookdock-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()


_WRITEBACK_BYTES = 32 * 1024 * 1024


class _FileWriter:
    """One file being streamed into place; nothing is visible under its name until commit."""

    def __init__(self, folder: ParentDir, name: str, fd: int, temp: str) -> None:
        self.folder = folder
        self.name = name
        self.fd = fd
        self.temp: str | None = temp
        self.closed = False
        self.written = 0
        self.flushed = 0

    @classmethod
    def open(cls, root: Path, target: Path) -> _FileWriter:
        folder = ParentDir(root, PurePosixPath(target.relative_to(root)))
        try:
            folder.exists(target.name)  # a link at the name is refused, not replaced
            # One temp name per file: a writer killed mid-transfer leaves a partial file that
            # the next attempt (one always follows) removes.  A racing attempt at the same file
            # loses its temp file and fails, to be retried: the winner's bytes are the same.
            temp = f".{target.name}.part"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=folder.fd)
            return cls(folder, target.name, os.open(temp, CREATE, 0o644, dir_fd=folder.fd), temp)
        except BaseException:
            folder.close()
            raise

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view) :]
        self.written += len(chunk)
        if self.written - self.flushed >= _WRITEBACK_BYTES:
            # Start writing the file out while it downloads (DONTNEED starts writeback of
            # dirty pages and drops clean ones), so the fsync at the end has little left to
            # do and a large file does not crowd the page cache.
            # The window before the last one is on its way to disk by now: dropped this time.
            start = max(0, self.flushed - _WRITEBACK_BYTES)
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(self.fd, start, self.written - start, os.POSIX_FADV_DONTNEED)
            self.flushed = self.written

    def commit(self, info: FileInfo, event_id: str, fsync: bool) -> None:
        _set_attributes(self.fd, info, event_id)
        if fsync:
            os.fsync(self.fd)
        if self.temp is not None:
            os.replace(self.temp, self.name, src_dir_fd=self.folder.fd, dst_dir_fd=self.folder.fd)
            self.temp = None
        if fsync:
            os.fsync(self.folder.fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)
        try:
            if self.temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.temp, dir_fd=self.folder.fd)
        finally:
            self.folder.close()


def _set_attributes(fd: int, info: FileInfo, event_id: str) -> None:
    attributes = {
        "user.mime_type": info.content_type,
        "user.hookdock.sha256": info.sha256,
        "user.hookdock.filename": info.filename,
        "user.hookdock.event_id": event_id,
    }
    for name, value in attributes.items():
        # Best effort: tmpfs without user xattrs, NFS, ... keep the event JSON as the record.
        with contextlib.suppress(OSError, AttributeError):
            os.setxattr(fd, name, value.encode())
