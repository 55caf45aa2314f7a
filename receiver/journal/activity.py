"""What the console's overview charts and lists: activity per interval and vendor batches,
written once over a ``Dialect``.

The rows are counted into intervals here rather than by SQL: the two engines have no common
way to floor a time, and each query reads only its window (deliveries by id, which begins
with the millisecond of receipt; sends and attempts by their times).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.journal.base import SendState
from receiver.journal.browse import _DEAD, _PENDING, _id_bound
from receiver.journal.dialect import Tx
from receiver.journal.rules import event_state
from receiver.journal.views import ActivityBucket, BatchRow

__all__ = ["Activity"]

FAILED_OUTCOMES = ("retry", "dead")


class Activity:
    """Mixed into ``SqlJournal``."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def activity(self, since: datetime, bucket_seconds: int) -> list[ActivityBucket]:
        if bucket_seconds < 1:
            raise ValueError("bucket_seconds: 1 or more")
        start = since.timestamp()

        def work(tx: Tx) -> list[ActivityBucket]:
            first = int(start // bucket_seconds)
            last = int(tx.now // bucket_seconds)
            counts = [[0, 0, 0] for _ in range(max(0, last - first) + 1)]

            def add(moment: float, column: int) -> None:
                index = int(moment // bucket_seconds) - first
                if 0 <= index < len(counts):
                    counts[index][column] += 1

            for (delivery_id,) in tx.execute(
                "SELECT id FROM deliveries WHERE id >= ?", (_id_bound(since),)
            ):
                add(int(delivery_id[:12], 16) / 1000, 0)
            for (at,) in tx.execute(
                "SELECT delivered_at FROM sends WHERE delivered_at >= ?", (start,)
            ):
                add(at, 1)
            for (at,) in tx.execute(
                "SELECT finished_at FROM send_attempts WHERE finished_at >= ?"
                f" AND outcome IN ({tx.marks(len(FAILED_OUTCOMES))})",
                (start, *FAILED_OUTCOMES),
            ):
                add(at, 2)
            return [
                ActivityBucket(
                    start=datetime.fromtimestamp((first + i) * bucket_seconds, UTC),
                    received=r,
                    delivered=d,
                    failed=f,
                )
                for i, (r, d, f) in enumerate(counts)
            ]

        found: list[ActivityBucket] = await self._read(work)
        return found

    async def batches(self, since: datetime, limit: int = 50) -> list[BatchRow]:
        def work(tx: Tx) -> list[BatchRow]:
            found: dict[str, tuple[str | None, str, dict[SendState, int]]] = {}
            for batch_id, vendor, delivery_id, pending, dead in tx.execute(
                f"SELECT e.batch_id, e.vendor, e.delivery_id, {_PENDING}, {_DEAD} FROM events e"
                " WHERE e.delivery_id >= ? AND e.batch_id IS NOT NULL",
                (_id_bound(since),),
            ):
                vendor_was, newest, counts = found.setdefault(
                    batch_id, (vendor, delivery_id, dict.fromkeys(SendState, 0))
                )
                counts[event_state(bool(pending), bool(dead))] += 1
                if delivery_id > newest:
                    found[batch_id] = (vendor_was, delivery_id, counts)
            ordered = sorted(found.items(), key=lambda item: item[1][1], reverse=True)
            return [
                BatchRow(
                    batch_id=batch_id,
                    vendor=vendor,
                    last_received_at=datetime.fromtimestamp(int(newest[:12], 16) / 1000, UTC),
                    events=counts,
                )
                for batch_id, (vendor, newest, counts) in ordered[:limit]
            ]

        rows: list[BatchRow] = await self._read(work)
        return rows
