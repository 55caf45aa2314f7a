"""What every journal backend offers: durable appends, leased claims, outcomes, listings.

The journal is the unit of durability.  ``append`` returns only once the delivery is on disk
(the ingest endpoint answers 2xx after it); the dispatcher then ``claim``s pending deliveries
under a lease, so several workers (or processes, with a shared backend) never hold the same
delivery at once, and a crashed worker's lease simply runs out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from handlers.event import RawDelivery

__all__ = [
    "AppendResult",
    "Claim",
    "DeliveryInfo",
    "DeliveryState",
    "Journal",
    "Outcome",
    "OwnerCheck",
]


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    """Waiting for (or under) a dispatcher attempt."""
    DONE = "done"
    """Every sink of its route took every event."""
    DEAD = "dead"
    """Gave up: out of attempts or a permanent failure.  Raw bytes kept; can be requeued."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    delivery_id: str
    duplicate: bool
    """True when a delivery with the same dedupe key was already journaled; nothing new stored."""


@dataclass(frozen=True, slots=True)
class Claim:
    delivery: RawDelivery
    attempt: int
    """1 for the first attempt; counted at claim so a delivery that crashes its worker runs out."""
    claimed_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: ``delivered``, ``retry`` (at ``retry_at``, epoch s) or ``dead``."""

    kind: str
    error: str | None = None
    retry_at: float | None = None

    @classmethod
    def delivered(cls) -> Outcome:
        return cls("delivered")

    @classmethod
    def retry(cls, error: str, at: float) -> Outcome:
        return cls("retry", error, at)

    @classmethod
    def dead(cls, error: str) -> Outcome:
        return cls("dead", error)


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    delivery_id: str
    route: str
    source: str
    state: DeliveryState
    attempts: int
    received_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    size: int


class OwnerCheck(Protocol):
    def __call__(self, owner: str) -> bool: ...


class Journal(Protocol):
    async def append(self, delivery: RawDelivery, dedupe_key: str) -> AppendResult:
        """Store ``delivery`` durably (fsync'd) unless ``dedupe_key`` is already stored."""
        ...

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Lease up to ``limit`` pending deliveries that are due, oldest first."""
        ...

    async def finish(self, claim: Claim, owner: str, outcome: Outcome) -> None:
        """Record the outcome of ``owner``'s attempt and end its lease (if still held)."""
        ...

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        """Give leases back unattempted (shutdown): the attempt does not count."""
        ...

    async def release_stale(self, is_dead_owner: OwnerCheck) -> int:
        """End the leases of owners ``is_dead_owner`` says are gone (a crashed process)."""
        ...

    async def prune(self, done_before: float) -> int:
        """Delete delivered deliveries (and their attempts) received before ``done_before``.

        Their dedupe keys go with them: an identical resend after that is a new delivery.
        """
        ...

    async def requeue(self, delivery_ids: Sequence[str] | None = None) -> int:
        """Make dead deliveries pending again with fresh attempts (all dead ones when None)."""
        ...

    async def get(self, delivery_id: str) -> DeliveryInfo | None: ...

    async def get_raw(self, delivery_id: str) -> RawDelivery | None: ...

    async def list(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryInfo]:
        """Most recent first."""
        ...

    async def counts(self) -> dict[DeliveryState, int]: ...

    async def ping(self) -> None:
        """Raise ``JournalUnavailable`` unless a write can be made durable right now."""
        ...

    async def close(self) -> None: ...
