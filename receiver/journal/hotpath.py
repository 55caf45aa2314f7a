"""The journal's hot path, written once over a ``Dialect``: append, claim, route, finish,
leases.  What ingest and the dispatcher call, many times a second."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from handlers.event import Event, RawDelivery
from handlers.files import FileInfo
from receiver.journal.base import AppendResult, Claim, Outcome, SendClaim
from receiver.journal.bulk import record_attempts, record_send_attempts
from receiver.journal.dialect import Tx
from receiver.journal.recent_events import RecentEvents
from receiver.journal.route_bulk import EVENT_INSERT, EVENT_VALUES, RouteItem, stopped_now
from receiver.journal.rules import routing_transition, send_transition
from receiver.journal.schema import HELD_BY, event_columns

__all__ = [
    "RAW_COLUMNS",
    "HotPath",
    "files_json",
    "parse_files",
    "raw_delivery",
    "within_budget",
]

RAW_COLUMNS = "d.id, d.route, d.source, d.received_at, d.content_type, d.headers, d.body"
"""The columns ``raw_delivery`` reads, from ``deliveries`` aliased ``d``."""

_SEND_COLUMNS = "s.id, s.delivery_id, d.route, s.event_id, e.body, s.sink, s.attempts, s.files"
"""What a ``SendClaim`` is made of, from ``sends s`` joined to ``deliveries d`` and ``events e``."""


def raw_delivery(row: Any) -> RawDelivery:
    return RawDelivery(
        delivery_id=row[0],
        route=row[1],
        source=row[2],
        received_at=datetime.fromisoformat(row[3]),
        content_type=row[4],
        headers=orjson.loads(row[5]),
        body=bytes(row[6]),
    )


def files_json(files: dict[str, FileInfo]) -> str:
    """The ``sends.files`` value for ``files`` (role -> what was stored)."""
    return orjson.dumps({role: info.model_dump() for role, info in files.items()}).decode()


def parse_files(text: str | None) -> dict[str, FileInfo]:
    """``sends.files`` back into role -> ``FileInfo``; NULL (the usual case) costs nothing."""
    if text is None:
        return {}
    return {role: FileInfo.model_validate(info) for role, info in orjson.loads(text).items()}


def _send_claim(row: Any, now: float, recent: RecentEvents) -> SendClaim:
    event = None
    if row[4] is not None:
        body = bytes(row[4])
        event = recent.take(row[3], body) or Event.model_validate_json(body)
    return SendClaim(
        send_id=row[0],
        delivery_id=row[1],
        route=row[2],
        event_id=row[3],
        event=event,
        sink=row[5],
        attempt=row[6],
        claimed_at=now,
        files=parse_files(row[7]),
    )


def _select_claimed(tx: Tx, rows: list[Any], now: float, recent: RecentEvents) -> list[SendClaim]:
    """The claims for sends just leased (``rows`` of id), with their stored events."""
    ids = [r[0] for r in rows]
    out: list[SendClaim] = []
    step = tx.dialect.max_params - 10
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        out += [
            _send_claim(r, now, recent)
            for r in tx.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends s JOIN deliveries d ON d.id = s.delivery_id"
                " LEFT JOIN events e ON e.id = s.event_id"
                f" WHERE s.id IN ({tx.marks(len(chunk))})",
                chunk,
            )
        ]
    return out


RECENT_MARGIN_SECONDS = 1.0
"""How far before the last full claim a recent one still looks: what another lane or process
made due reads the database's clock through an offset of its own."""


def recent_mark(found: int, limit: int, now: float) -> float | None:
    """What a claim that looked at every due row leaves for the recent claims after it: if it
    found fewer than its limit, everything due was in reach, and from ``now`` on what becomes
    due is newer than this (less the margin); one that filled up leaves older ones due, so the
    next claim looks at all again (None)."""
    return now - RECENT_MARGIN_SECONDS if found < limit else None


def within_budget(sizes: Sequence[int], budget: int) -> int:
    """How many of ``sizes`` (oldest first) a claim takes: as many as add up to no more than
    ``budget``, and always the first, so that a body larger than the budget still goes."""
    total = 0
    for taken, size in enumerate(sizes):
        total += size
        if total > budget and taken:
            return taken
    return len(sizes)


def since_clause(since: float | None) -> tuple[str, tuple[float, ...]]:
    """The condition (and its parameter) a recent claim adds: due since ``since``, if any."""
    return ("", ()) if since is None else (" AND next_attempt_at >= ?", (since,))


