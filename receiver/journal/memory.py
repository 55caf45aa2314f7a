"""An in-memory ``Journal`` with the same semantics as the SQLite one, for tests.

Nothing here is durable: use it for unit tests of the dispatcher, of sources and of sinks,
never to run a service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from handlers.event import RawDelivery
from receiver.errors import JournalUnavailable
from receiver.journal.base import (
    AppendResult,
    Claim,
    DeliveryInfo,
    DeliveryState,
    Outcome,
    OwnerCheck,
)

__all__ = ["MemoryJournal"]


@dataclass
class _Row:
    delivery: RawDelivery
    dedupe_key: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None


class MemoryJournal:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rows: dict[str, _Row] = {}
        self._keys: dict[str, str] = {}
        self.attempt_log: list[tuple[str, int, str]] = []
        self.broken = False
        """Set to make every call fail as a full disk would."""

    def _check(self) -> None:
        if self.broken:
            raise JournalUnavailable("the in-memory journal is set to fail")

    async def append(self, delivery: RawDelivery, dedupe_key: str) -> AppendResult:
        self._check()
        if dedupe_key in self._keys:
            return AppendResult(self._keys[dedupe_key], duplicate=True)
        self._keys[dedupe_key] = delivery.delivery_id
        self.rows[delivery.delivery_id] = _Row(delivery, dedupe_key, next_attempt_at=self.clock())
        return AppendResult(delivery.delivery_id, duplicate=False)

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        self._check()
        now = self.clock()
        due = sorted(
            (
                r
                for r in self.rows.values()
                if r.state is DeliveryState.PENDING
                and r.next_attempt_at <= now
                and (r.lease_owner is None or r.lease_until < now)
            ),
            key=lambda r: r.next_attempt_at,
        )[:limit]
        for row in due:
            row.lease_owner, row.lease_until = owner, now + lease_seconds
            row.attempts += 1
        return [Claim(r.delivery, r.attempts, now) for r in due]

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        self._check()
        delivery_id = claim.delivery.delivery_id
        row = self.rows[delivery_id]
        if row.lease_owner != owner:
            return
        row.lease_owner = None
        row.last_error = outcome.error
        self.attempt_log.append((delivery_id, row.attempts, outcome.kind))
        if outcome.kind == "delivered":
            row.state = DeliveryState.DONE
        elif outcome.kind == "retry":
            row.next_attempt_at = outcome.retry_at or self.clock()
        else:
            row.state = DeliveryState.DEAD

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        for delivery_id in delivery_ids:
            row = self.rows[delivery_id]
            if row.lease_owner == owner:
                row.lease_owner = None
                row.attempts -= 1

    async def release_stale(self, is_dead_owner: OwnerCheck) -> int:
        stale = [r for r in self.rows.values() if r.lease_owner and is_dead_owner(r.lease_owner)]
        for row in stale:
            row.lease_owner = None
        return len(stale)

    async def prune(self, done_before: float) -> int:
        cutoff = datetime.fromtimestamp(done_before, UTC)
        gone = [
            r
            for r in self.rows.values()
            if r.state is DeliveryState.DONE and r.delivery.received_at < cutoff
        ]
        for row in gone:
            del self.rows[row.delivery.delivery_id]
            del self._keys[row.dedupe_key]
        return len(gone)

    async def requeue(self, delivery_ids: Sequence[str] | None = None) -> int:
        count = 0
        for row in self.rows.values():
            wanted = delivery_ids is None or row.delivery.delivery_id in delivery_ids
            if wanted and row.state is DeliveryState.DEAD:
                row.state, row.attempts, row.last_error = DeliveryState.PENDING, 0, None
                row.next_attempt_at = self.clock()
                count += 1
        return count

    def _info(self, row: _Row) -> DeliveryInfo:
        pending = row.state is DeliveryState.PENDING
        return DeliveryInfo(
            delivery_id=row.delivery.delivery_id,
            route=row.delivery.route,
            source=row.delivery.source,
            state=row.state,
            attempts=row.attempts,
            received_at=row.delivery.received_at,
            next_attempt_at=datetime.fromtimestamp(row.next_attempt_at, UTC) if pending else None,
            last_error=row.last_error,
            size=len(row.delivery.body),
        )

    async def get(self, delivery_id: str) -> DeliveryInfo | None:
        row = self.rows.get(delivery_id)
        return None if row is None else self._info(row)

    async def get_raw(self, delivery_id: str) -> RawDelivery | None:
        row = self.rows.get(delivery_id)
        return None if row is None else row.delivery

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        rows = sorted(self.rows.values(), key=lambda r: r.delivery.delivery_id, reverse=True)
        return [self._info(r) for r in rows if state is None or r.state is state][:limit]

    async def counts(self) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        for row in self.rows.values():
            counts[row.state] += 1
        return counts

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        return None
