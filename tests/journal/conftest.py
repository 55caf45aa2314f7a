"""Backends for the journal's tests: every backend the contract runs on, opened fresh per test.

``backend`` is parametrized over ``sqlite`` (a temporary file), ``memory`` (``MemoryJournal``)
and ``postgres`` (a schema of the test's own, see ``pg_schema`` in ``tests/conftest.py``);
``journal`` is one journal opened on it.  ``durable`` is the same over the backends another
journal can open again (the file, the schema): for tests of what survives a reopen, or two
journals on one store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from receiver.journal import SqliteJournal, SqlJournal
from receiver.journal.memory import MemoryJournal

# `-m "not postgres"` runs the rest where there is no database at hand.
_PG = pytest.param("postgres", marks=pytest.mark.postgres)
BACKENDS = ("sqlite", "memory", _PG)
DURABLE = ("sqlite", _PG)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Backend:
    """Opens journals on one store; every journal it opened is closed when the test ends."""

    name: str
    _make: Callable[[], SqlJournal]
    opened: list[SqlJournal] = field(default_factory=list)

    def open(self) -> SqlJournal:
        """Another journal on the same store (memory: there is only the one)."""
        if self.name == "memory" and self.opened:
            raise AssertionError("an in-memory journal cannot be opened twice")
        journal = self._make()
        if self.name != "memory":
            journal.open()
        self.opened.append(journal)
        return journal

    async def close(self) -> None:
        for journal in self.opened:
            await journal.close()


def _backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if name == "sqlite":
        return Backend(name, lambda: SqliteJournal(tmp_path / "journal.db"))
    if name == "memory":
        return Backend(name, MemoryJournal)
    from receiver.journal.postgres import PostgresJournal

    # Only the PostgreSQL cases ask for the database, so the others run without it.
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return Backend(name, lambda: PostgresJournal(dsn, schema=schema))


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    store = _backend(request.param, request, tmp_path)
    yield store
    await store.close()


@pytest.fixture(params=DURABLE)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    store = _backend(request.param, request, tmp_path)
    yield store
    await store.close()


@pytest.fixture
def journal(backend: Backend) -> SqlJournal:
    return backend.open()