class HotPath:
    """Mixed into ``SqlJournal``; ``_write`` runs a function in the next group commit,
    ``_write_dispatch`` in the next of the dispatch lane (the same one on SQLite), where
    everything the dispatcher writes goes."""

    _recent_events: RecentEvents
    _claim_from: float | None = None
    """Set by a claim that saw every due delivery: when it ran, on the database's clock, less
    ``RECENT_MARGIN_SECONDS``.  A ``recent_only`` claim looks only at deliveries due since."""
    _send_claim_from: dict[str, float | None]
    """The same for each sink's sends (``claim_sends``)."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _write_dispatch(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _bulk(self, kind: str, item: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ deliveries

    async def append(
        self, delivery: RawDelivery, dedupe_key: str, subject: str | None = None
    ) -> AppendResult:
        row = (
            delivery.delivery_id,
            delivery.route,
            delivery.source,
            delivery.received_at.isoformat(),
            delivery.content_type,
            orjson.dumps(delivery.headers),
            delivery.body,
            dedupe_key,
            subject,
        )
        result: AppendResult = await self._bulk("append", row)
        return result

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        recent_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[Claim]:
        def work(tx: Tx) -> list[Claim]:
            now = tx.now
            since = self._claim_from if recent_only else None
            recent, since_args = since_clause(since)
            # The sizes first (length() reads no body), so that only the bodies within the
            # budget are read; the rows stay locked (PostgreSQL) until the update below.
            due = tx.execute(
                "SELECT id, length(body) FROM deliveries WHERE state = 'pending'"
                f" AND next_attempt_at <= ?{recent} AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY next_attempt_at LIMIT ?{tx.dialect.skip_locked}",
                (now, *since_args, now, limit),
            ).fetchall()
            taken = len(due) if max_bytes is None else within_budget([r[1] for r in due], max_bytes)
            # What the budget leaves behind stays due since long ago, as what the limit does:
            # only a claim that took every due delivery marks (once its update has run).
            mark = recent_mark(len(due), limit, now) if taken == len(due) else None
            rows = []
            if taken:
                rows = tx.execute(
                    "UPDATE deliveries SET lease_owner = ?, lease_until = ?,"
                    f" attempts = attempts + 1, updated_at = ? WHERE id IN ({tx.marks(taken)})"
                    " RETURNING id, route, source, received_at, content_type, headers, body,"
                    " attempts",
                    (owner, now + lease_seconds, now, *(row[0] for row in due[:taken])),
                ).fetchall()
            if since is None:
                self._claim_from = mark
            return [Claim(raw_delivery(r), r[7], now) for r in rows]

        claims: list[Claim] = await self._write_dispatch(work, single_statement=True)
        claims.sort(key=lambda c: c.delivery.delivery_id)
        return claims

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        delivery_id = claim.delivery.delivery_id
        routing_transition(outcome, 0.0)  # refuse a wrong outcome before it is queued

        def work(tx: Tx) -> None:
            now = tx.now
            state, next_at = routing_transition(outcome, now)
            tx.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, updated_at = ?"
                f" WHERE id = ? AND {HELD_BY}",
                (state, next_at, outcome.error, now, delivery_id, owner),
            )
            record_attempts(tx, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._write_dispatch(work)

    async def route(
        self,
        claim: Claim,
        owner: str,
        sends: Sequence[tuple[Event, str]],
        lease_now: Collection[str],
        lease_seconds: float,
    ) -> list[SendClaim]:
        events: dict[str, tuple[int, Event, bytes]] = {}
        for event, _ in sends:
            if event.event_id not in events:
                events[event.event_id] = (len(events), event, event.to_json())
        pairs = list(dict.fromkeys((event.event_id, sink) for event, sink in sends))
        item = RouteItem(claim, owner, events, pairs, frozenset(lease_now), lease_seconds)
        # Every routing of a batch is written together (``route_bulk``).
        claims: list[SendClaim] = await self._bulk("route", item)
        # Sends not leased now are claimed soon: their events are kept, not parsed again then.
        leased = {(claim.event_id, claim.sink) for claim in claims}
        for event_id in dict.fromkeys(e for e, sink in pairs if (e, sink) not in leased):
            _, event, body = events[event_id]
            self._recent_events.remember(event, body)
        return claims

    # ------------------------------------------------------------------ sends

    async def claim_sends(
        self,
        owner: str,
        limits: Mapping[str, int],
        lease_seconds: float,
        *,
        recent_only: Collection[str] = (),
    ) -> list[SendClaim]:
        wanted = [(sink, n) for sink, n in limits.items() if n > 0]

        def work(tx: Tx) -> list[SendClaim]:
            now = tx.now
            leased: list[Any] = []
            # None of a stopped sink; its claim, which would see nothing whatever is due,
            # leaves no mark, so that once resumed it looks at all.
            stopped = stopped_now(tx)
            for sink, limit in wanted:
                if sink in stopped:
                    self._send_claim_from[sink] = None
                    continue
                since = self._send_claim_from.get(sink) if sink in recent_only else None
                recent, since_args = since_clause(since)
                rows = tx.execute(
                    "UPDATE sends SET lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                    " updated_at = ? WHERE id IN (SELECT id FROM sends WHERE sink = ?"
                    f" AND state = 'pending' AND next_attempt_at <= ?{recent}"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                    f" ORDER BY next_attempt_at LIMIT ?{tx.dialect.skip_locked})"
                    " RETURNING id",
                    (owner, now + lease_seconds, now, sink, now, *since_args, now, limit),
                ).fetchall()
                leased += rows
                if since is None:
                    self._send_claim_from[sink] = recent_mark(len(rows), limit, now)
            if not leased:
                return []
            return _select_claimed(tx, leased, now, self._recent_events)

        if not wanted:
            return []
        claims: list[SendClaim] = await self._write_dispatch(work)
        claims.sort(key=lambda c: c.send_id)
        return claims

    async def finish_send(self, claim: SendClaim, owner: str, outcome: Outcome) -> None:
        if outcome.kind == "delivered":
            await self._bulk("sent", (claim, owner))
            return
        send_transition(outcome, 0.0)  # refuse a wrong outcome before it is queued

        def work(tx: Tx) -> None:
            now = tx.now
            state, next_at = send_transition(outcome, now)
            if outcome.kind == "gone":
                tx.execute(
                    "INSERT INTO stopped_sinks (sink, stopped_at, reason) VALUES (?, ?, ?)"
                    " ON CONFLICT (sink) DO NOTHING",
                    (claim.sink, now, outcome.error or "stopped"),
                )
            tx.execute(
                "UPDATE sends SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, code = ?, updated_at = ?"
                f" WHERE id = ? AND {HELD_BY}",
                (state.value, next_at, outcome.error, outcome.code, now, claim.send_id, owner),
            )
            record_send_attempts(tx, [(claim, owner, outcome.kind, outcome.error)], now)

        await self._write_dispatch(work)

    async def store_event(self, claim: SendClaim, event: Event, position: int) -> None:
        """Store the event of a send routed before events were stored (normalized again once)."""

        def work(tx: Tx) -> None:
            tx.execute(
                f"INSERT INTO events ({EVENT_INSERT}) VALUES {EVENT_VALUES}"
                " ON CONFLICT (id) DO NOTHING",
                (
                    event.event_id,
                    claim.delivery_id,
                    position,
                    event.to_json(),
                    *event_columns(event),
                ),
            )

        await self._write_dispatch(work, single_statement=True)

    async def record_file(self, claim: SendClaim, owner: str, role: str, info: FileInfo) -> bool:
        def work(tx: Tx) -> bool:
            row = tx.execute(
                f"SELECT files FROM sends WHERE id = ? AND {HELD_BY}", (claim.send_id, owner)
            ).fetchone()
            if row is None:
                return False  # our lease ran out and the send is someone else's now
            # Read and written in one job on the commit thread, under the send's lease: files
            # recorded at the same time for other roles are all kept.
            files = parse_files(row[0])
            files[role] = info
            # updated_at stays: it is when the attempt began (release_stale logs it so).
            tx.execute(
                f"UPDATE sends SET files = ? WHERE id = ? AND {HELD_BY}",
                (files_json(files), claim.send_id, owner),
            )
            return True

        recorded: bool = await self._write_dispatch(work)
        return recorded

    async def renew_sends(self, owner: str, send_ids: Sequence[int], lease_seconds: float) -> int:
        ids = list(send_ids)
        if not ids:
            return 0

        def work(tx: Tx) -> int:
            until = tx.now + lease_seconds
            step = tx.dialect.max_params - 10
            return sum(
                tx.execute(
                    "UPDATE sends SET lease_until = ?"
                    f" WHERE {HELD_BY} AND id IN ({tx.marks(len(chunk))})",
                    [until, owner, *chunk],
                ).rowcount
                for chunk in (ids[i : i + step] for i in range(0, len(ids), step))
            )

        count: int = await self._write_dispatch(work)
        return count

    # ------------------------------------------------------------------ leases

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        await self._release("deliveries", owner, list(delivery_ids))

    async def release_sends(self, owner: str, send_ids: Sequence[int]) -> None:
        await self._release("sends", owner, list(send_ids))

    async def _release(self, table: str, owner: str, ids: list[Any]) -> None:
        """Give leases back unattempted (shutdown): the attempt does not count."""

        def work(tx: Tx) -> None:
            tx.executemany(
                f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL,"
                f" attempts = attempts - 1 WHERE id = ? AND {HELD_BY}",
                [(i, owner) for i in ids],
            )

        await self._write_dispatch(work)

    async def ping(self) -> None:
        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(tx.now),),
            )

        await self._write(work, single_statement=True)
