"""The SQLite journal's tables, and the migration from older files.

``deliveries`` holds each accepted request's raw bytes and its routing state (``pending`` until
routed, then ``routed``, or ``dead`` when it cannot be); ``sends`` holds one row per (event,
sink) pair with its own attempts, lease and outcome, and the files it stored (``files``, a JSON
object role -> ``FileInfo``; NULL while there are none, so that claims parse nothing then).  A
delivery's overall state (pending / done / dead) is derived from both when it is read, so the
hot path writes nothing extra.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import orjson

from handlers.event import RawDelivery
from handlers.files import FileInfo

__all__ = [
    "OVERALL_STATE",
    "RAW_COLUMNS",
    "SCHEMA_VERSION",
    "files_json",
    "marks",
    "migrate",
    "parse_files",
    "raw_delivery",
]

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS sends (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    event_index INTEGER NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT,
    delivered_at REAL,
    updated_at REAL NOT NULL,
    files TEXT,
    code TEXT,
    UNIQUE (delivery_id, event_index, sink)
);
CREATE INDEX IF NOT EXISTS sends_due ON sends (sink, next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS sends_leased ON sends (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS send_attempts (
    send_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (send_id, attempt)
);
CREATE TABLE IF NOT EXISTS stopped_sinks (
    sink TEXT PRIMARY KEY,
    stopped_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

OVERALL_STATE = """CASE
    WHEN d.state = 'pending' THEN 'pending'
    WHEN EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id AND s.state = 'pending')
        THEN 'pending'
    WHEN d.state = 'dead'
        OR EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = d.id AND s.state = 'dead')
        THEN 'dead'
    ELSE 'done' END"""
"""A delivery's overall state, from its own routing state and its sends' (alias ``d``)."""


_ADDED_IN_3 = {"sends": ("files TEXT", "code TEXT")}
"""Columns version 3 added to tables that version 2 already had."""


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def migrate(conn: sqlite3.Connection) -> None:
    """Create what is missing and bring an older file up to ``SCHEMA_VERSION``."""
    conn.executescript(_SCHEMA)
    if _version(conn) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process (a worker next to the server) may
        # have migrated the file meanwhile, and adding a column twice is an error.
        version = _version(conn)
        if version < 2:
            # Version 1 had one state per delivery: 'done' meant every sink had it, which is a
            # routed delivery whose sends are all delivered (there were none recorded then).
            conn.execute("UPDATE deliveries SET state = 'routed' WHERE state = 'done'")
        if version < 3:
            # Tables this file did not have yet were just made whole by _SCHEMA: add only
            # what is missing.
            for table, columns in _ADDED_IN_3.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        if version < SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


RAW_COLUMNS = "d.id, d.route, d.source, d.received_at, d.content_type, d.headers, d.body"
"""The columns ``raw_delivery`` reads, from ``deliveries`` aliased ``d``."""


def raw_delivery(row: Any) -> RawDelivery:
    return RawDelivery(
        delivery_id=row[0],
        route=row[1],
        source=row[2],
        received_at=datetime.fromisoformat(row[3]),
        content_type=row[4],
        headers=orjson.loads(row[5]),
        body=bytes(row[6]),
    )


def files_json(files: dict[str, FileInfo]) -> str:
    """The ``sends.files`` value for ``files`` (role -> what was stored)."""
    return orjson.dumps({role: info.model_dump() for role, info in files.items()}).decode()


def parse_files(text: str | None) -> dict[str, FileInfo]:
    """``sends.files`` back into role -> ``FileInfo``; NULL (the usual case) costs nothing."""
    if text is None:
        return {}
    return {role: FileInfo.model_validate(info) for role, info in orjson.loads(text).items()}


def marks(n: int) -> str:
    """``?,?,...``: ``n`` placeholders for an ``IN (...)``."""
    return ",".join("?" * n)
