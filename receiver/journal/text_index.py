"""SQLite's index for free text (``q``): an FTS5 table with the trigram tokenizer over the
events' ``display_name``, kept in step with ``events`` by triggers.

PostgreSQL has its ``pg_trgm`` index (``postgres``); without one, a rare text scans every event
(1.3 s at a million).  The FTS5 table holds no copy of the names (its content is ``events``,
by rowid) and answers a phrase query with the rowids of the names holding the text, for texts
of at least 3 characters (a trigram); shorter ones are scanned.  The index only narrows: a
listing checks every candidate with the very ``LIKE`` a scan uses, so both find the same.

Triggers on ``events`` keep it in step: every insert, the upserts of routing, a migration's
fills, and every delete (purge, retention).  A SQLite built without FTS5 or its trigram
tokenizer (3.34; 3.35 here) gets no index, and one log line says that search scans.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from receiver.journal.dialect import Tx

__all__ = ["MIN_CHARS", "TEXT_TABLE", "make_text_index", "match_clause", "text_indexed"]

log = logging.getLogger("hookdock.journal")

TEXT_TABLE = "events_text"
MIN_CHARS = 3
"""The shortest text the index answers: a trigram."""
_NEEDS = (3, 35)
"""The trigram tokenizer came in 3.34; a listing's ``WITH ... AS MATERIALIZED`` in 3.35."""

_TABLE = (
    f"CREATE VIRTUAL TABLE {TEXT_TABLE} USING fts5(display_name, content='events',"
    " content_rowid='rowid', tokenize='trigram')"
)
_ADD = f"INSERT INTO {TEXT_TABLE}(rowid, display_name) VALUES (new.rowid, new.display_name);"
_REMOVE = (
    f"INSERT INTO {TEXT_TABLE}({TEXT_TABLE}, rowid, display_name)"
    " VALUES ('delete', old.rowid, old.display_name);"
)
_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS {TEXT_TABLE}_insert AFTER INSERT ON events BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS {TEXT_TABLE}_delete AFTER DELETE ON events BEGIN {_REMOVE} END",
    f"CREATE TRIGGER IF NOT EXISTS {TEXT_TABLE}_update AFTER UPDATE OF display_name ON events"
    f" BEGIN {_REMOVE} {_ADD} END",
)


def text_indexed(tx: Tx) -> bool:
    """Whether this journal has the index (SQLite, built with FTS5's trigram tokenizer)."""
    if tx.dialect.name != "sqlite" or sqlite3.sqlite_version_info < _NEEDS:
        return False
    found = tx.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TEXT_TABLE,)
    ).fetchone()
    return found is not None


def make_text_index(tx: Tx) -> bool:
    """Create the index, its triggers, and fill it from the events there are, inside the
    migration's transaction.  False, with one log line, where this SQLite cannot."""
    if text_indexed(tx):
        return True
    began = time.monotonic()
    tx.execute("SAVEPOINT text_index")
    try:
        if sqlite3.sqlite_version_info < _NEEDS:
            raise sqlite3.OperationalError(f"needs {'.'.join(map(str, _NEEDS))}")
        tx.execute(_TABLE)
    except sqlite3.OperationalError as exc:
        tx.execute("ROLLBACK TO text_index")
        tx.execute("RELEASE text_index")
        log.warning(
            "journal: free-text search (q) scans every event: this SQLite (%s) has no FTS5"
            " trigram tokenizer (%s); SQLite 3.35 or later built with FTS5 has it",
            sqlite3.sqlite_version,
            exc,
        )
        return False
    for trigger in _TRIGGERS:
        tx.execute(trigger)
    tx.execute(f"INSERT INTO {TEXT_TABLE}({TEXT_TABLE}) VALUES ('rebuild')")
    tx.execute("RELEASE text_index")
    log.info("journal: made the index for free-text search in %.1f s", time.monotonic() - began)
    return True


def match_clause(lowered: str) -> tuple[str, str]:
    """A condition on ``e`` narrowing to the events whose name may hold ``lowered`` (the
    text as the ``LIKE`` pattern has it), and its parameter: the text as one phrase."""
    phrase = '"' + lowered.replace('"', '""') + '"'
    return f"e.rowid IN (SELECT rowid FROM {TEXT_TABLE} WHERE {TEXT_TABLE} MATCH ?)", phrase
