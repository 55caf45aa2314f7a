"""The embedded journal: one SQLite file in WAL mode with ``synchronous=FULL`` and group commit.

WAL with FULL sync makes every commit durable (the WAL is fsync'd before COMMIT returns), so an
acknowledged delivery survives kill -9 and power loss alike.  All writes go through one
``GroupCommitter`` thread; another process (``hookdock worker``) may open the same file and
takes turns through SQLite's own locking.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from handlers.event import RawDelivery
from handlers.files import FileInfo
from receiver.errors import JournalError
from receiver.journal.base import (
    AppendResult,
    Claim,
    Outcome,
    OwnerCheck,
    SendClaim,
)
from receiver.journal.committer import GroupCommitter
from receiver.journal.sqlite_admin import SqliteAdmin
from receiver.journal.sqlite_bulk import (
    append_many,
    record_attempts,
    record_send_attempts,
    sent_many,
)
from receiver.journal.sqlite_schema import (
    RAW_COLUMNS,
    files_json,
    marks,
    migrate,
    parse_files,
    raw_delivery,
)

__all__ = ["SqliteJournal"]

log = logging.getLogger("hookdock.journal")

_IDS_PER_STATEMENT = 30_000
"""Ids bound in one ``IN (...)``: under SQLite's 32766 bound variables, with room to spare."""


def _routing_outcome(outcome: Outcome) -> None:
    if outcome.kind not in ("retry", "dead"):
        raise ValueError(f"a delivery is routed, never {outcome.kind!r}: use route()")


