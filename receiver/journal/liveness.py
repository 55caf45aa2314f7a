"""Which processes are alive, and work one process at a time must do, in the journal.

Every ``hookdock serve`` and ``worker`` writes a heartbeat (on the database's clock, so the
replicas need not agree on the time).  A replica killed on another machine stops writing it;
once it is older than the stale limit, its leases (deliveries, sends, named leases) are
released for the others to take.  A clean shutdown hands everything back at once.

A *named lease* is held by one live process at a time: it is taken when free, when its lease
ran out, or when its holder's heartbeat went stale; its holder renews it by taking it again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.journal.base import NamedLease, OwnerCheck, ProcessInfo
from receiver.journal.dialect import Tx

__all__ = ["Liveness", "LivenessAdmin"]


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


class Liveness:
    """Mixed into ``SqlJournal``: the hot path's half."""

    _stale_seconds: float = 30.0

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def heartbeat(self, process: ProcessInfo) -> None:
        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO processes (owner, host, pid, role, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE"
                " SET heartbeat_at = excluded.heartbeat_at",
                (
                    process.owner,
                    process.host,
                    process.pid,
                    process.role,
                    process.started_at.timestamp(),
                    tx.now,
                ),
            )

        await self._write(work, single_statement=True)

    async def forget_process(self, owner: str) -> None:
        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM named_leases WHERE owner = ?", (owner,))
            tx.execute("DELETE FROM processes WHERE owner = ?", (owner,))

        await self._write(work)

    async def release_stale(
        self, is_dead_owner: OwnerCheck, stale_seconds: float | None = None
    ) -> int:
        if stale_seconds is not None:
            self._stale_seconds = stale_seconds

        def work(tx: Tx) -> int:
            now = tx.now
            fresh_after = now - self._stale_seconds
            known = {r[0]: r[1] for r in tx.execute("SELECT owner, heartbeat_at FROM processes")}
            stale = {owner for owner, beat in known.items() if beat < fresh_after}
            holders = {
                r[0]
                for table in ("deliveries", "sends")
                for r in tx.execute(
                    f"SELECT DISTINCT lease_owner FROM {table} WHERE lease_owner IS NOT NULL"
                )
            }
            # A process of this host that no longer runs is gone at once, heartbeat or not
            # (a restart after a kill takes its work back without waiting out the limit).
            dead = {o for o in holders | known.keys() if is_dead_owner(o)}
            gone = (holders & stale) | (holders & dead)
            released = 0
            for owner in gone:
                released += _release_owner(tx, owner, now)
            for owner in stale | dead:
                tx.execute("DELETE FROM named_leases WHERE owner = ?", (owner,))
                tx.execute("DELETE FROM processes WHERE owner = ?", (owner,))
            return released

        count: int = await self._write(work)
        return count

    async def acquire_lease(self, name: str, owner: str, lease_seconds: float) -> bool:
        def work(tx: Tx) -> bool:
            now = tx.now
            row = tx.execute(
                "INSERT INTO named_leases (name, owner, acquired_at, lease_until)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET owner = excluded.owner, lease_until = excluded.lease_until,"
                " acquired_at = CASE WHEN named_leases.owner = excluded.owner"
                " THEN named_leases.acquired_at ELSE excluded.acquired_at END"
                " WHERE named_leases.owner = excluded.owner OR named_leases.lease_until < ?"
                " OR NOT EXISTS (SELECT 1 FROM processes p WHERE p.owner = named_leases.owner"
                " AND p.heartbeat_at >= ?) RETURNING owner",
                (name, owner, now, now + lease_seconds, now, now - self._stale_seconds),
            ).fetchone()
            return row is not None and row[0] == owner

        held: bool = await self._write(work)
        return held

    async def release_lease(self, name: str, owner: str) -> None:
        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM named_leases WHERE name = ? AND owner = ?", (name, owner))

        await self._write(work, single_statement=True)


def _release_owner(tx: Tx, owner: str, now: float) -> int:
    """Record the attempts ``owner`` was making as lost and free its leases."""
    released = 0
    for table, attempts, key in (
        ("deliveries", "attempts", "delivery_id"),
        ("sends", "send_attempts", "send_id"),
    ):
        tx.execute(
            f"INSERT INTO {attempts} ({key}, attempt, owner, started_at, finished_at,"
            " outcome, error) SELECT id, attempts, lease_owner, updated_at, ?, 'lost',"
            f" 'the worker stopped during the attempt' FROM {table}"
            f" WHERE lease_owner = ? ON CONFLICT ({key}, attempt) DO UPDATE SET"
            " outcome = excluded.outcome, error = excluded.error,"
            " finished_at = excluded.finished_at",
            (now, owner),
        )
        released += tx.execute(
            f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
            (owner,),
        ).rowcount
    return released


class LivenessAdmin:
    """Mixed into ``SqlJournal``: what ``hookdock status`` shows of the processes."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def processes(self, stale_seconds: float) -> list[ProcessInfo]:
        def work(tx: Tx) -> list[ProcessInfo]:
            fresh_after = tx.now - stale_seconds
            return [
                ProcessInfo(r[0], r[1], r[2], r[3], _ts(r[4]), _ts(r[5]), r[5] >= fresh_after)
                for r in tx.execute(
                    "SELECT owner, host, pid, role, started_at, heartbeat_at FROM processes"
                    " ORDER BY started_at, owner"
                )
            ]

        found: list[ProcessInfo] = await self._read(work)
        return found

    async def named_leases(self) -> list[NamedLease]:
        def work(tx: Tx) -> list[NamedLease]:
            return [
                NamedLease(r[0], r[1], _ts(r[2]), _ts(r[3]))
                for r in tx.execute(
                    "SELECT name, owner, acquired_at, lease_until FROM named_leases ORDER BY name"
                )
            ]

        found: list[NamedLease] = await self._read(work)
        return found
