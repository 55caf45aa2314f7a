"""Ingest first, without starving exports: when exports pause for a busy ingest, and for how
long.

Exports run in the same process as ingest, on the same event loop and GIL, and cost ingest
throughput (bench/).  While ``busy_requests`` or more requests are at work, exports pause; but
a pause lasts ``busy_pause_seconds`` at most and is followed by as long a time in which they
run whatever ingest does.  A burst shorter than the pause is journaled and answered at full
speed and exported right after; a sustained rate keeps half the time for exports, so that
below what the process can do in all, exports keep up with what is accepted instead of falling
further behind for as long as the rate lasts.  Above what it can do, requests pile up
(``OVERLOAD`` times ``busy_requests`` at work): then ingest has the process to itself for as
long as that lasts, since a vendor times out on a slow answer while a backlog of exports waits
safely in the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["OVERLOAD", "IngestFirst"]

OVERLOAD = 4
"""Requests at work, in multiples of ``busy_requests``, at which ingest no longer shares."""


class IngestFirst:
    def __init__(self, pause_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause_seconds = pause_seconds
        self._clock = clock
        self._paused_since: float | None = None
        self._run_until = float("-inf")

    def delay(self, busy: bool, overloaded: bool = False) -> float:
        """Seconds exports should wait now (0: go), given whether ingest is busy, or so busy
        that requests pile up (then it has the process to itself, as long as that lasts)."""
        now = self._clock()
        if not busy and not overloaded:
            self._paused_since = None
            return 0.0
        if overloaded:
            self._run_until = float("-inf")
            if self._paused_since is None:
                self._paused_since = now
            return self.pause_seconds
        if now < self._run_until:
            return 0.0
        if self._paused_since is None:
            self._paused_since = now
        left = self._paused_since + self.pause_seconds - now
        if left > 0:
            return left
        # Paused long enough: exports run as long, busy or not.
        self._paused_since = None
        self._run_until = now + self.pause_seconds
        return 0.0
