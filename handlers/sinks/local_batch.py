"""Event files written in groups: the disk's cost of a batch is paid once per batch.

The dispatcher delivers many events to the folder sink at once (one per slot).  Writing each
on its own costs a file fsync, a folder fsync and a thread hop each; here the events waiting
when the writer thread comes round are written together:

1. each folder is opened once (level by level, without following links: ``local_fs``);
2. every file goes to its temp name, and is fsync'd (its data on disk before its name);
3. every temp file is renamed to its final name;
4. every folder that got a name, and every folder that got a new folder, is fsync'd once.

The fsyncs of a step are issued together from a few threads: a journaling file system commits
concurrent fsyncs in one go, where one after the other each waits for a commit of its own.

Only then is any of them answered: an event is ``delivered`` once its file and its name are
durable, as before.  A file already in place is left alone (the name holds the event id). A
failure is the failing file's own: the others of the batch are written all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from handlers.sinks.local_fs import ParentDir

__all__ = ["CREATE", "BatchWriter"]

# O_EXCL|O_CREAT never follows a link at the name; O_NOFOLLOW says so for the reader.
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FSYNC_THREADS = 16
"""fsyncs in flight at once (see ``_fsync_all``)."""
MAX_BATCH = 256
"""Files written together at most: bounds the file descriptors a batch holds open."""


@dataclass(slots=True)
class _File:
    target: Path
    data: bytes
    future: asyncio.Future[None]
    error: BaseException | None = None
    folder: ParentDir | None = None
    fd: int = -1
    temp: str = ""
    named: bool = False
    """Its final name is in place (made now or found): its folder is to be synced."""


@dataclass(slots=True)
class _Batch:
    files: list[_File]
    folders: dict[Path, ParentDir] = field(default_factory=dict)
    made: list[int] = field(default_factory=list)
    """Descriptors of folders that got a new folder in them: their entry must be synced too."""


class BatchWriter:
    """Collects ``write`` calls on the event loop and writes them in groups on one thread."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self._queue: list[_File] = []
        self._pool: ThreadPoolExecutor | None = None
        self._running: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Shut the fsync threads down; a later batch starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def write(self, target: Path, data: bytes) -> None:
        """Write ``data`` to ``target`` (under the root) atomically; durable on return if
        ``fsync``.  An ``OSError`` (or ``LinkRefused``) is this file's own."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_File(target, data, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._queue:
            # Yield once so that every deliver started in this turn of the loop joins.
            await asyncio.sleep(0)
            files, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await asyncio.to_thread(self._write_batch, files)
            except BaseException as exc:  # cancelled, or a bug: nobody may wait forever
                for f in files:
                    if not f.future.done():
                        f.future.set_exception(exc)
                raise
            for f in files:
                if f.future.done():
                    continue
                if f.error is None:
                    f.future.set_result(None)
                else:
                    f.future.set_exception(f.error)

    # ------------------------------------------------------------------ on the writer thread

    def _write_batch(self, files: list[_File]) -> None:
        batch = _Batch(files)
        try:
            for f in files:
                self._step(f, partial(self._open, batch, f))
            if self.fsync:
                synced = self._fsync_all([f.fd for f in files if f.error is None and f.fd >= 0])
                for f in files:
                    if f.error is None and synced.get(f.fd) is not None:
                        f.error = synced[f.fd]
            for f in files:
                self._close(f)
                self._step(f, partial(self._rename, f))
            if self.fsync:
                self._sync_folders(batch)
        finally:
            for f in files:
                self._close(f)
            for folder in batch.folders.values():
                folder.close()
            for fd in batch.made:
                os.close(fd)

    @staticmethod
    def _step(f: _File, action: Callable[[], object]) -> None:
        if f.error is not None:
            return
        try:
            action()
        except Exception as exc:
            f.error = exc

    def _open(self, batch: _Batch, f: _File) -> None:
        relative = PurePosixPath(f.target.relative_to(self.root))
        folder = batch.folders.get(f.target.parent)
        if folder is None:
            folder = ParentDir(self.root, relative, made=batch.made)
            batch.folders[f.target.parent] = folder
        f.folder = folder
        name = f.target.name
        if folder.exists(name):
            # Already delivered (the name holds the event id), perhaps by an attempt whose
            # folder fsync failed: the folder is synced again all the same.
            f.named = True
            return
        # One temp name per target: a writer killed before its rename leaves a temp file that
        # the retry (one always follows) takes over, so crashes leave no orphans.
        f.temp = f".{name}.tmp"
        try:
            f.fd = os.open(f.temp, CREATE, 0o644, dir_fd=folder.fd)
        except FileExistsError:
            # A killed writer's, or another worker's writing the same event right now: the
            # content is the same either way.  Should that writer's rename then fail, its
            # attempt is retried and finds the file in place.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.temp, dir_fd=folder.fd)
            f.fd = os.open(f.temp, CREATE, 0o644, dir_fd=folder.fd)
        view = memoryview(f.data)
        while view:
            view = view[os.write(f.fd, view) :]

    def _fsync_all(self, fds: list[int]) -> dict[int, OSError | None]:
        """fsync every descriptor at once: the file system commits concurrent fsyncs together
        (ext4's journal: 16 at once cost little more than one), one after the other each pays
        a commit of its own."""
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                FSYNC_THREADS, thread_name_prefix="hookdock-fsync"
            )
        return dict(zip(fds, pool.map(_fsync, fds), strict=True))

    @staticmethod
    def _rename(f: _File) -> None:
        if not f.temp or f.folder is None:
            return
        os.replace(f.temp, f.target.name, src_dir_fd=f.folder.fd, dst_dir_fd=f.folder.fd)
        f.named = True

    @staticmethod
    def _close(f: _File) -> None:
        if f.fd >= 0:
            fd, f.fd = f.fd, -1
            os.close(fd)

    def _sync_folders(self, batch: _Batch) -> None:
        """Each folder that got (or already had) a name of the batch, and each that got a new
        folder, fsync'd once; should one fail, no file of the batch counts as durable."""
        named = {id(f.folder): f.folder.fd for f in batch.files if f.named and f.folder}
        unique: dict[tuple[int, int], int] = {}
        for fd in [*named.values(), *batch.made]:
            st = os.fstat(fd)
            unique.setdefault((st.st_dev, st.st_ino), fd)
        failed = next((e for e in self._fsync_all(list(unique.values())).values() if e), None)
        if failed is not None:
            for f in batch.files:
                if f.error is None:
                    f.error = failed


def _fsync(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None
