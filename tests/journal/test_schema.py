"""The journal's schema version on both engines: created, migrated, refused when newer, and
``hookdock migrate [--check]``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.cli import main
from receiver.journal import SchemaMismatch, SqliteJournal, SqlJournal
from receiver.journal.schema import SCHEMA_VERSION
from tests.conftest import pg_journal_table, to_toml


@dataclass
class Engine:
    name: str
    config: Path
    """A ``hookdock.toml`` naming this journal."""
    make: Callable[[], SqlJournal]
    set_version: Callable[[int], None]
    exists: Callable[[], bool]
    """Whether the store holds a journal (a file, or tables in the schema)."""


def _write_config(tmp_path: Path, journal: dict[str, Any]) -> Path:
    doc = {
        "journal": journal,
        "routes": [
            {
                "name": "r",
                "source": "smartdocumentor.text_document",
                "auth": {"type": "none"},
                "sinks": ["exports"],
            }
        ],
        "sinks": {"exports": {"type": "local", "root": "exports"}},
    }
    path = tmp_path / "hookdock.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    return path


def _sqlite(tmp_path: Path) -> Engine:
    path = tmp_path / "j.db"

    def set_version(version: int) -> None:
        db = sqlite3.connect(path)
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        db.close()

    return Engine(
        "sqlite",
        _write_config(tmp_path, {"path": "j.db"}),
        lambda: SqliteJournal(path),
        set_version,
        path.exists,
    )


def _postgres(tmp_path: Path, dsn: str, schema: str) -> Engine:
    import psycopg

    from receiver.journal.postgres import PostgresJournal

    def set_version(version: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{schema}".meta SET value = %s WHERE key = %s',
                (str(version), "schema_version"),
            )

    def exists() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchone()
            return row is not None and row[0] > 0

    return Engine(
        "postgres",
        _write_config(tmp_path, pg_journal_table(dsn, schema)),
        lambda: PostgresJournal(dsn, schema=schema),
        set_version,
        exists,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        return _sqlite(tmp_path)
    return _postgres(
        tmp_path, request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    )


def _open_and_close(engine: Engine) -> None:
    asyncio.run(engine.make().open().close())


def _migrate(
    engine: Engine, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["migrate", *args, "--config", str(engine.config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_newer_schema_is_refused_naming_both_versions(engine: Engine) -> None:
    _open_and_close(engine)
    engine.set_version(99)
    with pytest.raises(SchemaMismatch) as refused:
        engine.make().open()
    message = str(refused.value)
    assert "version 99" in message and f"version {SCHEMA_VERSION}" in message


def test_opening_again_migrates_nothing(engine: Engine) -> None:
    _open_and_close(engine)
    _open_and_close(engine)
    assert engine.exists()


def test_migrate_and_its_check(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _migrate(engine, capsys, "--check")
    assert (code, "no journal yet" in out) == (1, True), out
    assert not engine.exists(), "--check changes nothing"

    code, out, _ = _migrate(engine, capsys)
    assert (code, out) == (0, f"created the journal's schema (version {SCHEMA_VERSION})\n")
    assert engine.exists()
    code, out, _ = _migrate(engine, capsys, "--check")
    assert (code, out) == (0, f"the journal's schema is current (version {SCHEMA_VERSION})\n")
    code, out, _ = _migrate(engine, capsys)
    assert (code, "nothing to do" in out) == (0, True), out

    engine.set_version(SCHEMA_VERSION - 1)
    code, out, _ = _migrate(engine, capsys, "--check")
    assert (code, f"version {SCHEMA_VERSION - 1}, this hookdock uses" in out) == (1, True), out
    code, out, _ = _migrate(engine, capsys)
    assert (code, out) == (
        0,
        f"migrated the journal's schema from version {SCHEMA_VERSION - 1} to {SCHEMA_VERSION}\n",
    )
    assert _migrate(engine, capsys, "--check")[0] == 0

    engine.set_version(99)
    for args in (("--check",), ()):
        code, out, err = _migrate(engine, capsys, *args)
        assert code == 1 and out == ""
        assert "version 99" in err and f"version {SCHEMA_VERSION}" in err, err
