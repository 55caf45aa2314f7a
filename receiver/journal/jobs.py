"""Bulk replays as jobs in the journal: made by one process, shown and cancelled by any.

A job replays, chunk by chunk, the events an operator's filter matched.  Its row holds its
filter, its progress (counts and the listing's cursor after the last chunk) and the process
running it (``owner``) with a lease that every chunk renews.  Each chunk is replayed and
counted in one transaction with the job's own row, after checking that the job is still this
process's and not cancelled: a job is never replayed twice at once, and a cancel from any
replica is seen at the next chunk.  A job whose process stopped (lease run out, heartbeat gone
stale, or a process of this machine no longer running) is taken over by another from its
cursor, up to ``MAX_TAKEOVERS`` times, then marked failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.journal.base import OwnerCheck
from receiver.journal.dialect import Tx
from receiver.journal.replay import record_action, replay_chunk
from receiver.journal.views import ReplayJob

__all__ = ["MAX_TAKEOVERS", "ReplayJobs"]

MAX_TAKEOVERS = 3
"""A job whose process stopped this many times is failed, not taken over again: something in
it (or in the journal) is likely to stop the next one too."""

_COLUMNS = (
    "id, actor, filter, sink, state, matched, replayed, requeued, created, in_flight, rerouted,"
    " cursor, error, created_at, updated_at, cancel_requested, owner, lease_until, takeovers"
)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _job(r: Any) -> ReplayJob:
    return ReplayJob(
        job_id=r[0],
        actor=r[1],
        filter=orjson.loads(r[2]),
        sink=r[3],
        state=r[4],
        matched=r[5],
        replayed=r[6],
        requeued=r[7],
        created=r[8],
        in_flight=r[9],
        rerouted=r[10],
        cursor=r[11],
        error=r[12],
        created_at=datetime.fromtimestamp(r[13], UTC),
        updated_at=datetime.fromtimestamp(r[14], UTC),
        cancel_requested=bool(r[15]),
        owner=r[16],
        lease_until=_ts(r[17]),
        takeovers=r[18],
    )


def _get(tx: Tx, job_id: str) -> ReplayJob | None:
    row = tx.execute(f"SELECT {_COLUMNS} FROM replay_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def _alive(tx: Tx, owner: str, stale_seconds: float) -> bool:
    """``owner`` beats: its heartbeat is fresh by the database's clock."""
    row = tx.execute(
        "SELECT 1 FROM processes WHERE owner = ? AND heartbeat_at >= ?",
        (owner, tx.now - stale_seconds),
    ).fetchone()
    return row is not None


def _orphaned(tx: Tx, job: ReplayJob, is_gone: OwnerCheck, stale_seconds: float) -> bool:
    """No live process runs ``job``: none holds it, its lease ran out, or its holder stopped."""
    if job.owner is None or job.lease_until is None:
        return True
    if job.lease_until.timestamp() < tx.now:
        return True
    return is_gone(job.owner) or not _alive(tx, job.owner, stale_seconds)


