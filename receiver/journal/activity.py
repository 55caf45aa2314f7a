"""What the console's overview charts and lists: activity per interval and vendor batches,
written once over a ``Dialect``.

Each count is made by the database, so only one row per interval or batch comes back
(``bench/console_overview.py``: counting rows in Python took 1 to 2 s at 200,000 events).
Webhooks received are counted per interval on the deliveries' primary key, as id ranges (ids
begin with the millisecond of receipt, as the listing's time filter reads them); delivered
sends and failed attempts are grouped by their times, floored to the interval.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from receiver.journal.base import SendState
from receiver.journal.browse import _id_bound
from receiver.journal.dialect import Tx
from receiver.journal.rules import event_state
from receiver.journal.views import ActivityBucket, BatchRow

__all__ = ["Activity"]

FAILED_OUTCOMES = ("retry", "dead")
_RANGES_PER_STATEMENT = 250
"""SQLite allows 500 SELECTs in one compound statement."""

# The interval a time falls in: SQLite's CAST truncates (a floor for times after 1970),
# PostgreSQL's rounds, so it floors first.
_INTERVAL = {
    "sqlite": "CAST({column} / {seconds} AS INTEGER)",
    "postgres": "CAST(floor({column} / {seconds}) AS BIGINT)",
}


def _state_case() -> str:
    """An event's state from whether any send is pending (``p``, 1 or 0) and any is dead
    (``d``), made from ``event_state`` itself, as the listing's state filter is."""
    whens = [
        f"WHEN p = {int(pending)} AND d = {int(dead)} THEN '{event_state(pending, dead).value}'"
        for pending, dead in itertools.product((False, True), repeat=2)
    ]
    return f"CASE {' '.join(whens)} END"


class Activity:
    """Mixed into ``SqlJournal``."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def activity(self, since: datetime, bucket_seconds: int) -> list[ActivityBucket]:
        if bucket_seconds < 1:
            raise ValueError("bucket_seconds: 1 or more")
        seconds = int(bucket_seconds)
        start = since.timestamp()

        def work(tx: Tx) -> list[ActivityBucket]:
            first = int(start // seconds)
            last = int(tx.now // seconds)
            count = max(0, last - first) + 1
            counts = [[0, 0, 0] for _ in range(count)]
            # Bounds are ids this code makes (hex digits), written into the statement: one
            # range count per interval on the primary key, with no limit on parameters.
            bounds = [f"{max(0, (first + i) * seconds * 1000):012x}" for i in range(count + 1)]
            for begin in range(0, count, _RANGES_PER_STATEMENT):
                chunk = range(begin, min(count, begin + _RANGES_PER_STATEMENT))
                ranges = " UNION ALL ".join(
                    f"SELECT {i} AS i, (SELECT count(*) FROM deliveries"
                    f" WHERE id >= '{bounds[i]}' AND id < '{bounds[i + 1]}') AS n"
                    for i in chunk
                )
                for i, n in tx.execute(ranges):
                    counts[i][0] = n
            interval = _INTERVAL[tx.dialect.name]
            for column, sql, params in (
                (1, "SELECT {k}, count(*) FROM sends WHERE delivered_at >= ? GROUP BY 1", ()),
                (
                    2,
                    "SELECT {k}, count(*) FROM send_attempts WHERE finished_at >= ?"
                    f" AND outcome IN ({tx.marks(len(FAILED_OUTCOMES))}) GROUP BY 1",
                    FAILED_OUTCOMES,
                ),
            ):
                time_column = "delivered_at" if column == 1 else "finished_at"
                key = interval.format(column=time_column, seconds=seconds)
                for k, n in tx.execute(sql.format(k=key), (start, *params)):
                    if 0 <= k - first < count:
                        counts[k - first][column] += n
            return [
                ActivityBucket(
                    start=datetime.fromtimestamp((first + i) * seconds, UTC),
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
            # The newest batches first (no join: a scan of the window's events), then the
            # states of only their events, found through the batch_id index.
            newest = tx.execute(
                "SELECT batch_id, max(delivery_id) FROM events"
                " WHERE delivery_id >= ? AND batch_id IS NOT NULL"
                " GROUP BY batch_id ORDER BY 2 DESC LIMIT ?",
                (_id_bound(since), limit),
            ).fetchall()
            if not newest:
                return []
            ids = [batch_id for batch_id, _ in newest]
            # A join, not EXISTS per event: PostgreSQL hashed those subqueries over every
            # pending and dead send, twice each for the CASE (2 s at 200,000 events).
            per_event = (
                "SELECT e.batch_id, max(e.vendor) AS vendor,"
                " COALESCE(max(CASE WHEN s.state = 'pending' THEN 1 ELSE 0 END), 0) AS p,"
                " COALESCE(max(CASE WHEN s.state = 'dead' THEN 1 ELSE 0 END), 0) AS d"
                " FROM events e LEFT JOIN sends s ON s.event_id = e.id"
                f" WHERE e.batch_id IN ({tx.marks(len(ids))}) GROUP BY e.batch_id, e.id"
            )
            vendors: dict[str, str | None] = {}
            counts = {batch_id: dict.fromkeys(SendState, 0) for batch_id in ids}
            for batch_id, vendor, state, n in tx.execute(
                f"SELECT batch_id, max(vendor), {_state_case()}, count(*) FROM ({per_event}) x"
                f" GROUP BY batch_id, {_state_case()}",
                ids,
            ):
                vendors[batch_id] = vendors.get(batch_id) or vendor
                counts[batch_id][SendState(state)] = n
            return [
                BatchRow(
                    batch_id=batch_id,
                    vendor=vendors.get(batch_id),
                    last_received_at=datetime.fromtimestamp(int(last[:12], 16) / 1000, UTC),
                    events=counts[batch_id],
                )
                for batch_id, last in newest
            ]

        rows: list[BatchRow] = await self._read(work)
        return rows
