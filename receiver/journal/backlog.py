"""How far behind each sink is: what it still has to deliver, and how long deliveries took.

Two reads, cheap on a journal of millions of sends: the pending sends per sink go by the
partial index of pending sends, the recent deliveries by the sends' primary key, newest first.
``SinkBacklog`` and ``lag_figures`` are what ``hookdock status`` and ``/metrics`` both show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from receiver.journal.dialect import Tx

__all__ = ["Backlog", "LagFigures", "SinkBacklog", "lag_figures", "sink_figures"]


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """A sink's sends still to deliver."""

    pending: int
    due: int
    """Of those, due now: waiting for a slot, not for a retry time or a stopped sink."""
    oldest_received_at: datetime | None
    """When the delivery of its oldest pending send was received."""

    def oldest_seconds(self, now: datetime) -> float:
        """How long its oldest pending send has waited since receipt (0 with none)."""
        if self.oldest_received_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_received_at).total_seconds())


@dataclass(frozen=True, slots=True)
class LagFigures:
    """Receipt to delivery over a sink's most recently delivered sends, in seconds."""

    count: int
    p50: float
    p99: float
    max: float


def lag_figures(lags: Sequence[float]) -> LagFigures | None:
    """Nearest-rank p50, p99 and max of ``lags``; None without any."""
    if not lags:
        return None
    ordered = sorted(lags)

    def rank(p: int) -> float:
        return ordered[max(0, min(len(ordered), math.ceil(len(ordered) * p / 100)) - 1)]

    return LagFigures(len(ordered), rank(50), rank(99), ordered[-1])


def sink_figures(
    backlog: dict[str, SinkBacklog], lags: dict[str, list[float]], now: datetime | None = None
) -> Callable[[str], dict[str, Any]]:
    """A sink's ``backlog`` and ``receipt_to_delivery`` as ``hookdock status`` shows them."""
    now = now or datetime.now(UTC)

    def figures(sink: str) -> dict[str, Any]:
        waiting = backlog.get(sink, SinkBacklog(0, 0, None))
        lag = lag_figures(lags.get(sink, []))
        return {
            "backlog": {
                "pending": waiting.pending,
                "due": waiting.due,
                "oldest_seconds": round(waiting.oldest_seconds(now), 3),
            },
            "receipt_to_delivery": None
            if lag is None
            else {
                "last": lag.count,
                "p50_seconds": round(lag.p50, 3),
                "p99_seconds": round(lag.p99, 3),
                "max_seconds": round(lag.max, 3),
            },
        }

    return figures


class Backlog:
    """Mixed into ``SqlJournal``."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def sink_backlog(self) -> dict[str, SinkBacklog]:
        """Every sink with pending sends, and how many there are, due, and since when."""

        def work(tx: Tx) -> dict[str, SinkBacklog]:
            # received_at is ISO 8601 in UTC as the journal writes it: its text sorts by time.
            rows = tx.execute(
                "SELECT s.sink, count(*),"
                " sum(CASE WHEN s.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM"
                " stopped_sinks t WHERE t.sink = s.sink) THEN 1 ELSE 0 END), min(d.received_at)"
                " FROM sends s JOIN deliveries d ON d.id = s.delivery_id"
                " WHERE s.state = 'pending' GROUP BY s.sink",
                (tx.now,),
            )
            return {
                sink: SinkBacklog(
                    int(pending), int(due or 0), None if oldest is None else _utc(oldest)
                )
                for sink, pending, due, oldest in rows
            }

        backlog: dict[str, SinkBacklog] = await self._read(work)
        return backlog

    async def recent_lags(self, limit: int = 1000) -> dict[str, list[float]]:
        """Seconds from receipt to delivery of the last ``limit`` sends delivered, per sink."""

        def work(tx: Tx) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {}
            for sink, delivered_at, received_at in tx.execute(
                "SELECT s.sink, s.delivered_at, d.received_at FROM sends s"
                " JOIN deliveries d ON d.id = s.delivery_id WHERE s.state = 'delivered'"
                " ORDER BY s.id DESC LIMIT ?",
                (limit,),
            ):
                lag = delivered_at - _utc(received_at).timestamp()
                out.setdefault(sink, []).append(max(0.0, lag))
            return out

        lags: dict[str, list[float]] = await self._read(work)
        return lags


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
