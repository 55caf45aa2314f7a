"""What the journal's contract tests build their cases from: deliveries, events, files, and a
look at rows no method returns (``rows``, ``execute``: through the journal's own transaction).

Time: no test waits for the clock.  A lease of ``-1`` seconds has lapsed as soon as it is
taken, a retry ``at=0`` is due at once and one ``at=FUTURE`` is not due for decades.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from handlers.event import Event, RawDelivery
from handlers.files import FileInfo
from receiver.ids import new_id
from receiver.journal import (
    Claim,
    DeliveryState,
    SendClaim,
    SqlJournal,
)
from receiver.journal.dialect import Tx

__all__ = [
    "FUTURE",
    "OLD",
    "accepted",
    "event",
    "execute",
    "file_info",
    "raw",
    "routed",
    "rows",
    "state_of",
]

FUTURE = 4e9
"""A retry time in 2096: not due during any test."""

OLD = datetime(2020, 1, 1, tzinfo=UTC)


def raw(
    body: bytes = b"{}", *, route: str = "r", received_at: datetime | None = None
) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route=route,
        source="smartdocumentor.text_document",
        received_at=received_at or datetime.now(UTC),
        content_type="application/json",
        headers={"user-agent": "test"},
        body=body,
    )


def event(delivery: RawDelivery, index: int = 0, **payload: Any) -> Event:
    """The ``index``-th event of ``delivery``, as a source would make it."""
    return Event(
        event_id=delivery.event_id(index),
        delivery_id=delivery.delivery_id,
        vendor="test",
        kind="document",
        route=delivery.route,
        received_at=delivery.received_at,
        task_id=f"task-{index}",
        payload={"index": index, **payload},
    )


def file_info(name: str, size: int = 3) -> FileInfo:
    digest = format(size, "x").rjust(64, "0")
    return FileInfo(size=size, sha256=digest, content_type="application/pdf", filename=name)


async def rows(journal: SqlJournal, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query, run in the journal's own transaction (either engine's placeholders)."""

    def work(tx: Tx) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in tx.execute(sql, params).fetchall()]

    found: list[tuple[Any, ...]] = await journal._write(work)
    return found


async def execute(journal: SqlJournal, sql: str, *params: Any) -> None:
    await journal._write(lambda tx: tx.execute(sql, params))


async def accepted(journal: SqlJournal, delivery: RawDelivery | None = None) -> Claim:
    """``delivery`` (a new one by default) appended and claimed by ``w``, on its own."""
    delivery = delivery or raw(new_id().encode())
    await journal.append(delivery, delivery.delivery_id)
    claims = await journal.claim("w", 1000, 60)
    others = [c.delivery.delivery_id for c in claims if c.delivery != delivery]
    await journal.release("w", others)
    [claim] = [c for c in claims if c.delivery == delivery]
    return claim


async def routed(
    journal: SqlJournal,
    sinks: Sequence[str],
    lease_now: Sequence[str] = (),
    *,
    received_at: datetime | None = None,
) -> tuple[RawDelivery, list[SendClaim]]:
    """A new delivery routed as one event to each of ``sinks``; the sends leased to ``w``."""
    d = raw(new_id().encode(), received_at=received_at)
    claim = await accepted(journal, d)
    e = event(d)
    sends = await journal.route(claim, "w", [(e, s) for s in sinks], set(lease_now), 60)
    return d, sorted(sends, key=lambda s: s.sink)


async def state_of(journal: SqlJournal, delivery_id: str) -> DeliveryState:
    info = await journal.get(delivery_id)
    assert info is not None, f"{delivery_id} is not in the journal"
    return info.state
