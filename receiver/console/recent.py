"""The overview's costliest answers kept for a few seconds, shared by every open console.

Each open overview asks for the same counts over a whole window of the journal at each
refresh; within ``seconds`` of one answer, the others get it too (``bench/console_overview.py``
measures what one answer costs).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["Recent"]

T = TypeVar("T")


class Recent:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._kept: dict[Hashable, tuple[float, Any]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """The answer kept for ``key`` if it is recent enough, else ``make()``'s (kept)."""
        now = self.clock()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            value: T = kept[1]
            return value
        made = await make()
        self._kept[key] = (now + self.seconds, made)
        return made
