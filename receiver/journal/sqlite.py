"""The embedded journal: one SQLite file in WAL mode with ``synchronous=FULL`` and group commit.

WAL with FULL sync makes every commit durable (the WAL is fsync'd before COMMIT returns), so an
acknowledged delivery survives kill -9 and power loss alike.  All writes go through one
``GroupCommitter`` thread; another process (``hookdock worker``) may open the same file and
takes turns through SQLite's own locking.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from handlers.event import RawDelivery
from receiver.errors import JournalError
from receiver.journal.base import (
    AppendResult,
    Claim,
    DeliveryInfo,
    DeliveryState,
    Outcome,
    OwnerCheck,
)
from receiver.journal.committer import GroupCommitter

__all__ = ["SqliteJournal"]

log = logging.getLogger("hookdock.journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_INFO_COLUMNS = (
    "id, route, source, state, attempts, received_at, next_attempt_at, last_error, length(body)"
)


def _info(row: Any) -> DeliveryInfo:
    state = DeliveryState(row[3])
    return DeliveryInfo(
        delivery_id=row[0],
        route=row[1],
        source=row[2],
        state=state,
        attempts=row[4],
        received_at=datetime.fromisoformat(row[5]),
        next_attempt_at=(
            datetime.fromtimestamp(row[6], UTC) if state is DeliveryState.PENDING else None
        ),
        last_error=row[7],
        size=row[8],
    )


def _raw(row: Any) -> RawDelivery:
    return RawDelivery(
        delivery_id=row[0],
        route=row[1],
        source=row[2],
        received_at=datetime.fromisoformat(row[3]),
        content_type=row[4],
        headers=orjson.loads(row[5]),
        body=bytes(row[6]),
    )


# SQLite allows 32766 bound variables per statement; ten a row leaves room for 3000 rows, more
# than a batch holds, so a batch of appends is one statement (and in autocommit, one commit).
_ROWS_PER_INSERT = 3000


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO deliveries (id, route, source, received_at, content_type, headers, body,"
        f" dedupe_key, next_attempt_at, updated_at) VALUES {values} ON CONFLICT DO NOTHING"
    )


def _append_many(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[AppendResult]:
    """Insert a batch's deliveries in one statement per 3000; duplicates keep the first id."""
    now = time.time()
    results: list[AppendResult] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        params = [value for row in chunk for value in (*row, now, now)]
        inserted = conn.execute(_insert_sql(len(chunk)), params).rowcount
        if inserted == len(chunk):
            results.extend(AppendResult(row[0], duplicate=False) for row in chunk)
            continue
        # Rare: some dedupe keys were known (or repeated within this very batch).
        ids = [row[0] for row in chunk]
        marks = ",".join("?" * len(ids))
        new = {r[0] for r in conn.execute(f"SELECT id FROM deliveries WHERE id IN ({marks})", ids)}
        for row in chunk:
            if row[0] in new:
                results.append(AppendResult(row[0], duplicate=False))
            else:
                first = conn.execute(
                    "SELECT id FROM deliveries WHERE dedupe_key = ?", (row[7],)
                ).fetchone()
                results.append(AppendResult(first[0], duplicate=True))
    return results


def _record_attempts(
    conn: sqlite3.Connection,
    attempts: list[tuple[Claim, str, str, str | None]],
    now: float,
) -> None:
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(attempts))
    conn.execute(
        "INSERT OR REPLACE INTO attempts (delivery_id, attempt, owner, started_at, finished_at,"
        f" outcome, error) VALUES {values}",
        [
            v
            for claim, owner, kind, error in attempts
            for v in (
                claim.delivery.delivery_id,
                claim.attempt,
                owner,
                claim.claimed_at,
                now,
                kind,
                error,
            )
        ],
    )


def _delivered_many(conn: sqlite3.Connection, items: list[tuple[str, str, Claim]]) -> list[None]:
    """Mark a batch's delivered deliveries done: one UPDATE per owner, one attempts INSERT."""
    now = time.time()
    by_owner: dict[str, list[str]] = {}
    for delivery_id, owner, _ in items:
        by_owner.setdefault(owner, []).append(delivery_id)
    for owner, ids in by_owner.items():
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start : start + _ROWS_PER_INSERT]
            conn.execute(
                "UPDATE deliveries SET state = 'done', lease_owner = NULL, lease_until = NULL,"
                f" last_error = NULL, updated_at = ? WHERE lease_owner = ? AND id IN"
                f" ({','.join('?' * len(chunk))})",
                [now, owner, *chunk],
            )
    for start in range(0, len(items), 1000):
        chunk_items = items[start : start + 1000]
        _record_attempts(conn, [(c, o, "delivered", None) for _, o, c in chunk_items], now)
    return [None] * len(items)


