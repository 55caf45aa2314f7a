"""A throwaway journal for tests: the SQLite journal on an in-memory database.

It is the same code as the real journal (the rules, the SQL, the group commit), so what a test
proves with it holds for the service; only durability is missing.  ``clock`` stands in for the
database's clock, so tests can move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from receiver.journal.sqlite import SqliteJournal

__all__ = ["MemoryJournal"]


class MemoryJournal(SqliteJournal):
    """Opened on creation; ``await close()`` when done (or let the process end)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(":memory:", clock=clock)
        self.open()
