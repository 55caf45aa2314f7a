"""Each poller's state between polls, and the subjects deliveries are about, in the journal.

A poller's row holds its saved state (JSON, whatever the poller keeps: a cursor, tasks waiting
out a grace period), when it last ran and last succeeded, its last error, its counts and when
it runs next.  It is written only by the process holding the poller's named lease, in the
same statement that checks it, so a process that lost the lease (paused, then taken over)
cannot write an older state over a newer one.  Times are on the database's clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.journal.dialect import Tx

__all__ = ["PollOutcome", "PollerState", "PollerStates", "PollerStatesAdmin"]

# Subjects asked about in one statement: far under both engines' bound-variable limits.
_SUBJECTS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class PollerState:
    name: str
    state: dict[str, Any] | None
    """What the poller saved after its last successful poll (None before the first)."""
    polls: int
    failures: int
    """Failed polls in a row (0 after a success): the backoff counts them."""
    found: int
    """New deliveries and events its polls have entered, in all."""
    calls: int
    last_run_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    next_run_at: datetime | None
    due_in: float
    """Seconds until the next run (negative: overdue), on the database's clock."""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll did, to be saved."""

    ok: bool
    state: Mapping[str, Any] | None
    """The new state (ignored when not ``ok``: the old one stays)."""
    found: int
    calls: int
    error: str | None
    next_in_seconds: float


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


_COLUMNS = (
    "name, state, polls, failures, found, calls, last_run_at, last_ok_at, last_error, next_run_at"
)


def _row(row: Any, now: float) -> PollerState:
    state = orjson.loads(row[1])
    return PollerState(
        name=row[0],
        state=state if isinstance(state, dict) else None,
        polls=row[2],
        failures=row[3],
        found=row[4],
        calls=row[5],
        last_run_at=_ts(row[6]),
        last_ok_at=_ts(row[7]),
        last_error=row[8],
        next_run_at=_ts(row[9]),
        due_in=row[9] - now,
    )


class PollerStates:
    """Mixed into ``SqlJournal``: what the poller runner reads and writes."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def poller_state(self, name: str) -> PollerState | None:
        def work(tx: Tx) -> PollerState | None:
            row = tx.execute(
                f"SELECT {_COLUMNS} FROM poller_state WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else _row(row, tx.now)

        found: PollerState | None = await self._read(work)
        return found

    async def save_poll(self, name: str, owner: str, outcome: PollOutcome) -> bool:
        """Record a poll's outcome if ``owner`` holds the lease named ``poller:<name>``."""

        def work(tx: Tx) -> bool:
            now = tx.now
            held = tx.execute(
                "SELECT 1 FROM named_leases WHERE name = ? AND owner = ?",
                (f"poller:{name}", owner),
            ).fetchone()
            if held is None:
                return False
            state = orjson.dumps(dict(outcome.state)) if outcome.ok and outcome.state else None
            ok = 1 if outcome.ok else 0
            tx.execute(
                "INSERT INTO poller_state (name, state, polls, failures, found, calls,"
                " last_run_at, last_ok_at, last_error, next_run_at, updated_at)"
                " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " state = COALESCE(?, poller_state.state), polls = poller_state.polls + 1,"
                " failures = CASE WHEN ? = 1 THEN 0 ELSE poller_state.failures + 1 END,"
                " found = poller_state.found + excluded.found,"
                " calls = poller_state.calls + excluded.calls,"
                " last_run_at = excluded.last_run_at,"
                " last_ok_at = COALESCE(excluded.last_ok_at, poller_state.last_ok_at),"
                " last_error = excluded.last_error, next_run_at = excluded.next_run_at,"
                " updated_at = excluded.updated_at",
                (
                    name,
                    (state or b"null").decode(),
                    1 - ok,
                    outcome.found,
                    outcome.calls,
                    now,
                    now if outcome.ok else None,
                    outcome.error,
                    now + outcome.next_in_seconds,
                    now,
                    None if state is None else state.decode(),
                    ok,
                ),
            )
            return True

        saved: bool = await self._write(work)
        return saved

    async def run_poller_now(self, name: str) -> None:
        """Make ``name`` due at once (``hookdock poll NAME`` on a running service)."""

        def work(tx: Tx) -> None:
            now = tx.now
            tx.execute(
                "INSERT INTO poller_state (name, state, next_run_at, updated_at)"
                " VALUES (?, 'null', ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
                (name, now, now),
            )

        await self._write(work, single_statement=True)

    async def known_subjects(self, subjects: Collection[str]) -> set[str]:
        """The ``subjects`` at least one journaled delivery has."""
        wanted = list(dict.fromkeys(subjects))

        def work(tx: Tx) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(wanted), _SUBJECTS_PER_QUERY):
                chunk = wanted[start : start + _SUBJECTS_PER_QUERY]
                found.update(
                    r[0]
                    for r in tx.execute(
                        "SELECT DISTINCT subject FROM deliveries"
                        f" WHERE subject IN ({tx.marks(len(chunk))})",
                        chunk,
                    )
                )
            return found

        if not wanted:
            return set()
        known: set[str] = await self._read(work)
        return known


class PollerStatesAdmin:
    """Mixed into ``SqlJournal``: what ``hookdock pollers`` shows."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def poller_states(self) -> list[PollerState]:
        def work(tx: Tx) -> list[PollerState]:
            now = tx.now
            return [
                _row(r, now)
                for r in tx.execute(f"SELECT {_COLUMNS} FROM poller_state ORDER BY name")
            ]

        found: list[PollerState] = await self._read(work)
        return found
