"""``[journal]``: which engine, and its settings; ``open_journal`` makes the journal it names.

A closed set, so a union tagged by ``type``; a table without ``type`` is SQLite, as every
configuration written before PostgreSQL was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag

from receiver.journal.sql import SqlJournal

__all__ = ["JournalConfig", "PostgresConfig", "SqliteConfig", "make_journal"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class SqliteConfig(_Model):
    type: Literal["sqlite"] = "sqlite"
    path: Path = Path("hookdock-data/hookdock.db")
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000
    """How long a write waits for another process's lock before the delivery is refused (503)."""


class PostgresConfig(_Model):
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, populate_by_name=True
    )

    type: Literal["postgres"]
    dsn: SecretStr
    """``postgresql://user:password@host:5432/db`` (or ``${DATABASE_URL}``); never shown."""
    db_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = Field(
        default=None, alias="schema"
    )
    """A schema of its own in that database (created if missing); default: the search path."""
    pool_size: Annotated[int, Field(ge=1, le=100)] = 4
    """Connections for operators' reads, beside the one the commit thread writes on."""
    statement_timeout_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000
    """A statement running longer is cancelled: its writes are refused (503) and retried."""
    connect_timeout_seconds: Annotated[float, Field(ge=1, le=300)] = 5.0


def _engine(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "sqlite"))
    return str(getattr(value, "type", "sqlite"))


JournalConfig = Annotated[
    Annotated[SqliteConfig, Tag("sqlite")] | Annotated[PostgresConfig, Tag("postgres")],
    Discriminator(_engine),
]


def make_journal(
    config: SqliteConfig | PostgresConfig,
    *,
    create: bool = True,
    clock: Callable[[], float] = time.time,
) -> SqlJournal:
    """The journal ``config`` names, not opened yet.  ``create=False``: an operator's command,
    which must not make an empty SQLite journal where none is (a wrong folder)."""
    if isinstance(config, PostgresConfig):
        from receiver.journal.postgres import PostgresJournal

        return PostgresJournal(
            config.dsn.get_secret_value(),
            schema=config.db_schema,
            pool_size=config.pool_size,
            statement_timeout_ms=config.statement_timeout_ms,
            connect_timeout_seconds=config.connect_timeout_seconds,
        )
    from receiver.journal.sqlite import SqliteJournal

    return SqliteJournal(
        config.path, busy_timeout_ms=config.busy_timeout_ms, clock=clock, create=create
    )