class SqliteJournal(SqliteAdmin):
    """A ``Journal`` on one SQLite file.  Call ``open()`` before use and ``close()`` after."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._committer = GroupCommitter(
            self._connect,
            bulk={"append": append_many, "sent": sent_many},
            single_statement=frozenset({"append"}),
        )

    def open(self) -> SqliteJournal:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._committer.start()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"The journal at {self.path} cannot be opened ({exc}): "
                "check `journal.path` and that its directory is writable."
            ) from exc
        return self

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode})")
        # FULL: the WAL is fsync'd at every commit, which is what makes a 2xx a promise.
        conn.execute("PRAGMA synchronous = FULL")
        migrate(conn)
        return conn

    @property
    def stats(self) -> tuple[int, int]:
        """(commits, jobs committed): their ratio is the mean group-commit batch size."""
        return self._committer.commits, self._committer.committed_jobs

    async def _run(self, fn: Any, *, single_statement: bool = False) -> Any:
        return await self._committer.submit(fn, single_statement=single_statement)

    # ------------------------------------------------------------------ deliveries

    async def append(self, delivery: RawDelivery, dedupe_key: str) -> AppendResult:
        row = (
            delivery.delivery_id,
            delivery.route,
            delivery.source,
            delivery.received_at.isoformat(),
            delivery.content_type,
            orjson.dumps(delivery.headers),
            delivery.body,
            dedupe_key,
        )
        result: AppendResult = await self._committer.submit_bulk("append", row)
        return result

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        def work(conn: sqlite3.Connection) -> list[Claim]:
            now = time.time()
            rows = conn.execute(
                "UPDATE deliveries SET lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending'"
                " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING id, route, source, received_at, content_type, headers, body, attempts",
                (owner, now + lease_seconds, now, now, now, limit),
            ).fetchall()
            return [Claim(raw_delivery(r), r[7], now) for r in rows]

        claims: list[Claim] = await self._run(work, single_statement=True)
        claims.sort(key=lambda c: c.delivery.delivery_id)
        return claims

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        _routing_outcome(outcome)
        delivery_id = claim.delivery.delivery_id

        def work(conn: sqlite3.Connection) -> None:
            now = time.time()
            if outcome.kind == "retry":
                state, next_at = "pending", outcome.retry_at or now
            else:
                state, next_at = "dead", now
            conn.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (state, next_at, outcome.error, now, delivery_id, owner),
            )
            record_attempts(conn, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._run(work)

    async def route(
        self,
        claim: Claim,
        owner: str,
        sends: Sequence[tuple[int, str]],
        lease_now: Collection[str],
        lease_seconds: float,
    ) -> list[SendClaim]:
        delivery = claim.delivery

        def work(conn: sqlite3.Connection) -> list[SendClaim]:
            now = time.time()
            routed = conn.execute(
                "UPDATE deliveries SET state = 'routed', lease_owner = NULL, lease_until = NULL,"
                " last_error = NULL, updated_at = ? WHERE id = ? AND lease_owner = ?",
                (now, delivery.delivery_id, owner),
            ).rowcount
            if not routed:
                return []  # our lease ran out and someone else holds the delivery now
            record_attempts(conn, [(claim, owner, "routed", None)], now)
            if not sends:
                return []
            stopped = {r[0] for r in conn.execute("SELECT sink FROM stopped_sinks")}
            params: list[Any] = []
            for index, sink in sends:
                lease = sink in lease_now and sink not in stopped
                params += [delivery.delivery_id, index, sink, now, now]
                params += [1, owner, now + lease_seconds] if lease else [0, None, None]
            rows = conn.execute(
                "INSERT INTO sends (delivery_id, event_index, sink, next_attempt_at, updated_at,"
                " attempts, lease_owner, lease_until) VALUES"
                f" {','.join(['(?, ?, ?, ?, ?, ?, ?, ?)'] * len(sends))}"
                " ON CONFLICT DO NOTHING RETURNING id, event_index, sink, lease_owner",
                params,
            ).fetchall()
            return [SendClaim(r[0], delivery, r[1], r[2], 1, now) for r in rows if r[3] is not None]

        claims: list[SendClaim] = await self._run(work)
        return claims

    # ------------------------------------------------------------------ sends

    async def claim_sends(
        self, owner: str, limits: Mapping[str, int], lease_seconds: float
    ) -> list[SendClaim]:
        wanted = [(sink, n) for sink, n in limits.items() if n > 0]

        def work(conn: sqlite3.Connection) -> list[SendClaim]:
            now = time.time()
            leased: list[Any] = []
            for sink, limit in wanted:
                leased += conn.execute(
                    "UPDATE sends SET lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                    " updated_at = ? WHERE id IN (SELECT id FROM sends WHERE sink = ?"
                    " AND state = 'pending' AND next_attempt_at <= ?"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                    " AND NOT EXISTS (SELECT 1 FROM stopped_sinks WHERE stopped_sinks.sink = ?)"
                    " ORDER BY next_attempt_at LIMIT ?)"
                    " RETURNING id, delivery_id, event_index, sink, attempts, files",
                    (owner, now + lease_seconds, now, sink, now, now, sink, limit),
                ).fetchall()
            if not leased:
                return []
            ids = sorted({r[1] for r in leased})
            raws = {
                r[0]: raw_delivery(r)
                for r in conn.execute(
                    f"SELECT {RAW_COLUMNS} FROM deliveries d WHERE d.id IN ({marks(len(ids))})",
                    ids,
                )
            }
            return [
                SendClaim(r[0], raws[r[1]], r[2], r[3], r[4], now, parse_files(r[5]))
                for r in leased
            ]

        if not wanted:
            return []
        claims: list[SendClaim] = await self._run(work)
        claims.sort(key=lambda c: c.send_id)
        return claims

    async def finish_send(self, claim: SendClaim, owner: str, outcome: Outcome) -> None:
        if outcome.kind == "delivered":
            await self._committer.submit_bulk("sent", (claim, owner))
            return

        def work(conn: sqlite3.Connection) -> None:
            now = time.time()
            if outcome.kind == "retry":
                state, next_at = "pending", outcome.retry_at or now
            elif outcome.kind == "gone":
                state, next_at = "pending", now
                conn.execute(
                    "INSERT INTO stopped_sinks (sink, stopped_at, reason) VALUES (?, ?, ?)"
                    " ON CONFLICT (sink) DO NOTHING",
                    (claim.sink, now, outcome.error or "stopped"),
                )
            else:
                state, next_at = "dead", now
            conn.execute(
                "UPDATE sends SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, code = ?, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (state, next_at, outcome.error, outcome.code, now, claim.send_id, owner),
            )
            record_send_attempts(conn, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._run(work)

    async def record_file(self, claim: SendClaim, owner: str, role: str, info: FileInfo) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT files FROM sends WHERE id = ? AND lease_owner = ?", (claim.send_id, owner)
            ).fetchone()
            if row is None:
                return False  # our lease ran out and the send is someone else's now
            # Read and written in one job on the commit thread: nothing can come in between,
            # so files recorded at the same time for other roles are all kept.
            files = parse_files(row[0])
            files[role] = info
            # updated_at stays: it is when the attempt began (release_stale logs it so).
            conn.execute(
                "UPDATE sends SET files = ? WHERE id = ?", (files_json(files), claim.send_id)
            )
            return True

        recorded: bool = await self._run(work)
        return recorded

    async def renew_sends(self, owner: str, send_ids: Sequence[int], lease_seconds: float) -> int:
        ids = list(send_ids)
        if not ids:
            return 0

        chunks = [ids[i : i + _IDS_PER_STATEMENT] for i in range(0, len(ids), _IDS_PER_STATEMENT)]

        def work(conn: sqlite3.Connection) -> int:
            until = time.time() + lease_seconds
            return sum(
                conn.execute(
                    "UPDATE sends SET lease_until = ?"
                    f" WHERE lease_owner = ? AND id IN ({marks(len(chunk))})",
                    [until, owner, *chunk],
                ).rowcount
                for chunk in chunks
            )

        # A process holds far fewer leases than fit one statement, so this is one UPDATE,
        # committed without a savepoint of its own.
        count: int = await self._run(work, single_statement=len(chunks) == 1)
        return count

    # ------------------------------------------------------------------ leases

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        ids = list(delivery_ids)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL,"
                " attempts = attempts - 1 WHERE id = ? AND lease_owner = ?",
                [(i, owner) for i in ids],
            )

        await self._run(work)

    async def release_sends(self, owner: str, send_ids: Sequence[int]) -> None:
        ids = list(send_ids)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE sends SET lease_owner = NULL, lease_until = NULL,"
                " attempts = attempts - 1 WHERE id = ? AND lease_owner = ?",
                [(i, owner) for i in ids],
            )

        await self._run(work)

    async def release_stale(self, is_dead_owner: OwnerCheck) -> int:
        def work(conn: sqlite3.Connection) -> int:
            owners = {
                r[0]
                for table in ("deliveries", "sends")
                for r in conn.execute(
                    f"SELECT DISTINCT lease_owner FROM {table} WHERE lease_owner IS NOT NULL"
                )
            }
            released = 0
            now = time.time()
            lost = "'lost', 'the worker stopped during the attempt'"
            for owner in filter(is_dead_owner, owners):
                conn.execute(
                    "INSERT OR REPLACE INTO attempts (delivery_id, attempt, owner, started_at,"
                    f" finished_at, outcome, error) SELECT id, attempts, lease_owner, updated_at,"
                    f" ?, {lost} FROM deliveries WHERE lease_owner = ?",
                    (now, owner),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO send_attempts (send_id, attempt, owner, started_at,"
                    f" finished_at, outcome, error) SELECT id, attempts, lease_owner, updated_at,"
                    f" ?, {lost} FROM sends WHERE lease_owner = ?",
                    (now, owner),
                )
                for table in ("deliveries", "sends"):
                    released += conn.execute(
                        f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = ?",
                        (owner,),
                    ).rowcount
            return released

        count: int = await self._run(work)
        return count

    async def ping(self) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

        await self._run(work)

    async def watchdog(self, limit_seconds: float, every: float = 1.0) -> None:
        """Until cancelled: fail waiting writes once a commit has hung for ``limit_seconds``."""
        while True:
            await asyncio.sleep(every)
            failed = self._committer.fail_if_stalled(limit_seconds)
            if failed:
                log.error("journal stalled: failed %d waiting writes (answered 503)", failed)

    async def close(self) -> None:
        await asyncio.to_thread(self._committer.close)
