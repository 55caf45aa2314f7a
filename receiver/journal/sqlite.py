"""The embedded journal: one SQLite file in WAL mode with ``synchronous=FULL`` and group commit.

WAL with FULL sync makes every commit durable (the WAL is fsync'd before COMMIT returns), so an
acknowledged delivery survives kill -9 and power loss alike.  All writes go through one commit
thread; another process (``hookdock worker``) may open the same file and takes turns through
SQLite's own locking.  SQLite's clock is the process's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receiver.journal.dialect import Dialect, Tx
from receiver.journal.errors import JournalError, JournalUnavailable
from receiver.journal.schema import migrate
from receiver.journal.sql import SqlJournal

__all__ = ["SQLITE", "SqliteJournal", "tighten_modes"]

log = logging.getLogger("hookdock.journal")

SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    skip_locked="",  # one writer at a time: a claim never sees another's rows mid-claim
    begin="BEGIN IMMEDIATE",
    statement_rollback=True,
    max_params=32_766,
    types={"blob": "BLOB", "real": "REAL", "serial": "INTEGER PRIMARY KEY"},
    unavailable=(sqlite3.Error,),
    ordered_join="CROSS JOIN",
)


def tighten_modes(targets: list[tuple[Path, int]], what: str) -> list[str]:
    """Take group and other bits off each existing (path, mode) beyond ``mode``: a journal made
    before hookdock set modes, or copied in under a umask of 022, stays readable by anyone
    otherwise.  Logs once what it changed (``what`` names the whole); returns the changes."""
    changed = []
    for target, wanted in targets:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & ~wanted:
            os.chmod(target, mode & wanted)
            changed.append(f"{target} {mode:04o} -> {mode & wanted:04o}")
    if changed:
        log.warning(
            "%s: raw bodies hold SAS links and personal data, so it is the owner's alone now: %s",
            what,
            "; ".join(changed),
        )
    return changed


class SqliteJournal(SqlJournal):
    """The journal on one SQLite file (``:memory:`` for a throwaway one, see ``memory``)."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = 10_000,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self.description = f"the journal at {path}"
        self._busy_timeout_ms = busy_timeout_ms
        self._create = create
        self._clock = clock
        super().__init__(self._connect, SQLITE, clock=clock)

    def open(self) -> SqliteJournal:
        if isinstance(self.path, Path):
            if not self._create and not self.path.exists():
                raise JournalError(
                    f"there is no journal at {self.path}: check `journal.path` (or --config),"
                    " or start `hookdock serve` once to create it"
                )
            try:
                # Raw bodies hold SAS links and personal data: the folder and the file are the
                # owner's alone when hookdock makes them (SQLite gives its -wal and -shm files
                # the database file's mode).
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not self.path.exists():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                files = [self.path.with_name(self.path.name + s) for s in ("", "-wal", "-shm")]
                tighten_modes([(f, 0o600) for f in files], f"the journal at {self.path}")
            except OSError as exc:
                raise JournalError(self._cannot_open(exc)) from exc
        super().open()
        return self

    def _cannot_open(self, exc: BaseException) -> str:
        return (
            f"the journal at {self.path} cannot be opened ({exc}): "
            "check `journal.path` and that its directory is writable."
        )

    async def _read(self, fn: Callable[[Tx], Any]) -> Any:
        if self.path == ":memory:":
            return await super()._read(fn)  # only the commit thread's connection sees it
        # A connection of its own, outside the commit thread: in WAL mode a reader never waits
        # for a writer, so an operator's query is answered while another process (a worker
        # next to the server) holds the write lock.
        return await asyncio.to_thread(self._read_now, fn)

    def _read_now(self, fn: Callable[[Tx], Any]) -> Any:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                conn.execute("PRAGMA query_only = ON")
                return fn(Tx(conn, SQLITE, self._clock))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise JournalUnavailable(f"the journal at {self.path} cannot be read: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode})")
        # FULL: the WAL is fsync'd at every commit, which is what makes a 2xx a promise.
        conn.execute("PRAGMA synchronous = FULL")
        migrate(Tx(conn, SQLITE, self._clock))
        return conn
