"""Routing recorded for a whole group-commit batch: a few statements, however many deliveries.

Each routed delivery needs its state changed, its attempt recorded, its events stored and one
send per (event, sink) inserted.  Written per delivery that is five statements each: on
PostgreSQL five round trips inside the transaction, on SQLite five hand-offs of the GIL to and
from the busy event loop, and the batch's other jobs (ingest's appends among them) wait for
all of them.  Here a batch's routings are written together: one statement per table.

Should that fail (a value one engine refuses), the batch's routings are written again one by
one, each in a savepoint, so one bad delivery fails alone and never takes the batch's appends
with it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from handlers.event import Event
from receiver.journal.base import Claim, SendClaim
from receiver.journal.bulk import record_attempts
from receiver.journal.committer import JobFailed, connection_broken
from receiver.journal.dialect import Tx
from receiver.journal.schema import EVENT_FIELDS, HELD_BY, event_columns

__all__ = ["EVENT_INSERT", "EVENT_VALUES", "RouteItem", "route_many", "stopped_now"]

EVENT_INSERT = ", ".join(("id", "delivery_id", "position", "body", *EVENT_FIELDS))
EVENT_VALUES = "(" + ", ".join("?" * (4 + len(EVENT_FIELDS))) + ")"
_EVENT_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in ("body", *EVENT_FIELDS))
"""An event is stored with its searchable fields in columns of their own (``EVENT_FIELDS``)."""

_SEND_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class RouteItem:
    """One delivery's routing, as ``HotPath.route`` hands it to the batch."""

    claim: Claim
    owner: str
    events: dict[str, tuple[int, Event, bytes]]
    """Event id -> (position in the delivery, event, its JSON)."""
    pairs: list[tuple[str, str]]
    """(event id, sink), each once."""
    lease_now: Collection[str]
    lease_seconds: float

    @property
    def delivery_id(self) -> str:
        return self.claim.delivery.delivery_id


def route_many(tx: Tx, items: list[RouteItem]) -> list[list[SendClaim] | JobFailed]:
    """Record every routing of the batch; per item, the sends leased to its owner now."""
    together = _in_savepoint(tx, items)
    if not isinstance(together, JobFailed):
        return list(together)
    if len(items) == 1:
        return [together]
    return [
        alone[0] if isinstance(alone := _in_savepoint(tx, [item]), list) else alone
        for item in items
    ]


def _in_savepoint(tx: Tx, items: list[RouteItem]) -> list[list[SendClaim]] | JobFailed:
    tx.execute("SAVEPOINT routes")
    try:
        results = _route(tx, items)
    except Exception as exc:
        if isinstance(exc, tx.dialect.unavailable) and connection_broken(tx.conn):
            raise  # the connection died: the batch as a whole has failed
        tx.execute("ROLLBACK TO SAVEPOINT routes")
        tx.execute("RELEASE SAVEPOINT routes")
        return JobFailed(exc)
    tx.execute("RELEASE SAVEPOINT routes")
    return results


def _chunks(rows: Sequence[Any], per_row: int, tx: Tx) -> Iterator[Sequence[Any]]:
    step = max(1, (tx.dialect.max_params - 10) // per_row)
    for start in range(0, len(rows), step):
        yield rows[start : start + step]


def stopped_now(tx: Tx) -> set[str]:
    """The sinks stopped now: nothing of theirs is leased, whether routed or claimed."""
    return {r[0] for r in tx.execute("SELECT sink FROM stopped_sinks")}


def _route(tx: Tx, items: list[RouteItem]) -> list[list[SendClaim]]:
    now = tx.now
    routed: set[str] = set()
    # A delivery routed with no send had every event dropped by the rules: listings show it.
    by_owner: dict[tuple[str, int], list[str]] = {}
    for item in items:
        by_owner.setdefault((item.owner, 0 if item.pairs else 1), []).append(item.delivery_id)
    for (owner, dropped), ids in by_owner.items():
        for chunk in _chunks(ids, 1, tx):
            routed.update(
                r[0]
                for r in tx.execute(
                    "UPDATE deliveries SET state = 'routed', dropped = ?, lease_owner = NULL,"
                    " lease_until = NULL, last_error = NULL, updated_at = ?"
                    f" WHERE {HELD_BY} AND id IN ({tx.marks(len(chunk))}) RETURNING id",
                    [dropped, now, owner, *chunk],
                ).fetchall()
            )
    # Our lease ran out on the others: someone else holds those deliveries now.
    mine = [item for item in items if item.delivery_id in routed]
    for attempts in _chunks(mine, 7, tx):
        record_attempts(tx, [(i.claim, i.owner, "routed", None) for i in attempts], now)
    events = [
        (event_id, item.delivery_id, position, body, *event_columns(event))
        for item in mine
        for event_id, (position, event, body) in item.events.items()
    ]
    for chunk in _chunks(events, 4 + len(EVENT_FIELDS), tx):
        tx.execute(
            f"INSERT INTO events ({EVENT_INSERT}) VALUES {','.join([EVENT_VALUES] * len(chunk))}"
            f" ON CONFLICT (id) DO UPDATE SET {_EVENT_UPDATE}",
            [v for row in chunk for v in row],
        )
    leased: dict[tuple[str, str, str], int] = {}
    if any(item.pairs for item in mine):
        stopped = stopped_now(tx)
        sends: list[tuple[Any, ...]] = []
        for item in mine:
            for event_id, sink in item.pairs:
                lease = sink in item.lease_now and sink not in stopped
                position = item.events[event_id][0]
                head = (item.delivery_id, position, event_id, sink, now, now)
                until = now + item.lease_seconds
                sends.append((*head, *((1, item.owner, until) if lease else (0, None, None))))
        for chunk in _chunks(sends, 9, tx):
            for r in tx.execute(
                "INSERT INTO sends (delivery_id, event_index, event_id, sink, next_attempt_at,"
                " updated_at, attempts, lease_owner, lease_until) VALUES"
                f" {','.join([_SEND_VALUES] * len(chunk))}"
                " ON CONFLICT DO NOTHING RETURNING id, delivery_id, event_id, sink, lease_owner",
                [v for row in chunk for v in row],
            ):
                if r[4] is not None:
                    leased[(r[1], r[2], r[3])] = r[0]
    return [_claims(item, leased, now) if item.delivery_id in routed else [] for item in items]


def _claims(
    item: RouteItem, leased: dict[tuple[str, str, str], int], now: float
) -> list[SendClaim]:
    delivery = item.claim.delivery
    return [
        SendClaim(
            send_id=leased[(delivery.delivery_id, event_id, sink)],
            delivery_id=delivery.delivery_id,
            route=delivery.route,
            event_id=event_id,
            event=item.events[event_id][1],
            sink=sink,
            attempt=1,
            claimed_at=now,
        )
        for event_id, sink in item.pairs
        if (delivery.delivery_id, event_id, sink) in leased
    ]