class SqliteJournal:
    """A ``Journal`` on one SQLite file.  Call ``open()`` before use and ``close()`` after."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._committer = GroupCommitter(
            self._connect,
            bulk={"append": _append_many, "delivered": _delivered_many},
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
        conn.executescript(_SCHEMA)
        return conn

    @property
    def stats(self) -> tuple[int, int]:
        """(commits, jobs committed): their ratio is the mean group-commit batch size."""
        return self._committer.commits, self._committer.committed_jobs

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
            return [Claim(_raw(r), r[7], now) for r in rows]

        claims: list[Claim] = await self._committer.submit(work, single_statement=True)
        claims.sort(key=lambda c: c.delivery.delivery_id)
        return claims

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        delivery_id = claim.delivery.delivery_id
        if outcome.kind == "delivered":
            await self._committer.submit_bulk("delivered", (delivery_id, owner, claim))
            return

        def work(conn: sqlite3.Connection) -> None:
            now = time.time()
            if outcome.kind == "retry":
                state, next_at = DeliveryState.PENDING, outcome.retry_at or now
            else:
                state, next_at = DeliveryState.DEAD, now
            conn.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (state.value, next_at, outcome.error, now, delivery_id, owner),
            )
            _record_attempts(conn, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._committer.submit(work)

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        ids = list(delivery_ids)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL,"
                " attempts = attempts - 1 WHERE id = ? AND lease_owner = ?",
                [(i, owner) for i in ids],
            )

        await self._committer.submit(work)

    async def release_stale(self, is_dead_owner: OwnerCheck) -> int:
        def work(conn: sqlite3.Connection) -> int:
            owners = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT lease_owner FROM deliveries WHERE lease_owner IS NOT NULL"
                )
            ]
            released = 0
            for owner in owners:
                if is_dead_owner(owner):
                    now = time.time()
                    conn.execute(
                        "INSERT OR REPLACE INTO attempts (delivery_id, attempt, owner, started_at,"
                        " finished_at, outcome, error) SELECT id, attempts, lease_owner,"
                        " updated_at, ?, 'lost', 'the worker stopped during the attempt'"
                        " FROM deliveries WHERE lease_owner = ?",
                        (now, owner),
                    )
                    released += conn.execute(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = ?",
                        (owner,),
                    ).rowcount
            return released

        count: int = await self._committer.submit(work)
        return count

    async def prune(self, done_before: float) -> int:
        cutoff = datetime.fromtimestamp(done_before, UTC).isoformat()

        def work(conn: sqlite3.Connection) -> int:
            conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
                " WHERE state = 'done' AND received_at < ?)",
                (cutoff,),
            )
            return conn.execute(
                "DELETE FROM deliveries WHERE state = 'done' AND received_at < ?", (cutoff,)
            ).rowcount

        count: int = await self._committer.submit(work)
        return count

    async def requeue(self, delivery_ids: Sequence[str] | None = None) -> int:
        ids = None if delivery_ids is None else list(delivery_ids)

        def work(conn: sqlite3.Connection) -> int:
            now = time.time()
            sql = (
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " last_error = NULL, updated_at = ? WHERE state = 'dead'"
            )
            if ids is None:
                return conn.execute(sql, (now, now)).rowcount
            return sum(conn.execute(sql + " AND id = ?", (now, now, i)).rowcount for i in ids)

        count: int = await self._committer.submit(work)
        return count

    async def get(self, delivery_id: str) -> DeliveryInfo | None:
        def work(conn: sqlite3.Connection) -> DeliveryInfo | None:
            row = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else _info(row)

        info: DeliveryInfo | None = await self._committer.submit(work)
        return info

    async def get_raw(self, delivery_id: str) -> RawDelivery | None:
        def work(conn: sqlite3.Connection) -> RawDelivery | None:
            row = conn.execute(
                "SELECT id, route, source, received_at, content_type, headers, body"
                " FROM deliveries WHERE id = ?",
                (delivery_id,),
            ).fetchone()
            return None if row is None else _raw(row)

        raw: RawDelivery | None = await self._committer.submit(work)
        return raw

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        def work(conn: sqlite3.Connection) -> list[DeliveryInfo]:
            if state is None:
                rows = conn.execute(
                    f"SELECT {_INFO_COLUMNS} FROM deliveries ORDER BY id DESC LIMIT ?", (limit,)
                )
            else:
                rows = conn.execute(
                    f"SELECT {_INFO_COLUMNS} FROM deliveries WHERE state = ?"
                    " ORDER BY id DESC LIMIT ?",
                    (state.value, limit),
                )
            return [_info(r) for r in rows]

        infos: list[DeliveryInfo] = await self._committer.submit(work)
        return infos

    async def counts(self) -> dict[DeliveryState, int]:
        def work(conn: sqlite3.Connection) -> dict[DeliveryState, int]:
            found = dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
            return {s: int(found.get(s.value, 0)) for s in DeliveryState}

        counts: dict[DeliveryState, int] = await self._committer.submit(work)
        return counts

    async def ping(self) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

        await self._committer.submit(work)

    async def watchdog(self, limit_seconds: float, every: float = 1.0) -> None:
        """Until cancelled: fail waiting writes once a commit has hung for ``limit_seconds``."""
        while True:
            await asyncio.sleep(every)
            failed = self._committer.fail_if_stalled(limit_seconds)
            if failed:
                log.error("journal stalled: failed %d waiting writes (answered 503)", failed)

    async def close(self) -> None:
        await asyncio.to_thread(self._committer.close)
