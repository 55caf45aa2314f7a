"""The journal's errors, its own so that it needs nothing from the host.

The tree::

    JournalError               the journal cannot be opened, read or written
    ├── JournalUnavailable     a write failed, the database is unreachable or the journal is
    │                          closed: retryable (ingest answers 503, the sender tries again)
    └── SchemaMismatch         the database's schema is newer than this hookdock knows, or
                               older where it may not be migrated: permanent until an upgrade
                               or ``hookdock migrate``

Messages name what to check (``journal.path``, ``journal.dsn``) and never hold a password.
"""

from __future__ import annotations

__all__ = ["JournalError", "JournalUnavailable", "SchemaMismatch", "one_line"]


class JournalError(Exception):
    """The journal could not be opened, read or written: check ``[journal]`` and the disk or
    the database it names."""


class JournalUnavailable(JournalError):
    """The journal could not make a write durable right now; the sender must try again."""


class SchemaMismatch(JournalError):
    """The database holds a schema this hookdock cannot use as it is."""


def one_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says, or its type's name when it says nothing: what a
    log line or an error carries of a driver's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
