"""What only the SQLite journal does: its file, WAL, another process's lock, journals written
by older releases, and the clock it is given."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.files import FileInfo
from receiver.journal import (
    DeliveryState,
    JournalError,
    JournalUnavailable,
    Outcome,
    SendState,
    SqliteJournal,
)
from receiver.journal.memory import MemoryJournal
from receiver.journal.schema import SCHEMA_VERSION
from receiver.journal.text_index import TEXT_TABLE
from receiver.journal.views import EventFilter
from tests.journal.contract import event, raw, routed
from tests.journal.helpers import accepted, rows

pytestmark = pytest.mark.anyio


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "j.db").open()
    yield j
    await j.close()


def _create(path: Path) -> None:
    """Create (or migrate) the journal at ``path`` and close it again."""
    asyncio.run(SqliteJournal(path).open().close())


def _schema_version(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        [(value,)] = db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        return str(value)
    finally:
        db.close()


async def test_the_file_is_in_wal_mode(journal: SqliteJournal) -> None:
    await journal.append(raw(), "k")
    assert isinstance(journal.path, Path)
    assert journal.path.with_name("j.db-wal").exists()
    db = sqlite3.connect(journal.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
    assert _schema_version(journal.path) == str(SCHEMA_VERSION)


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
conn.close()
"""


