"""When to try a failed delivery again: exponential backoff with a cap and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from receiver.config import RetryConfig

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    cap_seconds: float
    jitter: float
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, config: RetryConfig, rng: random.Random | None = None) -> RetryPolicy:
        return cls(
            config.max_attempts,
            config.base_seconds,
            config.cap_seconds,
            config.jitter,
            rng or random.Random(),
        )

    def delay(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (from 1); None: give up."""
        if attempt >= self.max_attempts:
            return None
        full = min(self.cap_seconds, self.base_seconds * 2.0 ** (attempt - 1))
        # Keep (1 - jitter) of the delay fixed and draw the rest, so retries never bunch up
        # yet a delay never collapses to zero.
        return full * (1 - self.jitter) + full * self.jitter * self.rng.random()
