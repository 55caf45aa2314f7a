"""When to try a failed send again: a schedule (or exponential backoff), a cap, and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from receiver.config import DEFAULT_SCHEDULE, RetryConfig

__all__ = ["MAX_RETRY_AFTER_SECONDS", "RetryPolicy"]

MAX_RETRY_AFTER_SECONDS = 86_400.0
"""A destination's ``Retry-After`` is honoured up to a day; beyond that it is a typo or abuse."""

_EXPONENTIAL_CAP = 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    """Delays after failed attempt 1, 2, ...; the last repeats.  Unused with ``base_seconds``."""
    base_seconds: float | None = None
    """Exponential backoff instead: base, 2 x base, 4 x base, ..."""
    cap_seconds: float | None = None
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, config: RetryConfig, rng: random.Random | None = None) -> RetryPolicy:
        return cls(
            max_attempts=config.max_attempts,
            schedule=config.schedule or DEFAULT_SCHEDULE,
            base_seconds=config.base_seconds,
            cap_seconds=config.cap_seconds,
            jitter=config.jitter,
            rng=rng or random.Random(),
        )

    def full_delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (from 1), before jitter."""
        if self.base_seconds is not None:
            cap = self.cap_seconds or _EXPONENTIAL_CAP
            # min() on the exponent first: 2.0 ** 2000 would overflow.
            return min(cap, self.base_seconds * 2.0 ** min(attempt - 1, 64))
        delay = self.schedule[min(attempt, len(self.schedule)) - 1]
        return delay if self.cap_seconds is None else min(delay, self.cap_seconds)

    def delay(self, attempt: int, *, at_least: float | None = None) -> float | None:
        """Seconds to wait after failed attempt ``attempt``; None: out of attempts, give up.

        ``at_least`` is the destination's own ``Retry-After``: never come back sooner.
        """
        if attempt >= self.max_attempts:
            return None
        full = self.full_delay(attempt)
        # Keep (1 - jitter) of the delay fixed and draw the rest, so retries never bunch up
        # yet a delay never collapses to zero.
        delay = full * (1 - self.jitter) + full * self.jitter * self.rng.random()
        if at_least is not None:
            delay = max(delay, min(at_least, MAX_RETRY_AFTER_SECONDS))
        return delay

    def span(self) -> float:
        """Seconds from the first attempt to the last, without jitter: how long a sink may be
        down before its sends are dead-lettered."""
        return sum(self.full_delay(n) for n in range(1, self.max_attempts))
