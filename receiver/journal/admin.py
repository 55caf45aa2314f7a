"""The journal's operator side, written once over a ``Dialect``: what ``hookdock status``,
``deliveries``, ``sinks`` and ``retry`` read and do.

Reads go through ``_read`` (PostgreSQL: a pool of their own, so an operator's query never
waits behind the commit thread), actions through ``_write``.  Every state an operator sees is
decided by ``rules``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from handlers.event import RawDelivery
from receiver.journal.base import DeliveryInfo, DeliveryState, SendInfo, SendState, StoppedSink
from receiver.journal.dialect import Tx
from receiver.journal.hotpath import RAW_COLUMNS, parse_files, raw_delivery
from receiver.journal.rules import (
    SendSummary,
    delivery_attempts,
    delivery_next_attempt,
    operator_error,
    overall_state,
    overall_state_cases,
)

__all__ = ["Admin", "delivery_infos", "send_infos"]

_PENDING_SEND = "EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id AND s.state = 'pending')"
_DEAD_SEND = "EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id AND s.state = 'dead')"

_ALERT = '%"alert":"%'
"""An event with an alert, as ``Event.to_json`` writes it (compact, ``"alert":null`` without)."""
_ALERT_FILTER = {
    # SQLite's LIKE never matches a BLOB operand: compare the body's text.  PostgreSQL has
    # LIKE on bytea itself, where a cast to text would give the hex form.
    "sqlite": ("CAST(body AS TEXT) LIKE ?", _ALERT),
    "postgres": ("body LIKE ?", _ALERT.encode()),
}

_DELIVERY_COLUMNS = (
    "d.id, d.route, d.source, d.state, d.attempts, d.received_at, d.next_attempt_at,"
    " d.last_error, length(d.body)"
)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _state_filter(state: DeliveryState) -> tuple[str, list[Any]]:
    """SQL matching deliveries whose ``overall_state`` is ``state``, made from the rule."""
    clauses, params = [], []
    for routing, pending, dead in overall_state_cases(state):
        clauses.append(f"(d.state = ? AND {_PENDING_SEND} = ? AND {_DEAD_SEND} = ?)")
        params += [routing, pending, dead]
    return "(" + " OR ".join(clauses) + ")", params


def _infos(tx: Tx, rows: list[Any]) -> list[DeliveryInfo]:
    """Deliveries as an operator sees them: each with what the rules make of its sends."""
    if not rows:
        return []
    ids = [r[0] for r in rows]
    sends: dict[str, list[SendSummary]] = {i: [] for i in ids}
    for r in tx.execute(
        "SELECT delivery_id, sink, state, attempts, next_attempt_at, last_error, updated_at"
        f" FROM sends WHERE delivery_id IN ({tx.marks(len(ids))})",
        ids,
    ):
        sends[r[0]].append(SendSummary(r[1], SendState(r[2]), r[3], r[4], r[5], r[6]))
    out = []
    for r in rows:
        mine = sends[r[0]]
        state = overall_state(
            r[3],
            any(s.state is SendState.PENDING for s in mine),
            any(s.state is SendState.DEAD for s in mine),
        )
        out.append(
            DeliveryInfo(
                delivery_id=r[0],
                route=r[1],
                source=r[2],
                state=state,
                attempts=delivery_attempts(r[4], mine),
                received_at=datetime.fromisoformat(r[5]),
                next_attempt_at=_ts(delivery_next_attempt(state, r[3], r[6], mine)),
                last_error=operator_error(r[7], mine),
                size=r[8],
            )
        )
    return out


class Admin:
    """Mixed into ``SqlJournal``."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ operator actions

    async def prune(self, done_before: float) -> int:
        cutoff = datetime.fromtimestamp(done_before, UTC).isoformat()

        def work(tx: Tx) -> int:
            ids = [
                r[0]
                for r in tx.execute(
                    "SELECT d.id FROM deliveries d WHERE d.state = 'routed' AND d.received_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id"
                    " AND s.state != 'delivered')",
                    (cutoff,),
                )
            ]
            _delete_deliveries(tx, ids)
            return len(ids)

        count: int = await self._write(work)
        return count

    async def prune_dead(self, dead_before: float) -> int:
        cutoff = datetime.fromtimestamp(dead_before, UTC).isoformat()

        def work(tx: Tx) -> int:
            where, params = _state_filter(DeliveryState.DEAD)
            ids = [
                r[0]
                for r in tx.execute(
                    f"SELECT d.id FROM deliveries d WHERE d.received_at < ? AND {where}",
                    [cutoff, *params],
                )
            ]
            _delete_deliveries(tx, ids)
            return len(ids)

        count: int = await self._write(work)
        return count

    async def requeue(
        self, delivery_ids: Sequence[str] | None = None, *, sink: str | None = None
    ) -> int:
        ids = None if delivery_ids is None else list(delivery_ids)

        def work(tx: Tx) -> int:
            now = tx.now
            only = "" if ids is None else f" AND delivery_id IN ({tx.marks(len(ids))})"
            args: list[Any] = [] if ids is None else list(ids)
            if sink is not None:
                only += " AND sink = ?"
                args.append(sink)
            touched = {
                r[0]
                for r in tx.execute(
                    "UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    f" last_error = NULL, code = NULL, updated_at = ? WHERE state = 'dead'{only}"
                    " RETURNING delivery_id",
                    [now, now, *args],
                )
            }
            if sink is None:
                touched |= _reroute(tx, ids)
            return len(touched)

        count: int = await self._write(work)
        return count

    async def renormalize(self, delivery_ids: Sequence[str] | None = None) -> int:
        ids = None if delivery_ids is None else list(delivery_ids)

        def work(tx: Tx) -> int:
            dead = _dead_ids(tx, ids)
            for start in range(0, len(dead), 500):
                chunk = dead[start : start + 500]
                places = tx.marks(len(chunk))
                _delete_sends(tx, chunk, state="dead")
                tx.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    f" last_error = NULL, updated_at = ? WHERE id IN ({places})",
                    [tx.now, tx.now, *chunk],
                )
            return len(dead)

        count: int = await self._write(work)
        return count

    async def stop_sink(self, sink: str, reason: str) -> None:
        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO stopped_sinks (sink, stopped_at, reason) VALUES (?, ?, ?)"
                " ON CONFLICT (sink) DO NOTHING",
                (sink, tx.now, reason),
            )

        await self._write(work)

    async def resume_sink(self, sink: str) -> bool:
        def work(tx: Tx) -> bool:
            return bool(tx.execute("DELETE FROM stopped_sinks WHERE sink = ?", (sink,)).rowcount)

        resumed: bool = await self._write(work)
        return resumed

    # ------------------------------------------------------------------ reading

    async def stopped_sinks(self) -> list[StoppedSink]:
        def work(tx: Tx) -> list[StoppedSink]:
            rows = tx.execute("SELECT sink, stopped_at, reason FROM stopped_sinks ORDER BY sink")
            return [StoppedSink(r[0], datetime.fromtimestamp(r[1], UTC), r[2]) for r in rows]

        stopped: list[StoppedSink] = await self._read(work)
        return stopped

    async def sends(self, delivery_id: str) -> list[SendInfo]:
        infos: list[SendInfo] = await self._read(lambda tx: send_infos(tx, delivery_id))
        return infos

    async def sink_counts(self) -> dict[str, dict[SendState, int]]:
        def work(tx: Tx) -> dict[str, dict[SendState, int]]:
            out: dict[str, dict[SendState, int]] = {}
            for sink, state, n in tx.execute(
                "SELECT sink, state, count(*) FROM sends GROUP BY sink, state"
            ):
                out.setdefault(sink, dict.fromkeys(SendState, 0))[SendState(state)] = n
            return out

        counts: dict[str, dict[SendState, int]] = await self._read(work)
        return counts

    async def dead_codes(self) -> dict[str, int]:
        def work(tx: Tx) -> dict[str, int]:
            rows = tx.execute(
                "SELECT code, count(*) FROM sends WHERE state = 'dead' AND code IS NOT NULL"
                " GROUP BY code ORDER BY code"
            )
            return {code: n for code, n in rows}

        codes: dict[str, int] = await self._read(work)
        return codes

    async def dead_by_sink(self) -> dict[tuple[str, str], int]:
        def work(tx: Tx) -> dict[tuple[str, str], int]:
            rows = tx.execute(
                "SELECT sink, code, count(*) FROM sends WHERE state = 'dead' GROUP BY sink, code"
            )
            return {(sink, code or "none"): n for sink, code, n in rows}

        found: dict[tuple[str, str], int] = await self._read(work)
        return found

    async def alert_counts(self) -> dict[str, int]:
        """Stored events that carry an ``alert`` (``receiver.alerts``), by ``vendor kind``."""

        def work(tx: Tx) -> dict[str, int]:
            out: dict[str, int] = {}
            # Events are JSON without a column for alerts; LIKE (on bytes in both engines)
            # keeps the scan to a byte search, and the match is confirmed on the parsed event.
            where, pattern = _ALERT_FILTER[tx.dialect.name]
            for (body,) in tx.execute(f"SELECT body FROM events WHERE {where}", (pattern,)):
                event = orjson.loads(bytes(body))
                if isinstance(event, dict) and event.get("alert"):
                    key = f"{event.get('vendor')} {event.get('kind')}"
                    out[key] = out.get(key, 0) + 1
            return dict(sorted(out.items()))

        counts: dict[str, int] = await self._read(work)
        return counts

    async def get(self, delivery_id: str) -> DeliveryInfo | None:
        def work(tx: Tx) -> DeliveryInfo | None:
            rows = tx.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
            ).fetchall()
            infos = _infos(tx, rows)
            return infos[0] if infos else None

        info: DeliveryInfo | None = await self._read(work)
        return info

    async def get_raw(self, delivery_id: str) -> RawDelivery | None:
        def work(tx: Tx) -> RawDelivery | None:
            row = tx.execute(
                f"SELECT {RAW_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else raw_delivery(row)

        raw: RawDelivery | None = await self._read(work)
        return raw

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        def work(tx: Tx) -> list[DeliveryInfo]:
            where, params = ("", []) if state is None else _state_filter(state)
            rows = tx.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d"
                f"{' WHERE ' + where if where else ''} ORDER BY d.id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
            return _infos(tx, rows)

        infos: list[DeliveryInfo] = await self._read(work)
        return infos

    async def counts(self) -> dict[DeliveryState, int]:
        def work(tx: Tx) -> dict[DeliveryState, int]:
            out = dict.fromkeys(DeliveryState, 0)
            # A dozen groups at most, whatever the size of the journal: the rule names each.
            for routing, pending, dead, n in tx.execute(
                f"SELECT d.state, {_PENDING_SEND}, {_DEAD_SEND}, count(*) FROM deliveries d"
                " GROUP BY 1, 2, 3"
            ):
                out[overall_state(routing, bool(pending), bool(dead))] += n
            return out

        counts: dict[DeliveryState, int] = await self._read(work)
        return counts


def send_infos(tx: Tx, delivery_id: str) -> list[SendInfo]:
    """The sends of a delivery, in event order, then by sink."""
    rows = tx.execute(
        "SELECT id, delivery_id, event_id, sink, state, attempts, next_attempt_at,"
        " last_error, delivered_at, code, files, lease_owner, updated_at FROM sends"
        " WHERE delivery_id = ? ORDER BY event_index, sink",
        (delivery_id,),
    )
    return [
        SendInfo(
            send_id=r[0],
            delivery_id=r[1],
            event_id=r[2],
            sink=r[3],
            state=SendState(r[4]),
            attempts=r[5],
            next_attempt_at=_ts(r[6]) if r[4] == "pending" else None,
            last_error=r[7],
            delivered_at=_ts(r[8]),
            code=r[9],
            files=parse_files(r[10]),
            lease_owner=r[11],
            updated_at=_ts(r[12]),
        )
        for r in rows
    ]


def delivery_infos(tx: Tx, delivery_ids: Sequence[str]) -> list[DeliveryInfo]:
    """Deliveries by id, as an operator sees them (those that exist)."""
    ids = list(delivery_ids)
    if not ids:
        return []
    rows = tx.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d WHERE d.id IN ({tx.marks(len(ids))})",
        ids,
    ).fetchall()
    return _infos(tx, rows)


