"""Folders under a sink's root, opened level by level without following links.

A symbolic link anywhere under the root (``exports/ws -> ../outside``) would let an event
whose path the vendor's fields choose land outside it.  So every level below the root is
opened with ``O_NOFOLLOW`` relative to the folder above it (a directory file descriptor), and
the file itself is created, checked and renamed relative to its folder's descriptor: there is
no path for anyone to swap a link into between the check and the write.  The root itself may
be a link: the operator chose it.

A link in the way is a ``PermanentSinkError`` naming the path (retrying finds the same link);
an over-long name is one too (``ENAMETOOLONG`` never clears up on its own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from handlers.errors import PermanentSinkError, RetryableSinkError, SinkError

__all__ = ["LinkRefused", "ParentDir", "write_error"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors a retry cannot fix: the name is too long for the file system, or a link is in the way.
_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


class LinkRefused(PermanentSinkError):
    """A symbolic link under the sink's root: hookdock does not write through links."""

    code = "link_refused"

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"local sink: {path} is a symbolic link; nothing is written through a link under"
            " the root folder (remove the link, or point root at the real folder)"
        )


def write_error(target: Path, exc: OSError) -> SinkError:
    """What an ``OSError`` while writing ``target`` means: permanent or worth another try."""
    if exc.errno == errno.ENAMETOOLONG:
        return PermanentSinkError(
            f"local sink: the name of {target} is too long for the file system"
            f" (at most 255 bytes per name): {exc.strerror}"
        )
    if exc.errno in _PERMANENT_ERRNOS:
        return PermanentSinkError(f"local sink: cannot write {target}: {exc.strerror}")
    return RetryableSinkError(f"local sink: cannot write {target}: {exc}")


class ParentDir:
    """The folder that holds ``root / relative``, open; created level by level if missing.

    Use as a context manager; ``fd`` is for the ``dir_fd`` arguments of ``os`` functions.
    """

    def __init__(
        self,
        root: Path,
        relative: PurePosixPath,
        *,
        create: bool = True,
        made: dict[tuple[str, ...], int] | None = None,
        above: ParentDir | None = None,
    ) -> None:
        """``made``: gets a descriptor (the caller closes it) of each folder in which a folder
        was created, by its names under the root, once each (a batch making a folder per task
        in one folder holds one descriptor of it, not one per task), so that the caller can
        fsync the new entries.  ``above``: an open folder on the way (the folder of
        ``relative``'s parent's parent, say), to go on from instead of from the root: a writer
        opening many folders side by side opens each level once."""
        self.root = root
        self.relative = relative
        self._made = made
        self.created = False
        """Whether this opening created the folder itself (or found it just made by another
        writer): its entry in the folder above is not known to be durable."""
        self.fd = self._open(create, above)

    def _open(self, create: bool, above: ParentDir | None) -> int:
        start = 0
        if above is not None:
            # Gone on from without a copy of its descriptor: ``above`` stays open, and every
            # system call here hands the interpreter's lock over and back (a writer thread makes
            # hundreds of folders a second beside the event loop).
            start = len(above.relative.parts) - 1
            fd, owned = above.fd, False
        else:
            fd, owned = self._open_root(create), True
        try:
            for depth, name in enumerate(self.relative.parts[start:-1], start=start + 1):
                child = self._child(fd, name, depth, create)
                if owned:
                    os.close(fd)
                fd, owned = child, True
        except BaseException:
            if owned:
                os.close(fd)
            raise
        return fd if owned else os.dup(fd)

    def _open_root(self, create: bool) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            self.root.mkdir(parents=True, exist_ok=True)  # the operator's path: links allowed
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _child(self, fd: int, name: str, depth: int, create: bool) -> int:
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._is_link(fd, name):
                raise LinkRefused(self.path(depth)) from exc
            raise
        # Another writer may have made it meanwhile: its entry may not be durable yet either.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=fd)
        if self._made is not None:
            holder = self.relative.parts[: depth - 1]
            if holder not in self._made:
                self._made[holder] = os.dup(fd)
        self.created = True
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._is_link(fd, name):
                raise LinkRefused(self.path(depth)) from exc
            raise

    @staticmethod
    def _is_link(fd: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def path(self, depth: int | None = None) -> Path:
        """The path of the first ``depth`` levels under the root (all of it by default)."""
        parts = self.relative.parts if depth is None else self.relative.parts[:depth]
        return self.root.joinpath(*parts)

    def exists(self, name: str) -> bool:
        """True if ``name`` is in the folder; a link there is refused, not taken as the file."""
        try:
            mode = os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise LinkRefused(self.path())
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ParentDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
