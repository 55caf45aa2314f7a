"""What differs between SQLite and PostgreSQL, and nothing else.

The journal's SQL is written once, with ``?`` placeholders, in the dialect both engines share
(``INSERT ... ON CONFLICT``, ``UPDATE ... RETURNING``, partial indexes).  A ``Dialect`` holds the
rest: the placeholder style, how a claim locks its rows (PostgreSQL's ``FOR UPDATE SKIP
LOCKED``; SQLite has one writer at a time and needs nothing), how a write transaction begins,
whether a failed statement spoils its transaction, column types for the schema, and which
driver errors mean "the database is unavailable, try again".

``Tx`` is what journal code runs against: a connection, its dialect, and the database's clock
for the current batch.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Cursor", "DatabaseClock", "Dialect", "Tx"]


class Cursor(Protocol):
    rowcount: int

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Any: ...


_PLACEHOLDER = re.compile(r"\?")


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    placeholder: str
    """``?`` (sqlite3) or ``$`` for PostgreSQL's own numbered ``$1, $2...``: psycopg's
    ``RawCursor`` sends those as they are, where ``%s`` would be parsed in Python at every
    execute of a long multi-row statement (bench/pg_driver.py: 2.5x the client CPU a row)."""
    skip_locked: str
    """Appended to a claim's inner SELECT so concurrent claimers never wait on each other."""
    begin: str
    """The statement that begins a write transaction."""
    statement_rollback: bool
    """True when a failed statement undoes itself and leaves its transaction usable (SQLite);
    PostgreSQL aborts the whole transaction, so every job there needs a savepoint."""
    max_params: int
    """Bound parameters one statement may carry."""
    types: dict[str, str]
    """Column types by role, for the schema: ``blob``, ``real``, ``serial``."""
    unavailable: tuple[type[BaseException], ...]
    """Driver errors that mean "not now": the write is refused with ``JournalUnavailable``."""
    ordered_join: str = "JOIN"
    """A join whose left side the planner must read first: SQLite's ``CROSS JOIN`` (its one
    hint); PostgreSQL plans by its statistics and has no such join with ``ON``."""
    now_sql: str | None = None
    """A query for the database's clock (epoch seconds); None: the process clock is it."""
    text_first: bool = False
    """Free text has an index of its own (PostgreSQL's trigram index): a listing past its
    first window finds the matches through it first, then orders them, rather than reading
    events in order (the planner, taking matches for evenly spread, reads in order, and
    a text whose matches lie far down costs it a scan of most events)."""

    def sql(self, text: str) -> str:
        return _convert(self.placeholder, text)


@functools.lru_cache(maxsize=4096)
def _convert(placeholder: str, text: str) -> str:
    if placeholder == "?":
        return text
    # No statement of the journal has a literal ? of its own.
    numbers = iter(range(1, 1 << 20))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", text)


class Tx:
    """A connection in use by one batch (or one read), in the dialect's terms."""

    __slots__ = ("_clock", "_now", "conn", "dialect")

    def __init__(self, conn: Any, dialect: Dialect, clock: Callable[[], float]) -> None:
        self.conn = conn
        self.dialect = dialect
        self._clock = clock
        self._now: float | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self.conn.execute(self.dialect.sql(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect.placeholder == "?":
            self.conn.executemany(sql, rows)
        else:
            with self.conn.cursor() as cursor:
                cursor.executemany(self.dialect.sql(sql), rows)

    def marks(self, n: int) -> str:
        """``?,?,...``: ``n`` placeholders for an ``IN (...)``."""
        return ",".join("?" * n)

    @property
    def now(self) -> float:
        """The database's clock (``DatabaseClock``), one reading per batch: leases and due
        times are compared on it, so replicas whose clocks disagree agree on who holds what."""
        if self._now is None:
            self._now = self._clock()
        return self._now

    def new_batch(self) -> None:
        self._now = None


class DatabaseClock:
    """A database server's clock, kept as its offset from this process's.

    Read from the server every ``refresh_seconds`` (a query), so a batch pays no round trip for
    it; between readings the offset holds, which is all a lease of seconds needs.
    """

    def __init__(self, now_sql: str, refresh_seconds: float = 30.0) -> None:
        self._sql = now_sql
        self._refresh = refresh_seconds
        self._next = 0.0
        self.offset = 0.0

    def sync(self, conn: Any) -> None:
        """Read the server's clock on ``conn`` if the last reading is older than the refresh."""
        if time.monotonic() < self._next:
            return
        before = time.time()
        server = float(conn.execute(self._sql).fetchone()[0])
        # The server read its clock about halfway through the round trip.
        self.offset = server - (before + time.time()) / 2
        self._next = time.monotonic() + self._refresh

    def now(self) -> float:
        return time.time() + self.offset
