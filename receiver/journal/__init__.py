"""Durable storage of deliveries and their dispatch state, on SQLite or PostgreSQL.

``base`` says what a journal offers (``Journal``, the hot path; ``JournalAdmin``, the
operator's side), ``rules`` decides every state, ``hotpath`` and ``admin`` are the SQL written
once over a ``dialect``, ``sqlite`` and ``postgres`` connect, ``schema`` creates and migrates,
``config`` picks the engine, ``errors`` is what can go wrong.
"""

from receiver.journal.base import (
    AppendResult,
    Claim,
    DeliveryInfo,
    DeliveryState,
    Journal,
    JournalAdmin,
    Outcome,
    SendClaim,
    SendInfo,
    SendState,
)
from receiver.journal.config import JournalConfig, PostgresConfig, SqliteConfig, make_journal
from receiver.journal.errors import JournalError, JournalUnavailable, SchemaMismatch
from receiver.journal.sql import SqlJournal
from receiver.journal.sqlite import SqliteJournal

__all__ = [
    "AppendResult",
    "Claim",
    "DeliveryInfo",
    "DeliveryState",
    "Journal",
    "JournalAdmin",
    "JournalConfig",
    "JournalError",
    "JournalUnavailable",
    "Outcome",
    "PostgresConfig",
    "SchemaMismatch",
    "SendClaim",
    "SendInfo",
    "SendState",
    "SqlJournal",
    "SqliteConfig",
    "SqliteJournal",
    "make_journal",
]
