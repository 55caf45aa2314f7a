"""The journal's bulk writes: one statement for a whole group-commit batch.

The two writes that happen once per request or per send (an append, a delivered send) are
collected over a batch and written with one multi-row statement each: on SQLite every
statement lets go of the GIL and must win it back from the busy event loop, on PostgreSQL
every statement is a round trip.
"""

from __future__ import annotations

import functools
from typing import Any

from receiver.journal.base import AppendResult, Claim, SendClaim
from receiver.journal.dialect import Tx
from receiver.journal.schema import HELD_BY

__all__ = ["append_many", "record_attempts", "record_send_attempts", "sent_many"]

# Eleven parameters a row: 2900 rows stay under SQLite's 32766 bound variables (and
# PostgreSQL's 65535), more than a batch holds, so a batch of appends is one statement.
_ROWS_PER_INSERT = 2900


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO deliveries (id, route, source, received_at, content_type, headers, body,"
        f" dedupe_key, subject, next_attempt_at, updated_at) VALUES {values}"
        " ON CONFLICT DO NOTHING"
    )


def append_many(tx: Tx, rows: list[tuple[Any, ...]]) -> list[AppendResult]:
    """Insert a batch's deliveries in one statement per 3000; duplicates keep the first id.

    The dedupe key is unique in the table, so two processes appending the same delivery at
    once make one row: the second insert waits for the first to commit, then does nothing,
    and both answer with the first id.
    """
    now = tx.now
    results: list[AppendResult] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        params = [value for row in chunk for value in (*row, now, now)]
        inserted = tx.execute(_insert_sql(len(chunk)), params).rowcount
        if inserted == len(chunk):
            results.extend(AppendResult(row[0], duplicate=False) for row in chunk)
            continue
        # Rare: some dedupe keys were known (or repeated within this very batch).
        ids = [row[0] for row in chunk]
        new = {
            r[0]
            for r in tx.execute(
                f"SELECT id FROM deliveries WHERE id IN ({tx.marks(len(ids))})", ids
            )
        }
        for row in chunk:
            if row[0] in new:
                results.append(AppendResult(row[0], duplicate=False))
            else:
                first = tx.execute(
                    "SELECT id FROM deliveries WHERE dedupe_key = ?", (row[7],)
                ).fetchone()
                results.append(AppendResult(first[0], duplicate=True))
    return results


_UPSERT_ATTEMPT = (
    " ON CONFLICT ({key}, attempt) DO UPDATE SET owner = excluded.owner,"
    " started_at = excluded.started_at, finished_at = excluded.finished_at,"
    " outcome = excluded.outcome, error = excluded.error"
)


def record_attempts(tx: Tx, attempts: list[tuple[Claim, str, str, str | None]], now: float) -> None:
    """Routing attempts: (claim, owner, outcome, error) each."""
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(attempts))
    tx.execute(
        "INSERT INTO attempts (delivery_id, attempt, owner, started_at, finished_at,"
        f" outcome, error) VALUES {values}" + _UPSERT_ATTEMPT.format(key="delivery_id"),
        [
            v
            for c, owner, kind, error in attempts
            for v in (c.delivery.delivery_id, c.attempt, owner, c.claimed_at, now, kind, error)
        ],
    )


def record_send_attempts(
    tx: Tx, attempts: list[tuple[SendClaim, str, str, str | None]], now: float
) -> None:
    """Send attempts: (claim, owner, outcome, error) each, 1000 rows a statement."""
    for start in range(0, len(attempts), 1000):
        chunk = attempts[start : start + 1000]
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        tx.execute(
            "INSERT INTO send_attempts (send_id, attempt, owner, started_at,"
            f" finished_at, outcome, error) VALUES {values}"
            + _UPSERT_ATTEMPT.format(key="send_id"),
            [
                v
                for claim, owner, kind, error in chunk
                for v in (claim.send_id, claim.attempt, owner, claim.claimed_at, now, kind, error)
            ],
        )


def sent_many(tx: Tx, items: list[tuple[SendClaim, str]]) -> list[None]:
    """Mark a batch's delivered sends: one UPDATE per owner and 3000, then their attempts."""
    now = tx.now
    by_owner: dict[str, list[int]] = {}
    for claim, owner in items:
        by_owner.setdefault(owner, []).append(claim.send_id)
    for owner, ids in by_owner.items():
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start : start + _ROWS_PER_INSERT]
            tx.execute(
                "UPDATE sends SET state = 'delivered', delivered_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = NULL, code = NULL, updated_at = ?"
                f" WHERE {HELD_BY} AND id IN ({tx.marks(len(chunk))})",
                [now, now, owner, *chunk],
            )
    record_send_attempts(tx, [(c, o, "delivered", None) for c, o in items], now)
    return [None] * len(items)