@pytest.fixture
def locked_by_another_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds ``j.db``'s write lock until a line arrives on its stdin."""
    _create(tmp_path / "j.db")
    with subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(tmp_path / "j.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:  # closes its pipes, waits for it
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_another_process_holding_the_lock_is_unavailable_not_hung(
    tmp_path: Path, locked_by_another_process: subprocess.Popen[str]
) -> None:
    j = SqliteJournal(tmp_path / "j.db", busy_timeout_ms=50).open()
    try:
        started = time.monotonic()
        with pytest.raises(JournalUnavailable, match="locked"):
            await j.append(raw(), "k")
        with pytest.raises(JournalUnavailable):
            await j.ping()
        assert time.monotonic() - started < 5, "busy_timeout_ms bounds the wait"
        # WAL: an operator's read does not wait for the writer (its own connection).
        assert (await j.counts())[DeliveryState.PENDING] == 0
        proc = locked_by_another_process
        assert proc.stdin is not None
        proc.stdin.write("done\n")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        await j.append(raw(), "k")
        assert (await j.counts())[DeliveryState.PENDING] == 1
    finally:
        await j.close()


async def test_a_stalled_commit_fails_waiting_writes_then_lands(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path, busy_timeout_ms=30_000).open()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        d = raw(b"stalled")
        waiting = asyncio.create_task(j.append(d, "k"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        failed = 0
        while not failed and loop.time() < deadline:
            await asyncio.sleep(0.01)
            failed = j._committer.fail_if_stalled(0.05)
        assert failed == 1
        with pytest.raises(JournalUnavailable, match="has not committed"):
            await waiting
    finally:
        locker.execute("COMMIT")
        locker.close()
    # The stalled batch commits once the lock is gone: the sender's retry is a duplicate.
    again = await j.append(raw(b"stalled"), "k")
    assert again.duplicate and again.delivery_id == d.delivery_id
    await j.close()


def test_an_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JournalError, match=r"journal\.path"):
        SqliteJournal(blocker / "j.db").open()


def test_an_operator_never_creates_a_journal_where_there_is_none(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "j.db"
    with pytest.raises(JournalError, match=f"there is no journal at {path}"):
        SqliteJournal(path, create=False).open()
    assert not (tmp_path / "nowhere").exists()


async def test_recorded_files_are_stored_as_json_by_role(journal: SqliteJournal) -> None:
    _, [send] = await routed(journal, ["s"], ["s"])
    info = FileInfo(size=5, sha256="ab" * 32, content_type="application/pdf", filename="a.pdf")
    for role in ("pdf", 'odd."role'):
        assert await journal.record_file(send, "w", role, info)
    assert isinstance(journal.path, Path)
    db = sqlite3.connect(journal.path)
    [(stored,)] = db.execute("SELECT files FROM sends WHERE id = ?", (send.send_id,))
    db.close()
    assert json.loads(stored) == dict.fromkeys(("pdf", 'odd."role'), info.model_dump())


async def test_the_memory_journal_runs_on_the_clock_it_is_given() -> None:
    now = [1_000_000.0]
    j = MemoryJournal(clock=lambda: now[0])
    try:
        d = raw()
        await j.append(d, "k")
        assert len(await j.claim("a", 1, lease_seconds=60)) == 1
        now[0] += 59
        assert await j.claim("b", 1, lease_seconds=60) == []
        now[0] += 2
        [again] = await j.claim("b", 1, lease_seconds=60)
        assert (again.delivery, again.attempt, again.claimed_at) == (d, 2, now[0])
        [send] = await j.route(again, "b", [(event(d), "s")], {"s"}, 60)
        await j.finish_send(send, "b", Outcome.retry("busy", at=now[0] + 30))
        assert await j.claim_sends("b", {"s": 1}, 60) == []
        now[0] += 31
        [retry] = await j.claim_sends("b", {"s": 1}, 60)
        assert retry.attempt == 2
        await j.finish_send(retry, "b", Outcome.delivered())
        [info] = await j.sends(d.delivery_id)
        assert info.delivered_at == datetime.fromtimestamp(now[0], UTC)
    finally:
        await j.close()


# --------------------------------------------------------------------------- older releases


def test_the_current_schema_needs_no_migration_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    for _ in range(2):
        _create(path)
    assert _schema_version(path) == str(SCHEMA_VERSION)


async def test_a_version_1_journal_opens_with_its_states(tmp_path: Path) -> None:
    # Version 1: one state per delivery, 'done' meaning every sink had it.
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE deliveries (id TEXT PRIMARY KEY, route TEXT NOT NULL,
            source TEXT NOT NULL, received_at TEXT NOT NULL, content_type TEXT NOT NULL,
            headers BLOB NOT NULL, body BLOB NOT NULL, dedupe_key TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL, lease_owner TEXT, lease_until REAL,
            last_error TEXT, updated_at REAL NOT NULL);
        CREATE TABLE attempts (delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL,
            owner TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, outcome TEXT,
            error TEXT, PRIMARY KEY (delivery_id, attempt));
        """
    )
    stamp = datetime.now(UTC).isoformat()
    for delivery_id, state in (("a", "done"), ("b", "pending"), ("c", "dead")):
        conn.execute(
            "INSERT INTO deliveries (id, route, source, received_at, content_type, headers,"
            " body, dedupe_key, state, next_attempt_at, updated_at)"
            " VALUES (?, 'r', 's', ?, 'application/json', '{}', x'7b7d', ?, ?, 0, 0)",
            (delivery_id, stamp, delivery_id, state),
        )
    conn.commit()
    conn.close()
    journal = SqliteJournal(path).open()
    try:
        states = {i.delivery_id: i.state for i in await journal.list()}
        assert states == {
            "a": DeliveryState.DONE,
            "b": DeliveryState.PENDING,
            "c": DeliveryState.DEAD,
        }
        [claim] = await journal.claim("w", 10, 60)
        assert claim.delivery.delivery_id == "b"
    finally:
        await journal.close()
    # Opening it again migrates nothing twice.
    again = SqliteJournal(path).open()
    try:
        assert (await again.counts())[DeliveryState.DONE] == 1
    finally:
        await again.close()
    assert _schema_version(path) == str(SCHEMA_VERSION)


# The schema as release 2 made it: sends without files, codes or stored events.
_V2_SCHEMA = """
CREATE TABLE deliveries (id TEXT PRIMARY KEY, route TEXT NOT NULL, source TEXT NOT NULL,
    received_at TEXT NOT NULL, content_type TEXT NOT NULL, headers BLOB NOT NULL,
    body BLOB NOT NULL, dedupe_key TEXT NOT NULL UNIQUE, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, lease_owner TEXT,
    lease_until REAL, last_error TEXT, updated_at REAL NOT NULL);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE attempts (delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    owner TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, outcome TEXT,
    error TEXT, PRIMARY KEY (delivery_id, attempt));
CREATE TABLE sends (id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL,
    event_index INTEGER NOT NULL, sink TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, lease_owner TEXT,
    lease_until REAL, last_error TEXT, delivered_at REAL, updated_at REAL NOT NULL,
    UNIQUE (delivery_id, event_index, sink));
CREATE INDEX sends_due ON sends (sink, next_attempt_at) WHERE state = 'pending';
CREATE INDEX sends_leased ON sends (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE send_attempts (send_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
    owner TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, outcome TEXT,
    error TEXT, PRIMARY KEY (send_id, attempt));
CREATE TABLE stopped_sinks (sink TEXT PRIMARY KEY, stopped_at REAL NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('schema_version', '2');
"""


def _v2_file(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_V2_SCHEMA)
    stamp = datetime.now(UTC).isoformat()
    for delivery_id in ("a", "b"):
        conn.execute(
            "INSERT INTO deliveries (id, route, source, received_at, content_type, headers,"
            " body, dedupe_key, state, next_attempt_at, updated_at)"
            " VALUES (?, 'r', 's', ?, 'application/json', '{}', x'7b7d', ?, 'routed', 0, 0)",
            (delivery_id, stamp, delivery_id),
        )
    conn.executemany(
        "INSERT INTO sends (id, delivery_id, event_index, sink, state, attempts,"
        " next_attempt_at, last_error, delivered_at, updated_at) VALUES (?, ?, 0, ?, ?, ?, 0, ?,"
        " ?, 0)",
        [
            (1, "a", "x", "delivered", 1, None, 1.0),
            (2, "a", "y", "dead", 3, "refused", None),
            (3, "b", "x", "pending", 1, "busy", None),
        ],
    )
    conn.close()


def _file_info() -> FileInfo:
    return FileInfo(size=5, sha256="ab" * 32, content_type="application/pdf", filename="a.pdf")


async def test_a_version_2_journal_opens_with_its_sends_kept(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_file(path)
    journal = SqliteJournal(path).open()
    try:
        states = {i.delivery_id: i.state for i in await journal.list()}
        assert states == {"a": DeliveryState.DEAD, "b": DeliveryState.PENDING}
        old = {s.sink: s for s in await journal.sends("a")}
        assert (old["x"].state, old["x"].delivered_at) == (
            SendState.DELIVERED,
            datetime.fromtimestamp(1.0, UTC),
        )
        assert (old["y"].state, old["y"].attempts, old["y"].last_error) == (
            SendState.DEAD,
            3,
            "refused",
        )
        assert (old["y"].code, old["y"].files, old["y"].event_id) == (None, {}, "a-0")
        assert await journal.dead_codes() == {}
        # The new columns work on the old rows; the event, never stored, is normalized again
        # by the dispatcher and stored through store_event.
        [claim] = await journal.claim_sends("w", {"x": 5}, 60)
        assert (claim.send_id, claim.attempt, claim.files) == (3, 2, {})
        assert (claim.event_id, claim.event, claim.delivery_id) == ("b-0", None, "b")
        raw_b = await journal.get_raw("b")
        assert raw_b is not None
        e = event(raw_b)
        assert e.event_id == claim.event_id
        await journal.store_event(claim, e, 0)
        assert await journal.record_file(claim, "w", "pdf", _file_info())
        await journal.finish_send(claim, "w", Outcome.dead("expired", code="link_expired"))
        assert await journal.dead_codes() == {"link_expired": 1}
        assert await journal.requeue(["b"]) == 1
        [again] = await journal.claim_sends("w", {"x": 5}, 60)
        assert (again.event, again.files) == (e, {"pdf": _file_info()})
        await journal.release_sends("w", [again.send_id])
    finally:
        await journal.close()
    # Opening it again migrates nothing twice, and what was recorded is there.
    again_opened = SqliteJournal(path).open()
    try:
        [send] = await again_opened.sends("b")
        assert (send.state, send.files) == (SendState.PENDING, {"pdf": _file_info()})
    finally:
        await again_opened.close()
    assert _schema_version(path) == str(SCHEMA_VERSION)


async def test_a_new_journal_and_its_folder_are_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "data" / "hookdock.db"
    journal = SqliteJournal(path).open()
    try:
        await journal.ping()
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        wal = path.with_name("hookdock.db-wal")
        assert wal.stat().st_mode & 0o777 == 0o600
    finally:
        await journal.close()


# --------------------------------------------------------------------------- free-text index


async def _named(journal: SqliteJournal, name: str, task_id: str) -> str:
    """A delivery routed as one event called ``name`` and delivered; its event id."""
    d = raw(name.encode())
    claim = await accepted(journal, d)
    e = event(d).model_copy(update={"display_name": name, "task_id": task_id})
    [send] = await journal.route(claim, "w", [(e, "a")], {"a"}, 60)
    await journal.finish_send(send, "w", Outcome.delivered())
    return e.event_id


def _text_rows(path: Path, phrase: str) -> int:
    """Rows of the free-text index matching ``phrase``, after its own integrity check (which
    fails where the index and ``events`` disagree)."""
    db = sqlite3.connect(path)
    try:
        db.execute(f"INSERT INTO {TEXT_TABLE}({TEXT_TABLE}) VALUES ('integrity-check')")
        sql = f"SELECT count(*) FROM {TEXT_TABLE} WHERE {TEXT_TABLE} MATCH ?"
        return int(db.execute(sql, (f'"{phrase}"',)).fetchone()[0])
    finally:
        db.close()


async def test_the_free_text_index_follows_inserts_purges_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = SqliteJournal(path).open()
    try:
        for n in range(3):
            await _named(journal, f"report {n}", f"t-{n}")
        assert _text_rows(path, "report") == 3
        await journal.purge_task("t-1", actor="dpo")
        assert _text_rows(path, "report") == 2
        assert _text_rows(path, "report 1") == 0
        await journal.prune(time.time() + 60)
        assert _text_rows(path, "report") == 0
        await _named(journal, "report 9", "t-9")
        page = await journal.events(EventFilter(text="EPORT 9"), 10)
        assert [r.display_name for r in page.items] == ["report 9"]
    finally:
        await journal.close()


async def test_a_version_9_journal_gets_the_free_text_index_filled(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = SqliteJournal(path).open()
    made = [await _named(journal, f"scan {n}", f"t-{n}") for n in range(3)]
    await journal.close()
    db = sqlite3.connect(path)
    for trigger in ("insert", "delete", "update"):
        db.execute(f"DROP TRIGGER {TEXT_TABLE}_{trigger}")
    db.execute(f"DROP TABLE {TEXT_TABLE}")
    db.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    db.commit()
    db.close()

    journal = SqliteJournal(path).open()
    try:
        assert _schema_version(path) == str(SCHEMA_VERSION)
        assert _text_rows(path, "scan") == 3
        page = await journal.events(EventFilter(text="scan 1"), 10)
        assert [r.event_id for r in page.items] == [made[1]]
    finally:
        await journal.close()


async def test_without_a_trigram_tokenizer_free_text_scans_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import receiver.journal.text_index as text_index

    monkeypatch.setattr(text_index, "_NEEDS", (99, 0))
    journal = SqliteJournal(tmp_path / "j.db").open()
    try:
        made = await _named(journal, "no index here", "t-1")
        page = await journal.events(EventFilter(text="INDEX"), 10)
        assert [r.event_id for r in page.items] == [made]
        assert await rows(
            journal, "SELECT count(*) FROM sqlite_master WHERE name = ?", TEXT_TABLE
        ) == [(0,)]
    finally:
        await journal.close()
    [line] = [r.getMessage() for r in caplog.records if "free-text search" in r.getMessage()]
    assert "scans every event" in line and "FTS5 trigram tokenizer" in line
