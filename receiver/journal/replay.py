"""The operator's actions on single events, written once over a ``Dialect``: replay, retry
now, purge a task, and the record of who did what (``actions``).

Each action and its record are one transaction: an action is never done unrecorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from receiver.journal.base import SendState
from receiver.journal.browse import subject_patterns
from receiver.journal.dialect import Tx
from receiver.journal.schema import EVENTLESS
from receiver.journal.views import PurgeResult, ReplayResult, RetryNowResult

__all__ = ["Replay", "record_action", "replay_chunk"]


def record_action(
    tx: Tx,
    actor: str,
    action: str,
    *,
    delivery_id: str | None = None,
    event_id: str | None = None,
    sink: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    tx.execute(
        "INSERT INTO actions (at, actor, action, delivery_id, event_id, sink, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            tx.now,
            actor,
            action,
            delivery_id,
            event_id,
            sink,
            None if not detail else orjson.dumps(dict(detail)).decode(),
        ),
    )


def _archive_attempts(tx: Tx, send_ids: list[int]) -> None:
    """Move the attempts of sends about to start over below any number they can reach again,
    keeping their order, so that a replayed send shows every attempt it ever had.

    Each send's attempts shift down by their span, so no new number meets an old one, even
    row by row inside the statement (PostgreSQL checks the key at each row).  The spans are
    read first: SQLite's UPDATE sees its own earlier rows, so a span computed inside it grew
    as the rows moved and put a send's second attempt before its first."""
    if not send_ids:
        return
    spans = tx.execute(
        "SELECT send_id, max(attempt) - min(attempt) + 1 FROM send_attempts"
        f" WHERE send_id IN ({tx.marks(len(send_ids))}) GROUP BY send_id",
        send_ids,
    ).fetchall()
    tx.executemany(
        "UPDATE send_attempts SET attempt = attempt - ? WHERE send_id = ?",
        [(span, send_id) for send_id, span in spans],
    )


def _send_again(
    tx: Tx, events: list[tuple[str, str, int]], sink: str | None
) -> tuple[int, int, int]:
    """Make the sends of ``events`` (id, delivery id, position) pending with fresh attempts,
    only those to ``sink`` when given, making a send to it where an event has none.  A send
    under an attempt right now is left to it: its outcome would overwrite the replay.
    Returns (made pending, made, left to their attempt)."""
    now = tx.now
    ids = [e[0] for e in events]
    only = "" if sink is None else " AND sink = ?"
    rows = tx.execute(
        f"SELECT id, event_id, lease_until FROM sends WHERE event_id IN ({tx.marks(len(ids))})"
        + only,
        [*ids] + ([] if sink is None else [sink]),
    ).fetchall()
    busy = [r for r in rows if r[2] is not None and r[2] >= now]
    again = [r[0] for r in rows if r[2] is None or r[2] < now]
    _archive_attempts(tx, again)
    if again:
        tx.execute(
            "UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " last_error = NULL, code = NULL, delivered_at = NULL, lease_owner = NULL,"
            f" lease_until = NULL, updated_at = ? WHERE id IN ({tx.marks(len(again))})",
            [now, now, *again],
        )
    created = 0
    if sink is not None:
        have = {r[1] for r in rows}
        for event_id, delivery_id, position in events:
            if event_id not in have:
                created += tx.execute(
                    "INSERT INTO sends (delivery_id, event_index, event_id, sink,"
                    " next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (delivery_id, position, event_id, sink, now, now),
                ).rowcount
    return len(again), created, len(busy)


def _reroute(tx: Tx, delivery_ids: list[str]) -> int:
    """Route again deliveries that have no events (not routable, or every event dropped by
    the rules); one still pending is on its way already.  Returns how many."""
    if not delivery_ids:
        return 0
    now = tx.now
    rerouted: int = tx.execute(
        "UPDATE deliveries SET state = 'pending', dropped = 0, attempts = 0,"
        " next_attempt_at = ?, last_error = NULL, lease_owner = NULL, lease_until = NULL,"
        f" updated_at = ? WHERE id IN ({tx.marks(len(delivery_ids))}) AND state != 'pending'"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = deliveries.id)",
        [now, now, *delivery_ids],
    ).rowcount
    return rerouted


