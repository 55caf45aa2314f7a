"""Sortable unique ids: 48 bits of milliseconds then 56 random bits, as 26 hex digits."""

from __future__ import annotations

import os
import random
import time

__all__ = ["new_id"]

# Ids are not secrets, so a seeded PRNG does: os.urandom would be a system call per request,
# and every system call on the event loop's thread lets other threads take the GIL.
_random = random.Random(os.urandom(16))


def new_id() -> str:
    """A 26-character id that sorts by creation time, so journal listings read in order."""
    return f"{time.time_ns() // 1_000_000:012x}{_random.getrandbits(56):014x}"
