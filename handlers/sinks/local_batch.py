"""Event files written in groups: the disk's cost of a batch is paid once per batch.

The dispatcher delivers many events to the folder sink at once (one per slot).  Writing each
on its own costs a file fsync, a folder fsync and a thread hop each; here the events waiting
when a writer thread comes round are written together, and while one batch waits for the disk
the next is written (``WRITERS`` batches at most):

1. each folder is opened once (level by level from the one above it, without following links:
   ``local_fs``); a file in a folder made just now is not looked for;
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
from typing import Any

from handlers.sinks.local_fs import LinkRefused, ParentDir

__all__ = ["CREATE", "BatchWriter"]

# O_EXCL|O_CREAT never follows a link at the name; O_NOFOLLOW says so for the reader.
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FSYNC_THREADS = 64
"""fsyncs in flight at once (see ``_fsync_all``): threads that wait on the disk cost little."""
WRITERS = 4
"""Batches in flight at once: while one waits for its fsyncs, the next creates its files."""
MAX_BATCH = 256
"""Files written together at most: bounds the file descriptors a batch holds open."""

Folder = tuple[str, ...]
"""A folder by its names under the root."""


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
    folders: dict[Folder, ParentDir] = field(default_factory=dict)
    """Every folder the batch opened, each level once."""
    made: dict[Folder, int] = field(default_factory=dict)
    """Descriptors of folders that got a new folder in them: their entry must be synced too."""
    synced: asyncio.Future[BaseException | None] | None = None
    """Done when the batch's writes and fsyncs are over: with why its folders are not known
    to be durable, or None."""
    beside: list[asyncio.Future[BaseException | None]] = field(default_factory=list)
    """The ``synced`` of every batch that ran at the same time."""


class BatchWriter:
    """Collects ``write`` calls on the event loop and writes them in groups on a few threads.

    Up to ``WRITERS`` batches run at once.  A batch may write into a folder that another batch
    running beside it has just created, whose entry only that other batch syncs: so a batch is
    answered only once every batch that ran beside it has synced its folders too (and fails
    with it, should that fail).
    """

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        # Without fsyncs there is no waiting on the disk to overlap: more writers would only
        # split the batches smaller and take turns on the GIL.
        self._max_writers = WRITERS if fsync else 1
        self._queue: list[_File] = []
        self._pool: ThreadPoolExecutor | None = None
        self._writers: ThreadPoolExecutor | None = None
        self._running: asyncio.Task[None] | None = None
        self._more: asyncio.Future[None] | None = None
        """Set when a write queues while the drain waits: a free writer takes it at once.
        A plain future, made by the drain on its own loop: the sink outlives event loops."""
        self._in_flight: list[_Batch] = []

    def close(self) -> None:
        """Shut the threads down; a later batch starts new ones."""
        for pool in (self._writers, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._writers = self._pool = None

    async def write(self, target: Path, data: bytes) -> None:
        """Write ``data`` to ``target`` (under the root) atomically; durable on return if
        ``fsync``.  An ``OSError`` (or ``LinkRefused``) is this file's own."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_File(target, data, future))
        if self._more is not None and not self._more.done():
            self._more.set_result(None)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        writing: set[asyncio.Task[None]] = set()
        while self._queue or writing:
            if self._queue and len(writing) < self._max_writers:
                # Yield once so that every deliver started in this turn of the loop joins.
                await asyncio.sleep(0)
                files, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                writing.add(asyncio.create_task(self._run(files)))
                continue
            waits: set[asyncio.Future[Any]] = set(writing)
            if len(writing) < self._max_writers:
                self._more = asyncio.get_running_loop().create_future()
                waits.add(self._more)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            self._more = None
            for task in done & writing:
                writing.discard(task)
                if not task.cancelled():
                    task.exception()  # already given to its files' futures

    async def _run(self, files: list[_File]) -> None:
        loop = asyncio.get_running_loop()
        batch = _Batch(files, synced=loop.create_future())
        assert batch.synced is not None
        for other in self._in_flight:
            assert other.synced is not None
            other.beside.append(batch.synced)
            batch.beside.append(other.synced)
        self._in_flight.append(batch)
        if self._writers is None:
            self._writers = ThreadPoolExecutor(
                self._max_writers, thread_name_prefix="hookdock-writer"
            )
        try:
            failed = await loop.run_in_executor(self._writers, self._write_batch, batch)
        except BaseException as exc:  # cancelled, or a bug: nobody may wait forever
            batch.synced.set_result(exc)
            for f in files:
                if not f.future.done():
                    f.future.set_exception(exc)
            raise
        finally:
            self._in_flight.remove(batch)
        batch.synced.set_result(failed)
        failure: BaseException | None = failed
        if self.fsync:
            for synced in batch.beside:
                failure = failure or await synced
        for f in files:
            if f.future.done():
                continue
            if f.error is None and failure is not None:
                f.error = failure
            if f.error is None:
                f.future.set_result(None)
            else:
                f.future.set_exception(f.error)

    # ------------------------------------------------------------------ on a writer thread

    def _write_batch(self, batch: _Batch) -> OSError | None:
        """Write the batch; why its folders are not known to be durable, or None."""
        files = batch.files
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
            return self._sync_folders(batch) if self.fsync else None
        finally:
            for f in files:
                self._close(f)
            for folder in batch.folders.values():
                folder.close()
            for fd in batch.made.values():
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
        folder = self._folder(batch, PurePosixPath(f.target.relative_to(self.root)).parts[:-1])
        f.folder = folder
        name = f.target.name
        # A folder made just now holds nothing yet: no need to ask.
        if not folder.created and self._exists(folder, f.target):
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

    def _folder(self, batch: _Batch, names: Folder) -> ParentDir:
        """The folder ``names`` under the root, open (made if missing); each level is opened
        once per batch, from the level above it."""
        folder = batch.folders.get(names)
        if folder is not None:
            return folder
        above = self._folder(batch, names[:-1]) if names else None
        # ParentDir opens the folder that holds a file: name one in it.
        folder = ParentDir(self.root, PurePosixPath(*names, "-"), made=batch.made, above=above)
        if above is not None and above.created:
            folder.created = True
        batch.folders[names] = folder
        return folder

    @staticmethod
    def _exists(folder: ParentDir, target: Path) -> bool:
        try:
            return folder.exists(target.name)
        except LinkRefused:
            raise LinkRefused(target) from None

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

    def _sync_folders(self, batch: _Batch) -> OSError | None:
        """Each folder that got (or already had) a name of the batch, and each that got a new
        folder, fsync'd once; should one fail, no file of the batch counts as durable.  Told
        apart by their names under the root (no link is followed on the way, so two names are
        two folders; a file system that ignores case at worst syncs one twice)."""
        unique = dict(batch.made)
        for f in batch.files:
            if f.named and f.folder is not None:
                unique.setdefault(f.folder.relative.parts[:-1], f.folder.fd)
        return next((e for e in self._fsync_all(list(unique.values())).values() if e), None)


def _fsync(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None
