"""An in-memory ``Journal`` with the same semantics as the SQLite one, for tests.

Nothing here is durable: use it for unit tests of the dispatcher, of sources and of sinks,
never to run a service.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from handlers.event import RawDelivery
from handlers.files import FileInfo
from receiver.errors import JournalUnavailable
from receiver.journal.base import (
    AppendResult,
    Claim,
    DeliveryInfo,
    DeliveryState,
    Outcome,
    OwnerCheck,
    SendClaim,
    SendInfo,
    SendState,
    StoppedSink,
)

__all__ = ["MemoryJournal"]


@dataclass
class _Row:
    delivery: RawDelivery
    dedupe_key: str
    state: str = "pending"
    """``pending`` (not routed yet), ``routed`` or ``dead``."""
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None


@dataclass
class _Send:
    send_id: int
    delivery_id: str
    event_index: int
    sink: str
    state: SendState = SendState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None
    delivered_at: float | None = None
    updated_at: float = 0.0
    code: str | None = None
    files: dict[str, FileInfo] = field(default_factory=dict)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class MemoryJournal:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rows: dict[str, _Row] = {}
        self.send_rows: dict[int, _Send] = {}
        self.stopped: dict[str, StoppedSink] = {}
        self._keys: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.attempt_log: list[tuple[str, int, str]] = []
        """(delivery id, or ``delivery id/event index/sink`` for a send; attempt; outcome)."""
        self.broken = False
        """Set to make every call fail as a full disk would."""

    def _check(self) -> None:
        if self.broken:
            raise JournalUnavailable("the in-memory journal is set to fail")

    # ------------------------------------------------------------------ deliveries

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
                if r.state == "pending"
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
        if outcome.kind not in ("retry", "dead"):
            raise ValueError(f"a delivery is routed, never {outcome.kind!r}: use route()")
        self._check()
        row = self.rows[claim.delivery.delivery_id]
        if row.lease_owner != owner:
            return
        row.lease_owner = None
        row.last_error = outcome.error
        self.attempt_log.append((claim.delivery.delivery_id, row.attempts, outcome.kind))
        if outcome.kind == "retry":
            row.next_attempt_at = outcome.retry_at or self.clock()
        else:
            row.state = "dead"

    async def route(
        self,
        claim: Claim,
        owner: str,
        sends: Sequence[tuple[int, str]],
        lease_now: Collection[str],
        lease_seconds: float,
    ) -> list[SendClaim]:
        self._check()
        row = self.rows[claim.delivery.delivery_id]
        if row.lease_owner != owner:
            return []
        now = self.clock()
        row.state, row.lease_owner, row.last_error = "routed", None, None
        self.attempt_log.append((claim.delivery.delivery_id, row.attempts, "routed"))
        existing = {(s.delivery_id, s.event_index, s.sink) for s in self.send_rows.values()}
        claims: list[SendClaim] = []
        for index, sink in sends:
            if (row.delivery.delivery_id, index, sink) in existing:
                continue
            existing.add((row.delivery.delivery_id, index, sink))
            send = _Send(next(self._ids), row.delivery.delivery_id, index, sink)
            send.next_attempt_at = send.updated_at = now
            self.send_rows[send.send_id] = send
            if sink in lease_now and sink not in self.stopped:
                send.lease_owner, send.lease_until, send.attempts = owner, now + lease_seconds, 1
                claims.append(SendClaim(send.send_id, row.delivery, index, sink, 1, now))
        return claims

    # ------------------------------------------------------------------ sends

    async def claim_sends(
        self, owner: str, limits: Mapping[str, int], lease_seconds: float
    ) -> list[SendClaim]:
        self._check()
        now = self.clock()
        claims: list[SendClaim] = []
        for sink, limit in limits.items():
            if limit <= 0 or sink in self.stopped:
                continue
            due = sorted(
                (
                    s
                    for s in self.send_rows.values()
                    if s.sink == sink
                    and s.state is SendState.PENDING
                    and s.next_attempt_at <= now
                    and (s.lease_owner is None or s.lease_until < now)
                ),
                key=lambda s: s.next_attempt_at,
            )[:limit]
            for send in due:
                send.lease_owner, send.lease_until = owner, now + lease_seconds
                send.attempts += 1
                delivery = self.rows[send.delivery_id].delivery
                # A copy: like a row read from SQLite, a claim does not change after the fact.
                files = dict(send.files)
                claims.append(
                    SendClaim(
                        send.send_id, delivery, send.event_index, sink, send.attempts, now, files
                    )
                )
        return sorted(claims, key=lambda c: c.send_id)

    async def finish_send(self, claim: SendClaim, owner: str, outcome: Outcome) -> None:
        self._check()
        send = self.send_rows.get(claim.send_id)
        if send is None or send.lease_owner != owner:
            return
        now = self.clock()
        send.lease_owner, send.last_error, send.updated_at = None, outcome.error, now
        send.code = outcome.code
        key = f"{send.delivery_id}/{send.event_index}/{send.sink}"
        self.attempt_log.append((key, send.attempts, outcome.kind))
        if outcome.kind == "delivered":
            send.state, send.delivered_at, send.code = SendState.DELIVERED, now, None
        elif outcome.kind == "retry":
            send.next_attempt_at = outcome.retry_at or now
        elif outcome.kind == "gone":
            send.next_attempt_at = now
            await self.stop_sink(send.sink, outcome.error or "stopped")
        else:
            send.state = SendState.DEAD

    async def record_file(self, claim: SendClaim, owner: str, role: str, info: FileInfo) -> bool:
        self._check()
        send = self.send_rows.get(claim.send_id)
        if send is None or send.lease_owner != owner:
            return False
        send.files[role] = info
        return True

    async def renew_sends(self, owner: str, send_ids: Sequence[int], lease_seconds: float) -> int:
        self._check()
        until = self.clock() + lease_seconds
        renewed = 0
        for send_id in set(send_ids):
            send = self.send_rows.get(send_id)
            if send is not None and send.lease_owner == owner:
                send.lease_until = until
                renewed += 1
        return renewed

    # ------------------------------------------------------------------ leases

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        for delivery_id in delivery_ids:
            row = self.rows[delivery_id]
            if row.lease_owner == owner:
                row.lease_owner = None
                row.attempts -= 1

    async def release_sends(self, owner: str, send_ids: Sequence[int]) -> None:
        for send_id in send_ids:
            send = self.send_rows[send_id]
            if send.lease_owner == owner:
                send.lease_owner = None
                send.attempts -= 1

    async def release_stale(self, is_dead_owner: OwnerCheck) -> int:
        items: list[_Row | _Send] = [*self.rows.values(), *self.send_rows.values()]
        stale = [i for i in items if i.lease_owner and is_dead_owner(i.lease_owner)]
        for item in stale:
            item.lease_owner = None
        return len(stale)

    # ------------------------------------------------------------------ operator actions

    def _sends_of(self, delivery_id: str) -> list[_Send]:
        return [s for s in self.send_rows.values() if s.delivery_id == delivery_id]

    def _overall(self, row: _Row) -> DeliveryState:
        states = {s.state for s in self._sends_of(row.delivery.delivery_id)}
        if row.state == "pending" or SendState.PENDING in states:
            return DeliveryState.PENDING
        if row.state == "dead" or SendState.DEAD in states:
            return DeliveryState.DEAD
        return DeliveryState.DONE

    async def prune(self, done_before: float) -> int:
        cutoff = datetime.fromtimestamp(done_before, UTC)
        gone = [
            r
            for r in self.rows.values()
            if self._overall(r) is DeliveryState.DONE and r.delivery.received_at < cutoff
        ]
        for row in gone:
            for send in self._sends_of(row.delivery.delivery_id):
                del self.send_rows[send.send_id]
            del self.rows[row.delivery.delivery_id]
            del self._keys[row.dedupe_key]
        return len(gone)

    async def requeue(
        self, delivery_ids: Sequence[str] | None = None, *, sink: str | None = None
    ) -> int:
        now = self.clock()
        touched: set[str] = set()
        for send in self.send_rows.values():
            wanted = delivery_ids is None or send.delivery_id in delivery_ids
            if wanted and send.state is SendState.DEAD and sink in (None, send.sink):
                send.state, send.attempts, send.last_error = SendState.PENDING, 0, None
                send.code = None
                send.next_attempt_at = now
                touched.add(send.delivery_id)
        for row in self.rows.values():
            wanted = delivery_ids is None or row.delivery.delivery_id in delivery_ids
            if sink is None and wanted and row.state == "dead":
                row.state, row.attempts, row.last_error = "pending", 0, None
                row.next_attempt_at = now
                touched.add(row.delivery.delivery_id)
        return len(touched)

    async def stop_sink(self, sink: str, reason: str) -> None:
        self.stopped.setdefault(sink, StoppedSink(sink, datetime.now(UTC), reason))

    async def resume_sink(self, sink: str) -> bool:
        return self.stopped.pop(sink, None) is not None

    # ------------------------------------------------------------------ reading

    async def stopped_sinks(self) -> list[StoppedSink]:
        return [self.stopped[name] for name in sorted(self.stopped)]

    async def sends(self, delivery_id: str) -> list[SendInfo]:
        return [
            SendInfo(
                send_id=s.send_id,
                delivery_id=s.delivery_id,
                event_id=f"{s.delivery_id}-{s.event_index}",
                sink=s.sink,
                state=s.state,
                attempts=s.attempts,
                next_attempt_at=_ts(s.next_attempt_at) if s.state is SendState.PENDING else None,
                last_error=s.last_error,
                delivered_at=_ts(s.delivered_at),
                code=s.code,
                files=dict(s.files),
            )
            for s in sorted(self._sends_of(delivery_id), key=lambda s: (s.event_index, s.sink))
        ]

    async def sink_counts(self) -> dict[str, dict[SendState, int]]:
        out: dict[str, dict[SendState, int]] = {}
        for send in self.send_rows.values():
            out.setdefault(send.sink, dict.fromkeys(SendState, 0))[send.state] += 1
        return out

    async def dead_codes(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for send in self.send_rows.values():
            if send.state is SendState.DEAD and send.code is not None:
                codes[send.code] = codes.get(send.code, 0) + 1
        return dict(sorted(codes.items()))

    def _info(self, row: _Row) -> DeliveryInfo:
        sends = self._sends_of(row.delivery.delivery_id)
        state = self._overall(row)
        pending = [s.next_attempt_at for s in sends if s.state is SendState.PENDING]
        next_at = row.next_attempt_at if row.state == "pending" else min(pending, default=None)
        errors = sorted(
            (s for s in sends if s.last_error),
            key=lambda s: (s.state is SendState.PENDING, -s.updated_at),
        )
        error = row.last_error or (
            f"sink {errors[0].sink}: {errors[0].last_error}" if errors else None
        )
        return DeliveryInfo(
            delivery_id=row.delivery.delivery_id,
            route=row.delivery.route,
            source=row.delivery.source,
            state=state,
            attempts=max((s.attempts for s in sends), default=row.attempts),
            received_at=row.delivery.received_at,
            next_attempt_at=_ts(next_at) if state is DeliveryState.PENDING else None,
            last_error=error,
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
        infos = (self._info(r) for r in rows)
        return [i for i in infos if state is None or i.state is state][:limit]

    async def counts(self) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        for row in self.rows.values():
            counts[self._overall(row)] += 1
        return counts

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        return None