def _delete_deliveries(tx: Tx, ids: list[str]) -> None:
    """Delete deliveries with everything of theirs: sends, attempts, events."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        _delete_sends(tx, chunk)
        places = tx.marks(len(chunk))
        for table in ("attempts", "events"):
            tx.execute(f"DELETE FROM {table} WHERE delivery_id IN ({places})", chunk)
        tx.execute(f"DELETE FROM deliveries WHERE id IN ({places})", chunk)


def _delete_sends(tx: Tx, delivery_ids: list[str], *, state: str | None = None) -> None:
    """Delete the sends of these deliveries (only those in ``state``), attempts included."""
    where = f"delivery_id IN ({tx.marks(len(delivery_ids))})"
    params: list[Any] = list(delivery_ids)
    if state is not None:
        where += " AND state = ?"
        params.append(state)
    tx.execute(
        f"DELETE FROM send_attempts WHERE send_id IN (SELECT id FROM sends WHERE {where})", params
    )
    tx.execute(f"DELETE FROM sends WHERE {where}", params)


def _dead_ids(tx: Tx, ids: list[str] | None) -> list[str]:
    where, params = _state_filter(DeliveryState.DEAD)
    if ids is not None:
        where += f" AND d.id IN ({tx.marks(len(ids))})"
        params += ids
    return [r[0] for r in tx.execute(f"SELECT d.id FROM deliveries d WHERE {where}", params)]


def _reroute(tx: Tx, ids: list[str] | None) -> set[str]:
    """Deliveries that could not be routed go back to be routed."""
    mine = "" if ids is None else f" AND id IN ({tx.marks(len(ids))})"
    return {
        r[0]
        for r in tx.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            f" last_error = NULL, updated_at = ? WHERE state = 'dead'{mine} RETURNING id",
            [tx.now, tx.now, *(ids or [])],
        )
    }