def replay_chunk(
    tx: Tx,
    event_ids: Sequence[str],
    delivery_ids: Sequence[str],
    *,
    sink: str | None,
    actor: str,
    detail: Mapping[str, Any] | None,
) -> tuple[int, int, int, int]:
    """Replay events and route deliveries without events again, one action recorded for
    each: a bulk replay's chunk.  Returns (made pending, made, left to their attempt, routed
    again)."""
    wanted = list(event_ids)
    events: list[tuple[str, str, int]] = []
    if wanted:
        events = [
            (r[0], r[1], r[2])
            for r in tx.execute(
                "SELECT id, delivery_id, position FROM events"
                f" WHERE id IN ({tx.marks(len(wanted))})",
                wanted,
            )
        ]
    what = {**(detail or {}), **({"sink": sink} if sink else {})}
    for event_id, delivery_id, _ in events:
        record_action(
            tx, actor, "replay", delivery_id=delivery_id, event_id=event_id, sink=sink, detail=what
        )
    for delivery_id in delivery_ids:
        record_action(tx, actor, "replay", delivery_id=delivery_id, detail=what)
    again, created, busy = _send_again(tx, events, sink) if events else (0, 0, 0)
    return again, created, busy, _reroute(tx, list(delivery_ids))


class Replay:
    """Mixed into ``SqlJournal``."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def replay(
        self,
        ref: str,
        *,
        sink: str | None = None,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> ReplayResult | None:
        def work(tx: Tx) -> ReplayResult | None:
            found = tx.execute("SELECT delivery_id FROM events WHERE id = ?", (ref,)).fetchone()
            if found is not None:
                delivery_id = found[0]
                events = tx.execute(
                    "SELECT id, position FROM events WHERE id = ?", (ref,)
                ).fetchall()
            else:
                if tx.execute("SELECT 1 FROM deliveries WHERE id = ?", (ref,)).fetchone() is None:
                    return None
                delivery_id = ref
                events = tx.execute(
                    "SELECT id, position FROM events WHERE delivery_id = ? ORDER BY position",
                    (ref,),
                ).fetchall()
            what = {**(detail or {}), "sink": sink} if sink else dict(detail or {})
            record_action(
                tx,
                actor,
                "replay",
                delivery_id=delivery_id,
                event_id=None if found is None else ref,
                sink=sink,
                detail=what,
            )
            if not events:
                # Nothing was routed (not routable, or the rules dropped every event): route
                # it again.  One still pending is on its way already.
                rerouted = _reroute(tx, [delivery_id])
                return ReplayResult(delivery_id, [], 0, 0, 0, bool(rerouted))
            again, created, busy = _send_again(tx, [(e, delivery_id, p) for e, p in events], sink)
            ids = [r[0] for r in events]
            return ReplayResult(delivery_id, ids, again, created, busy, False)

        result: ReplayResult | None = await self._write(work)
        return result

    async def replay_events(
        self,
        event_ids: Sequence[str],
        *,
        sink: str | None = None,
        actor: str,
        detail: Mapping[str, Any] | None = None,
        delivery_ids: Sequence[str] = (),
    ) -> tuple[int, int, int, int]:
        """``replay`` for many events at once (a bulk replay's chunk), in one transaction, one
        action recorded per event; ``delivery_ids`` are deliveries without events, routed
        again.  Returns (made pending, made, left to their attempt, routed again)."""
        if not event_ids and not delivery_ids:
            return 0, 0, 0, 0

        def work(tx: Tx) -> tuple[int, int, int, int]:
            return replay_chunk(tx, event_ids, delivery_ids, sink=sink, actor=actor, detail=detail)

        counts: tuple[int, int, int, int] = await self._write(work)
        return counts

    async def retry_now(self, send_id: int, *, actor: str) -> RetryNowResult | None:
        def work(tx: Tx) -> RetryNowResult | None:
            row = tx.execute(
                "SELECT delivery_id, event_id, sink, state FROM sends WHERE id = ?", (send_id,)
            ).fetchone()
            if row is None:
                return None
            state = SendState(row[3])
            if state is SendState.PENDING:
                tx.execute("UPDATE sends SET next_attempt_at = ? WHERE id = ?", (tx.now, send_id))
                record_action(
                    tx, actor, "retry-now", delivery_id=row[0], event_id=row[1], sink=row[2]
                )
            return RetryNowResult(
                send_id, row[0], row[1], row[2], state, state is SendState.PENDING
            )

        result: RetryNowResult | None = await self._write(work)
        return result

    async def record_action(
        self,
        actor: str,
        action: str,
        *,
        delivery_id: str | None = None,
        event_id: str | None = None,
        sink: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        def work(tx: Tx) -> None:
            record_action(
                tx,
                actor,
                action,
                delivery_id=delivery_id,
                event_id=event_id,
                sink=sink,
                detail=detail,
            )

        await self._write(work)

    async def purge_task(self, task_id: str, *, actor: str) -> PurgeResult:
        # Deliveries whose subject names the task, routed or not, found by a scan before the
        # write lock is taken: subjects are matched by pattern (no index serves it).  Inside
        # the transaction, the indexed lookups find any that came meanwhile.
        named = await self._read(lambda tx: _subject_deliveries(tx, task_id, eventless=False))

        def work(tx: Tx) -> PurgeResult:
            found = {
                r[0]
                for r in tx.execute(
                    "SELECT DISTINCT delivery_id FROM events WHERE task_id = ?", (task_id,)
                )
            }
            found |= set(_subject_deliveries(tx, task_id, eventless=True))
            present = set()
            for start in range(0, len(named), 500):
                chunk = named[start : start + 500]
                present |= {
                    r[0]
                    for r in tx.execute(
                        f"SELECT id FROM deliveries WHERE id IN ({tx.marks(len(chunk))})", chunk
                    )
                }
            ids = sorted(found | present)
            delivered: dict[str, int] = {}
            events = sends = attempts = unrouted = size = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                places = tx.marks(len(chunk))
                for sink, n in tx.execute(
                    "SELECT sink, count(*) FROM sends WHERE state = 'delivered'"
                    f" AND delivery_id IN ({places}) GROUP BY sink",
                    chunk,
                ):
                    delivered[sink] = delivered.get(sink, 0) + n
                unrouted += int(
                    tx.execute(
                        f"SELECT count(*) FROM deliveries d WHERE id IN ({places}) AND NOT EXISTS"
                        " (SELECT 1 FROM events e WHERE e.delivery_id = d.id)",
                        chunk,
                    ).fetchone()[0]
                )
                size += int(
                    tx.execute(
                        "SELECT COALESCE(sum(length(body)), 0) FROM deliveries"
                        f" WHERE id IN ({places})",
                        chunk,
                    ).fetchone()[0]
                )
                attempts += tx.execute(
                    "DELETE FROM send_attempts WHERE send_id IN"
                    f" (SELECT id FROM sends WHERE delivery_id IN ({places}))",
                    chunk,
                ).rowcount
                sends += tx.execute(
                    f"DELETE FROM sends WHERE delivery_id IN ({places})", chunk
                ).rowcount
                events += tx.execute(
                    f"DELETE FROM events WHERE delivery_id IN ({places})", chunk
                ).rowcount
                attempts += tx.execute(
                    f"DELETE FROM attempts WHERE delivery_id IN ({places})", chunk
                ).rowcount
                tx.execute(f"DELETE FROM deliveries WHERE id IN ({places})", chunk)
            record_action(
                tx,
                actor,
                "purge",
                detail={
                    "task_id": task_id,
                    "deliveries": len(ids),
                    "unrouted": unrouted,
                    "events": events,
                    "sends": sends,
                    "attempts": attempts,
                    "payload_bytes": size,
                },
            )
            return PurgeResult(
                task_id,
                ids,
                events,
                sends,
                attempts,
                unrouted,
                size,
                dict(sorted(delivered.items())),
            )

        result: PurgeResult = await self._write(work)
        return result


def _subject_deliveries(tx: Tx, task_id: str, *, eventless: bool) -> list[str]:
    """Deliveries whose subject names ``task_id``: every one (a scan), or only those without
    events (through their partial index)."""
    where = f" AND {EVENTLESS}" if eventless else ""
    return [
        r[0]
        for r in tx.execute(
            "SELECT id FROM deliveries WHERE subject IS NOT NULL AND (subject LIKE ? ESCAPE '\\'"
            f" OR subject LIKE ? ESCAPE '\\'){where}",
            subject_patterns(task_id),
        )
    ]
