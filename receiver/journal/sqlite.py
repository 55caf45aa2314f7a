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
    SendClaim,
    SendInfo,
    SendState,
    StoppedSink,
)
from receiver.journal.committer import GroupCommitter
from receiver.journal.sqlite_bulk import (
    append_many,
    record_attempts,
    record_send_attempts,
    sent_many,
)
from receiver.journal.sqlite_schema import OVERALL_STATE, migrate

__all__ = ["SqliteJournal"]

log = logging.getLogger("hookdock.journal")

_RAW_COLUMNS = "d.id, d.route, d.source, d.received_at, d.content_type, d.headers, d.body"

# A delivery as a whole: its overall state, its most telling attempt count, when it is next
# due, and the error an operator should see first (its own, else its sends' latest).
_INFO_COLUMNS = f"""d.id, d.route, d.source, ({OVERALL_STATE}) AS overall,
    COALESCE((SELECT max(s.attempts) FROM sends s WHERE s.delivery_id = d.id), d.attempts),
    d.received_at,
    CASE WHEN d.state = 'pending' THEN d.next_attempt_at ELSE (SELECT min(s.next_attempt_at)
        FROM sends s WHERE s.delivery_id = d.id AND s.state = 'pending') END,
    COALESCE(d.last_error, (SELECT 'sink ' || s.sink || ': ' || s.last_error FROM sends s
        WHERE s.delivery_id = d.id AND s.last_error IS NOT NULL
        ORDER BY s.state = 'pending', s.updated_at DESC LIMIT 1)),
    length(d.body)"""


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
            datetime.fromtimestamp(row[6], UTC)
            if state is DeliveryState.PENDING and row[6] is not None
            else None
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


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _routing_outcome(outcome: Outcome) -> None:
    if outcome.kind not in ("retry", "dead"):
        raise ValueError(f"a delivery is routed, never {outcome.kind!r}: use route()")


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqliteJournal:
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
            return [Claim(_raw(r), r[7], now) for r in rows]

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
                    " RETURNING id, delivery_id, event_index, sink, attempts",
                    (owner, now + lease_seconds, now, sink, now, now, sink, limit),
                ).fetchall()
            if not leased:
                return []
            ids = sorted({r[1] for r in leased})
            raws = {
                r[0]: _raw(r)
                for r in conn.execute(
                    f"SELECT {_RAW_COLUMNS} FROM deliveries d WHERE d.id IN ({_marks(len(ids))})",
                    ids,
                )
            }
            return [SendClaim(r[0], raws[r[1]], r[2], r[3], r[4], now) for r in leased]

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
                " lease_until = NULL, last_error = ?, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (state, next_at, outcome.error, now, claim.send_id, owner),
            )
            record_send_attempts(conn, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._run(work)

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

    # ------------------------------------------------------------------ operator actions

    async def prune(self, done_before: float) -> int:
        cutoff = datetime.fromtimestamp(done_before, UTC).isoformat()

        def work(conn: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT d.id FROM deliveries d WHERE d.state = 'routed' AND d.received_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id"
                    " AND s.state != 'delivered')",
                    (cutoff,),
                )
            ]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = _marks(len(chunk))
                conn.execute(
                    "DELETE FROM send_attempts WHERE send_id IN"
                    f" (SELECT id FROM sends WHERE delivery_id IN ({marks}))",
                    chunk,
                )
                for table, column in (("sends", "delivery_id"), ("attempts", "delivery_id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
                conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", chunk)
            return len(ids)

        count: int = await self._run(work)
        return count

    async def requeue(
        self, delivery_ids: Sequence[str] | None = None, *, sink: str | None = None
    ) -> int:
        ids = None if delivery_ids is None else list(delivery_ids)

        def work(conn: sqlite3.Connection) -> int:
            now = time.time()
            only = "" if ids is None else f" AND delivery_id IN ({_marks(len(ids))})"
            args: list[Any] = [] if ids is None else list(ids)
            if sink is not None:
                only += " AND sink = ?"
                args.append(sink)
            touched = {
                r[0]
                for r in conn.execute(
                    f"UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    f" last_error = NULL, updated_at = ? WHERE state = 'dead'{only}"
                    " RETURNING delivery_id",
                    [now, now, *args],
                )
            }
            if sink is None:
                mine = "" if ids is None else f" AND id IN ({_marks(len(ids))})"
                touched |= {
                    r[0]
                    for r in conn.execute(
                        "UPDATE deliveries SET state = 'pending', attempts = 0,"
                        f" next_attempt_at = ?, last_error = NULL, updated_at = ?"
                        f" WHERE state = 'dead'{mine} RETURNING id",
                        [now, now, *(ids or [])],
                    )
                }
            return len(touched)

        count: int = await self._run(work)
        return count

    async def stop_sink(self, sink: str, reason: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO stopped_sinks (sink, stopped_at, reason) VALUES (?, ?, ?)"
                " ON CONFLICT (sink) DO NOTHING",
                (sink, time.time(), reason),
            )

        await self._run(work)

    async def resume_sink(self, sink: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute("DELETE FROM stopped_sinks WHERE sink = ?", (sink,)).rowcount)

        resumed: bool = await self._run(work)
        return resumed

    # ------------------------------------------------------------------ reading

    async def stopped_sinks(self) -> list[StoppedSink]:
        def work(conn: sqlite3.Connection) -> list[StoppedSink]:
            rows = conn.execute("SELECT sink, stopped_at, reason FROM stopped_sinks ORDER BY sink")
            return [StoppedSink(r[0], datetime.fromtimestamp(r[1], UTC), r[2]) for r in rows]

        stopped: list[StoppedSink] = await self._run(work)
        return stopped

    async def sends(self, delivery_id: str) -> list[SendInfo]:
        def work(conn: sqlite3.Connection) -> list[SendInfo]:
            rows = conn.execute(
                "SELECT id, delivery_id, event_index, sink, state, attempts, next_attempt_at,"
                " last_error, delivered_at FROM sends WHERE delivery_id = ?"
                " ORDER BY event_index, sink",
                (delivery_id,),
            )
            return [
                SendInfo(
                    send_id=r[0],
                    delivery_id=r[1],
                    event_id=f"{r[1]}-{r[2]}",
                    sink=r[3],
                    state=SendState(r[4]),
                    attempts=r[5],
                    next_attempt_at=_ts(r[6]) if r[4] == "pending" else None,
                    last_error=r[7],
                    delivered_at=_ts(r[8]),
                )
                for r in rows
            ]

        infos: list[SendInfo] = await self._run(work)
        return infos

    async def sink_counts(self) -> dict[str, dict[SendState, int]]:
        def work(conn: sqlite3.Connection) -> dict[str, dict[SendState, int]]:
            out: dict[str, dict[SendState, int]] = {}
            for sink, state, n in conn.execute(
                "SELECT sink, state, count(*) FROM sends GROUP BY sink, state"
            ):
                out.setdefault(sink, dict.fromkeys(SendState, 0))[SendState(state)] = n
            return out

        counts: dict[str, dict[SendState, int]] = await self._run(work)
        return counts

    async def get(self, delivery_id: str) -> DeliveryInfo | None:
        def work(conn: sqlite3.Connection) -> DeliveryInfo | None:
            row = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else _info(row)

        info: DeliveryInfo | None = await self._run(work)
        return info

    async def get_raw(self, delivery_id: str) -> RawDelivery | None:
        def work(conn: sqlite3.Connection) -> RawDelivery | None:
            row = conn.execute(
                f"SELECT {_RAW_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else _raw(row)

        raw: RawDelivery | None = await self._run(work)
        return raw

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        def work(conn: sqlite3.Connection) -> list[DeliveryInfo]:
            if state is None:
                rows = conn.execute(
                    f"SELECT {_INFO_COLUMNS} FROM deliveries d ORDER BY d.id DESC LIMIT ?",
                    (limit,),
                )
            else:
                rows = conn.execute(
                    f"SELECT {_INFO_COLUMNS} FROM deliveries d WHERE ({OVERALL_STATE}) = ?"
                    " ORDER BY d.id DESC LIMIT ?",
                    (state.value, limit),
                )
            return [_info(r) for r in rows]

        infos: list[DeliveryInfo] = await self._run(work)
        return infos

    async def counts(self) -> dict[DeliveryState, int]:
        def work(conn: sqlite3.Connection) -> dict[DeliveryState, int]:
            found = dict(
                conn.execute(f"SELECT {OVERALL_STATE}, count(*) FROM deliveries d GROUP BY 1")
            )
            return {s: int(found.get(s.value, 0)) for s in DeliveryState}

        counts: dict[DeliveryState, int] = await self._run(work)
        return counts

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
