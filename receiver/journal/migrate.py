"""``hookdock migrate [--check]``: the journal's schema version, and bringing it up to date.

Opening a journal migrates it too (so the embedded defaults just work); this is the explicit
step for a deploy that migrates first and then rolls replicas over, and the check that tells
whether one is due without changing anything.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from receiver.journal.config import PostgresConfig, SqliteConfig, make_journal
from receiver.journal.dialect import Tx
from receiver.journal.errors import JournalError, SchemaMismatch
from receiver.journal.schema import SCHEMA_VERSION, SchemaStatus, schema_status

__all__ = ["check_schema", "migrate_schema"]


def _status(conn: Any, dialect: Any) -> SchemaStatus:
    status = schema_status(Tx(conn, dialect, lambda: 0.0))
    if status.found is not None and status.found > SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the journal's schema is version {status.found}, newer than this hookdock knows"
            f" (version {SCHEMA_VERSION}): run the newer hookdock that wrote it, or upgrade"
        )
    return status


def check_schema(config: SqliteConfig | PostgresConfig) -> SchemaStatus:
    """The version found and the one this hookdock uses; changes nothing."""
    if isinstance(config, SqliteConfig):
        from receiver.journal.sqlite import SQLITE

        if not config.path.exists():
            return SchemaStatus(None)
        uri = f"file:{config.path}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise JournalError(f"the journal at {config.path} cannot be read: {exc}") from exc
        try:
            return _status(conn, SQLITE)
        finally:
            conn.close()
    from receiver.journal.postgres import PostgresJournal

    journal = PostgresJournal(
        config.dsn.get_secret_value(),
        schema=config.db_schema,
        connect_timeout_seconds=config.connect_timeout_seconds,
        migrate_schema=False,
    )
    from receiver.journal.postgres import POSTGRES

    pg = journal.connect_for_check()
    try:
        return _status(pg, POSTGRES)
    finally:
        pg.close()


def migrate_schema(config: SqliteConfig | PostgresConfig) -> tuple[int | None, int]:
    """(version before, version now) after creating or migrating the schema."""
    before = check_schema(config).found
    journal = make_journal(config)
    journal.open()  # connecting migrates, under the engine's lock
    asyncio.run(journal.close())
    return before, SCHEMA_VERSION