class ReplayJobs:
    """Mixed into ``SqlJournal``."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def create_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        filter: Mapping[str, Any],
        sink: str | None,
        matched: int,
        owner: str,
        lease_seconds: float,
    ) -> ReplayJob:
        """A running job held by ``owner`` (the process that runs it), recorded as an action."""

        def work(tx: Tx) -> ReplayJob:
            now = tx.now
            tx.execute(
                "INSERT INTO replay_jobs (id, actor, filter, sink, state, matched, created_at,"
                " updated_at, owner, lease_until) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    job_id,
                    actor,
                    orjson.dumps(dict(filter)).decode(),
                    sink,
                    matched,
                    now,
                    now,
                    owner,
                    now + lease_seconds,
                ),
            )
            detail = {"job": job_id, "matched": matched, "filter": dict(filter)}
            record_action(tx, actor, "bulk-replay", sink=sink, detail=detail)
            job = _get(tx, job_id)
            assert job is not None
            return job

        job: ReplayJob = await self._write(work)
        return job

    async def replay_job(self, job_id: str) -> ReplayJob | None:
        found: ReplayJob | None = await self._read(lambda tx: _get(tx, job_id))
        return found

    async def replay_jobs(self, limit: int = 100, *, running: bool = False) -> list[ReplayJob]:
        """The latest jobs, newest first (``running``: only those not ended)."""

        def work(tx: Tx) -> list[ReplayJob]:
            where = " WHERE state = 'running'" if running else ""
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM replay_jobs{where}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_job(r) for r in rows]

        found: list[ReplayJob] = await self._read(work)
        return found

    async def replay_job_step(
        self,
        job_id: str,
        owner: str,
        *,
        event_ids: Sequence[str],
        delivery_ids: Sequence[str],
        next_cursor: str | None,
        lease_seconds: float,
    ) -> ReplayJob | None:
        """Replay one chunk of ``job_id`` and count it, if the job is still ``owner``'s and
        running; a cancel asked for ends it instead.  Returns the job as it is now (None: no
        such job); the caller goes on only while it is running and still its own."""

        def work(tx: Tx) -> ReplayJob | None:
            job = _get(tx, job_id)
            if job is None or job.state != "running" or job.owner != owner:
                return job
            now = tx.now
            if job.cancel_requested:
                tx.execute(
                    "UPDATE replay_jobs SET state = 'cancelled', owner = NULL,"
                    " lease_until = NULL, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                return _get(tx, job_id)
            detail = {"bulk": job_id, **job.filter}
            again, created, busy, rerouted = replay_chunk(
                tx, event_ids, delivery_ids, sink=job.sink, actor=job.actor, detail=detail
            )
            done = next_cursor is None
            tx.execute(
                "UPDATE replay_jobs SET replayed = replayed + ?, requeued = requeued + ?,"
                " created = created + ?, in_flight = in_flight + ?, rerouted = rerouted + ?,"
                " cursor = ?, state = ?, owner = ?, lease_until = ?, updated_at = ?"
                " WHERE id = ? AND owner = ? AND state = 'running'",
                (
                    len(event_ids) + len(delivery_ids),
                    again,
                    created,
                    busy,
                    rerouted,
                    next_cursor,
                    "done" if done else "running",
                    None if done else owner,
                    None if done else now + lease_seconds,
                    now,
                    job_id,
                    owner,
                ),
            )
            return _get(tx, job_id)

        job: ReplayJob | None = await self._write(work)
        return job

    async def end_replay_job(self, job_id: str, owner: str, *, state: str, error: str) -> None:
        """Mark ``owner``'s running job ``state`` (failed), saying why."""

        def work(tx: Tx) -> None:
            tx.execute(
                "UPDATE replay_jobs SET state = ?, error = ?, owner = NULL, lease_until = NULL,"
                " updated_at = ? WHERE id = ? AND owner = ? AND state = 'running'",
                (state, error, tx.now, job_id, owner),
            )

        await self._write(work)

    async def cancel_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        is_gone: OwnerCheck,
        stale_seconds: float,
        holder: str | None = None,
    ) -> ReplayJob | None:
        """Ask ``job_id`` to stop: its process ends it at its next chunk; one no live process
        runs, or run by ``holder`` (the process asking, which stopped running it), ends now.
        Recorded as ``actor``'s action.  None: no such job."""

        def work(tx: Tx) -> ReplayJob | None:
            job = _get(tx, job_id)
            if job is None or job.state != "running":
                return job
            now = tx.now
            if job.owner == holder or _orphaned(tx, job, is_gone, stale_seconds):
                tx.execute(
                    "UPDATE replay_jobs SET state = 'cancelled', cancel_requested = 1,"
                    " owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            else:
                tx.execute(
                    "UPDATE replay_jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            record_action(tx, actor, "cancel-bulk-replay", detail={"job": job_id})
            return _get(tx, job_id)

        job: ReplayJob | None = await self._write(work)
        return job

    async def take_over_replay_job(
        self, owner: str, *, is_gone: OwnerCheck, stale_seconds: float, lease_seconds: float
    ) -> ReplayJob | None:
        """Take the oldest running job no live process runs, for ``owner`` to go on with from
        its cursor; one taken over ``MAX_TAKEOVERS`` times is failed instead."""

        def work(tx: Tx) -> ReplayJob | None:
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM replay_jobs WHERE state = 'running'"
                # Replicas claiming at once each skip the rows the other has locked.
                f" ORDER BY created_at, id LIMIT 100{tx.dialect.skip_locked}"
            ).fetchall()
            now = tx.now
            for job in map(_job, rows):
                if job.owner == owner or not _orphaned(tx, job, is_gone, stale_seconds):
                    continue
                if job.cancel_requested or job.takeovers >= MAX_TAKEOVERS:
                    state = "cancelled" if job.cancel_requested else "failed"
                    error = None
                    if state == "failed":
                        error = (
                            f"its process stopped {job.takeovers + 1} times; replayed"
                            f" {job.replayed} of {job.matched}: start a new one for the rest"
                        )
                    tx.execute(
                        "UPDATE replay_jobs SET state = ?, error = ?, owner = NULL,"
                        " lease_until = NULL, updated_at = ? WHERE id = ?",
                        (state, error, now, job.job_id),
                    )
                    continue
                tx.execute(
                    "UPDATE replay_jobs SET owner = ?, lease_until = ?, updated_at = ?,"
                    " takeovers = takeovers + ? WHERE id = ?",
                    (owner, now + lease_seconds, now, 0 if job.owner is None else 1, job.job_id),
                )
                return _get(tx, job.job_id)
            return None

        job: ReplayJob | None = await self._write(work)
        return job

    async def release_replay_jobs(self, owner: str) -> int:
        """Let go of ``owner``'s running jobs (a clean shutdown): any process goes on with
        them at once.  Returns how many."""

        def work(tx: Tx) -> int:
            count: int = tx.execute(
                "UPDATE replay_jobs SET owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE owner = ? AND state = 'running'",
                (tx.now, owner),
            ).rowcount
            return count

        released: int = await self._write(work)
        return released
