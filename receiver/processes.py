"""This process in the journal: its name, its heartbeat, and taking over from dead ones.

Every ``hookdock serve`` and ``worker`` is one owner (``host/pid/random``): the name its leases
carry.  It registers with a heartbeat at start, beats every ``cluster.heartbeat_seconds``, and
at each beat releases the leases of processes whose heartbeat is older than
``cluster.stale_seconds`` (a replica killed on any machine), so the live ones take its work
over.  On a clean shutdown it forgets itself, and its named leases go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime

from receiver.journal import SqlJournal
from receiver.journal.base import ProcessInfo

__all__ = ["Heartbeat", "new_owner", "owner_is_gone"]

log = logging.getLogger("hookdock")


def new_owner(node: str | None = None) -> str:
    """``node/pid/random``: ``node`` is this machine's name (the host name by default)."""
    return f"{node or socket.gethostname()}/{os.getpid()}/{os.urandom(4).hex()}"


def owner_is_gone(owner: str, node: str | None = None) -> bool:
    """True when ``owner`` names a process on this machine (``node``) that no longer runs.

    Only a process of the same machine can be checked by its pid; any other is known to be
    gone by its stale heartbeat alone.
    """
    try:
        host, pid_text, _ = owner.rsplit("/", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != (node or socket.gethostname()) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Heartbeat:
    def __init__(
        self,
        journal: SqlJournal,
        owner: str,
        role: str,
        *,
        every_seconds: float,
        stale_seconds: float,
        node: str | None = None,
    ) -> None:
        self.journal = journal
        self.node = node or socket.gethostname()
        self.info = ProcessInfo(
            owner=owner,
            host=self.node,
            pid=os.getpid(),
            role=role,
            started_at=datetime.now(UTC),
            heartbeat_at=datetime.now(UTC),
        )
        self.every = every_seconds
        self.stale = stale_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register (a failure here stops the start: the journal is not usable), then beat."""
        await self.journal.heartbeat(self.info)
        await self.take_over()
        self._task = asyncio.create_task(self._run(), name="hookdock-heartbeat")

    async def take_over(self) -> int:
        released = await self.journal.release_stale(self.is_gone, self.stale)
        if released:
            log.warning("took over %d leases held by a process that stopped", released)
        return released

    def is_gone(self, owner: str) -> bool:
        return owner_is_gone(owner, self.node)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.journal.heartbeat(self.info)
                await self.take_over()
            except Exception as exc:
                # The journal is away (PostgreSQL restarting): beat again next time; our leases
                # stay ours unless the outage outlasts the stale limit.
                log.warning("heartbeat failed, trying again: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.journal.forget_process(self.info.owner)
        except Exception as exc:
            log.warning("could not deregister this process: %s", exc)
