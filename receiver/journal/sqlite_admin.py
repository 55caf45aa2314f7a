"""The SQLite journal's operator actions and listings: prune, requeue, stop and resume sinks,
and what ``hookdock status``, ``deliveries`` and ``sinks`` read.

``SqliteJournal`` inherits these; they run through the same group-commit thread as the rest.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from handlers.event import RawDelivery
from receiver.journal.base import DeliveryInfo, DeliveryState, SendInfo, SendState, StoppedSink
from receiver.journal.sqlite_schema import (
    OVERALL_STATE,
    RAW_COLUMNS,
    marks,
    parse_files,
    raw_delivery,
)

__all__ = ["SqliteAdmin"]

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


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SqliteAdmin:
    """What an operator does with the journal; ``_run`` runs a function on its connection."""

    async def _run(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

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
                places = marks(len(chunk))
                conn.execute(
                    "DELETE FROM send_attempts WHERE send_id IN"
                    f" (SELECT id FROM sends WHERE delivery_id IN ({places}))",
                    chunk,
                )
                for table, column in (("sends", "delivery_id"), ("attempts", "delivery_id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({places})", chunk)
                conn.execute(f"DELETE FROM deliveries WHERE id IN ({places})", chunk)
            return len(ids)

        count: int = await self._run(work)
        return count

    async def requeue(
        self, delivery_ids: Sequence[str] | None = None, *, sink: str | None = None
    ) -> int:
        ids = None if delivery_ids is None else list(delivery_ids)

        def work(conn: sqlite3.Connection) -> int:
            now = time.time()
            only = "" if ids is None else f" AND delivery_id IN ({marks(len(ids))})"
            args: list[Any] = [] if ids is None else list(ids)
            if sink is not None:
                only += " AND sink = ?"
                args.append(sink)
            touched = {
                r[0]
                for r in conn.execute(
                    f"UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    f" last_error = NULL, code = NULL, updated_at = ? WHERE state = 'dead'{only}"
                    " RETURNING delivery_id",
                    [now, now, *args],
                )
            }
            if sink is None:
                mine = "" if ids is None else f" AND id IN ({marks(len(ids))})"
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
                " last_error, delivered_at, code, files FROM sends WHERE delivery_id = ?"
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
                    code=r[9],
                    files=parse_files(r[10]),
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

    async def dead_codes(self) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT code, count(*) FROM sends WHERE state = 'dead' AND code IS NOT NULL"
                " GROUP BY code ORDER BY code"
            )
            return {code: n for code, n in rows}

        codes: dict[str, int] = await self._run(work)
        return codes

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
                f"SELECT {RAW_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else raw_delivery(row)

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
