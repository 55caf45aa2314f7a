"""``hookdock journal copy --to DSN``: move a SQLite journal into an empty PostgreSQL one.

Every table, row for row, in one PostgreSQL transaction (``COPY``), after both sides are at the
current schema version; the send and action ids' sequences continue after the last one copied.  The
target must hold no deliveries, so a copy never merges two journals.  Stop ``hookdock serve``
and every worker on the SQLite file first: what they accept meanwhile would not be copied.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.journal.errors import JournalError
from receiver.journal.postgres import PostgresJournal
from receiver.journal.schema import TABLES
from receiver.journal.sqlite import SqliteJournal

__all__ = ["copy_journal"]

_CHUNK = 2000


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def copy_journal(source: SqliteJournal, target: PostgresJournal) -> dict[str, int]:
    """Copy every row of ``source`` into ``target``; rows copied per table.  Neither needs to
    be opened: each is connected (and migrated) here, and closed again."""
    src = source._connect()
    dst: Any = None
    try:
        dst = target._connect()
        if dst.execute("SELECT 1 FROM deliveries LIMIT 1").fetchone() is not None:
            raise JournalError(
                f"{target.description} already holds deliveries: copy into an empty one"
            )
        counts: dict[str, int] = {}
        with dst.transaction():
            for table in TABLES:
                columns = _columns(src, table)
                if table == "meta":
                    dst.execute("DELETE FROM meta WHERE key != 'schema_version'")
                    where = " WHERE key != 'schema_version'"
                else:
                    where = ""
                names = ", ".join(columns)
                counts[table] = 0
                with dst.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    rows = src.execute(f"SELECT {names} FROM {table}{where}")
                    while chunk := rows.fetchmany(_CHUNK):
                        for row in chunk:
                            copy.write_row(row)
                        counts[table] += len(chunk)
            for serial in ("sends", "actions"):
                dst.execute(
                    f"SELECT setval(pg_get_serial_sequence('{serial}', 'id'),"
                    f" COALESCE((SELECT max(id) FROM {serial}), 0) + 1, false)"
                )
        return counts
    finally:
        src.close()
        if dst is not None:
            dst.close()
