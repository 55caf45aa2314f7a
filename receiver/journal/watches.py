"""What pollers were asked to follow: ``hookdock documill submit`` adds a batch, the poller
reads the open ones each poll and closes each once it has seen it end.

A watch is keyed by (poller, key): adding the same key again is nothing new, so a command run
twice (or a submit whose answer is recorded again) watches once.  Closing is idempotent and
needs no lease: the poller closes a key only after what it found about it is in the journal.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.journal.dialect import Tx

__all__ = ["Watch", "Watches"]

_KEYS_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class Watch:
    key: str
    detail: dict[str, Any]
    added_at: datetime


class Watches:
    """Mixed into ``SqlJournal``."""

    async def _write(self, fn: Any, *, single_statement: bool = False) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def add_watch(self, poller: str, key: str, detail: Mapping[str, Any]) -> bool:
        """Ask ``poller`` to follow ``key``; False when it was asked already."""
        body = orjson.dumps(dict(detail)).decode()

        def work(tx: Tx) -> bool:
            cursor = tx.execute(
                "INSERT INTO watches (poller, key, detail, added_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (poller, key) DO NOTHING",
                (poller, key, body, tx.now),
            )
            return bool(cursor.rowcount)

        added: bool = await self._write(work, single_statement=True)
        return added

    async def open_watches(self, poller: str, limit: int = 1000) -> list[Watch]:
        """The oldest ``limit`` keys ``poller`` follows and has not closed."""

        def work(tx: Tx) -> list[Watch]:
            rows = tx.execute(
                "SELECT key, detail, added_at FROM watches WHERE poller = ?"
                " AND closed_at IS NULL ORDER BY added_at, key LIMIT ?",
                (poller, limit),
            )
            return [
                Watch(r[0], orjson.loads(r[1]), datetime.fromtimestamp(r[2], UTC)) for r in rows
            ]

        found: list[Watch] = await self._read(work)
        return found

    async def close_watches(self, poller: str, keys: Collection[str]) -> None:
        wanted = list(dict.fromkeys(keys))

        def work(tx: Tx) -> None:
            for start in range(0, len(wanted), _KEYS_PER_STATEMENT):
                chunk = wanted[start : start + _KEYS_PER_STATEMENT]
                tx.execute(
                    f"UPDATE watches SET closed_at = ? WHERE poller = ? AND key IN"
                    f" ({tx.marks(len(chunk))}) AND closed_at IS NULL",
                    (tx.now, poller, *chunk),
                )

        if wanted:
            await self._write(work)
