"""The SQLite journal on real files: dedupe, leases, outcomes, group commit, durability."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import RawDelivery
from handlers.files import FileInfo
from receiver.errors import JournalUnavailable
from receiver.ids import new_id
from receiver.journal import DeliveryState, Outcome, SqliteJournal
from receiver.journal.base import SendState

pytestmark = pytest.mark.anyio


def raw(body: bytes = b"{}", route: str = "r") -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route=route,
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        headers={"user-agent": "test"},
        body=body,
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "j.db").open()
    yield j
    await j.close()


async def test_append_is_deduplicated_by_key(journal: SqliteJournal) -> None:
    first, again = raw(b"1"), raw(b"1")
    a = await journal.append(first, "k1")
    b = await journal.append(again, "k1")
    assert (a.duplicate, b.duplicate) == (False, True)
    assert b.delivery_id == first.delivery_id
    assert (await journal.counts())[DeliveryState.PENDING] == 1
    stored = await journal.get_raw(first.delivery_id)
    assert stored == first


async def test_duplicates_within_one_batch_keep_the_first_id(journal: SqliteJournal) -> None:
    batch = [raw(b"same") for _ in range(5)] + [raw(b"other")]
    keys = ["dup"] * 5 + ["other"]
    results = await asyncio.gather(
        *(journal.append(d, k) for d, k in zip(batch, keys, strict=True))
    )
    assert sum(not r.duplicate for r in results) == 2
    ids = {r.delivery_id for r in results[:5]}
    assert len(ids) == 1
    assert (await journal.counts())[DeliveryState.PENDING] == 2


async def test_attempts_are_recorded(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.db").open()
    d = raw()
    await j.append(d, "k")
    [c1] = await j.claim("w", 1, 60)
    await j.finish(c1, "w", Outcome.retry("boom", at=0))
    [c2] = await j.claim("w", 1, 60)
    [send] = await j.route(c2, "w", [(0, "s")], {"s"}, 60)
    await j.finish_send(send, "w", Outcome.retry("busy", at=0))
    [again] = await j.claim_sends("w", {"s": 1}, 60)
    await j.finish_send(again, "w", Outcome.delivered())
    await j.close()
    db = sqlite3.connect(tmp_path / "j.db")
    rows = db.execute("SELECT attempt, owner, outcome, error FROM attempts ORDER BY attempt")
    assert list(rows) == [(1, "w", "retry", "boom"), (2, "w", "routed", None)]
    rows = db.execute("SELECT attempt, outcome, error FROM send_attempts ORDER BY attempt")
    assert list(rows) == [(1, "retry", "busy"), (2, "delivered", None)]


async def test_concurrent_appends_share_commits(journal: SqliteJournal) -> None:
    await asyncio.gather(*(journal.append(raw(str(i).encode()), f"k{i}") for i in range(300)))
    commits, jobs = journal.stats
    assert jobs == 300
    assert commits < jobs, "group commit should batch concurrent appends"
    assert (await journal.counts())[DeliveryState.PENDING] == 300


async def test_claims_are_exclusive_until_the_lease_ends(journal: SqliteJournal) -> None:
    for i in range(5):
        await journal.append(raw(str(i).encode()), f"k{i}")
    mine = await journal.claim("a", 3, lease_seconds=60)
    theirs = await journal.claim("b", 10, lease_seconds=60)
    assert len(mine) == 3
    assert len(theirs) == 2
    assert not {c.delivery.delivery_id for c in mine} & {c.delivery.delivery_id for c in theirs}
    assert all(c.attempt == 1 for c in mine + theirs)
    assert await journal.claim("c", 10, lease_seconds=60) == []


async def test_expired_lease_can_be_claimed_again(journal: SqliteJournal) -> None:
    await journal.append(raw(), "k")
    [first] = await journal.claim("a", 1, lease_seconds=0.01)
    deadline = asyncio.get_running_loop().time() + 5
    again: list[object] = []
    while not again and asyncio.get_running_loop().time() < deadline:
        again = list(await journal.claim("b", 1, lease_seconds=60))
    assert len(again) == 1
    # The first owner's late routing is ignored: it no longer holds the lease.
    assert await journal.route(first, "a", [(0, "s")], {"s"}, 60) == []
    await journal.finish(first, "a", Outcome.dead("late"))
    info = await journal.get(first.delivery.delivery_id)
    assert info is not None and info.state is DeliveryState.PENDING and info.attempts == 2
    assert await journal.sends(first.delivery.delivery_id) == []


async def test_outcomes(journal: SqliteJournal) -> None:
    ids = []
    for i in range(3):
        d = raw(str(i).encode())
        ids.append(d.delivery_id)
        await journal.append(d, f"k{i}")
    claims = {c.delivery.delivery_id: c for c in await journal.claim("w", 3, lease_seconds=60)}
    sends = {}
    for delivery_id in ids:
        [sends[delivery_id]] = await journal.route(claims[delivery_id], "w", [(0, "x")], {"x"}, 60)
    await journal.finish_send(sends[ids[0]], "w", Outcome.delivered())
    await journal.finish_send(sends[ids[1]], "w", Outcome.retry("boom", at=4e9))
    await journal.finish_send(sends[ids[2]], "w", Outcome.dead("refused"))
    infos = {i: await journal.get(i) for i in ids}
    done = infos[ids[0]]
    assert done is not None and done.state is DeliveryState.DONE
    retry = infos[ids[1]]
    assert retry is not None and retry.state is DeliveryState.PENDING
    assert retry.last_error == "sink x: boom" and retry.next_attempt_at is not None
    assert retry.next_attempt_at.timestamp() == pytest.approx(4e9)
    dead = infos[ids[2]]
    assert dead is not None and dead.state is DeliveryState.DEAD
    assert dead.last_error == "sink x: refused"
    # Not due yet, so not claimable; the dead one neither.
    assert await journal.claim_sends("w", {"x": 10}, lease_seconds=60) == []
    assert [i.delivery_id for i in await journal.list(DeliveryState.DEAD)] == [ids[2]]
    assert await journal.requeue([ids[2]]) == 1
    [claim] = await journal.claim_sends("w", {"x": 10}, lease_seconds=60)
    assert claim.delivery.delivery_id == ids[2] and claim.attempt == 1


async def test_release_gives_the_attempt_back(journal: SqliteJournal) -> None:
    d = raw()
    await journal.append(d, "k")
    await journal.claim("w", 1, lease_seconds=60)
    await journal.release("w", [d.delivery_id])
    [claim] = await journal.claim("v", 1, lease_seconds=60)
    assert claim.attempt == 1


async def test_release_stale_frees_leases_of_gone_owners(journal: SqliteJournal) -> None:
    await journal.append(raw(b"1"), "k1")
    await journal.append(raw(b"2"), "k2")
    await journal.claim("gone", 1, lease_seconds=600)
    await journal.claim("alive", 1, lease_seconds=600)
    assert await journal.release_stale(lambda owner: owner == "gone") == 1
    [claim] = await journal.claim("new", 5, lease_seconds=60)
    assert claim.attempt == 2


async def test_acknowledged_appends_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path).open()
    d = raw(b"payload")
    await j.append(d, "k")
    await j.close()
    reopened = SqliteJournal(path).open()
    try:
        assert await reopened.get_raw(d.delivery_id) == d
    finally:
        await reopened.close()


async def test_locked_database_is_unavailable_not_hung(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path, busy_timeout_ms=50).open()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalUnavailable):
            await j.append(raw(), "k")
        with pytest.raises(JournalUnavailable):
            await j.ping()
    finally:
        locker.execute("COMMIT")
        locker.close()
    await j.append(raw(), "k")
    assert (await j.counts())[DeliveryState.PENDING] == 1
    await j.close()


async def test_closed_journal_refuses_work(journal: SqliteJournal) -> None:
    await journal.close()
    with pytest.raises(JournalUnavailable):
        await journal.append(raw(), "k")


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    from receiver.errors import JournalError

    with pytest.raises(JournalError, match=r"journal\.path"):
        SqliteJournal(blocker / "j.db").open()


async def test_a_stalled_commit_fails_waiting_writes_then_lands(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path, busy_timeout_ms=30_000).open()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
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
    locker.execute("COMMIT")
    locker.close()
    # The stalled batch commits once the lock is gone: the sender's retry is a duplicate.
    again = await j.append(raw(b"stalled"), "k")
    assert again.duplicate and again.delivery_id == d.delivery_id
    await j.close()


async def test_prune_deletes_only_old_delivered_ones(journal: SqliteJournal) -> None:
    old_done, old_dead, fresh_done = raw(b"1"), raw(b"2"), raw(b"3")
    old_done = old_done.model_copy(update={"received_at": datetime(2020, 1, 1, tzinfo=UTC)})
    old_dead = old_dead.model_copy(update={"received_at": datetime(2020, 1, 1, tzinfo=UTC)})
    for d, key in ((old_done, "k1"), (old_dead, "k2"), (fresh_done, "k3")):
        await journal.append(d, key)
    claims = {c.delivery.delivery_id: c for c in await journal.claim("w", 10, 60)}
    for done in (old_done, fresh_done):
        [send] = await journal.route(claims[done.delivery_id], "w", [(0, "s")], {"s"}, 60)
        await journal.finish_send(send, "w", Outcome.delivered())
    await journal.finish(claims[old_dead.delivery_id], "w", Outcome.dead("no"))
    assert await journal.prune(datetime(2021, 1, 1, tzinfo=UTC).timestamp()) == 1
    assert await journal.get(old_done.delivery_id) is None
    assert await journal.get(old_dead.delivery_id) is not None
    assert await journal.get(fresh_done.delivery_id) is not None
    # Its dedupe key went with it.
    assert not (await journal.append(raw(b"1"), "k1")).duplicate


async def test_a_journal_from_the_previous_release_opens_with_its_states(
    tmp_path: Path,
) -> None:
    # Version 1 (issue 2): one state per delivery, 'done' meaning every sink had it.
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
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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


# The schema as the previous release (version 2) made it, before sends kept files and codes.
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


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _file_info() -> FileInfo:
    return FileInfo(size=5, sha256="ab" * 32, content_type="application/pdf", filename="a.pdf")


async def test_a_journal_from_release_2_opens_with_its_sends_kept(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_file(path)
    journal = SqliteJournal(path).open()
    try:
        states = {i.delivery_id: i.state for i in await journal.list()}
        assert states == {"a": DeliveryState.DEAD, "b": DeliveryState.PENDING}
        old = {s.sink: s for s in await journal.sends("a")}
        assert (old["x"].state, old["x"].delivered_at) == (SendState.DELIVERED, _at(1.0))
        assert (old["y"].state, old["y"].attempts, old["y"].last_error) == (
            SendState.DEAD,
            3,
            "refused",
        )
        assert (old["y"].code, old["y"].files) == (None, {})
        assert await journal.dead_codes() == {}
        # The new columns work on the old rows.
        [claim] = await journal.claim_sends("w", {"x": 5}, 60)
        assert (claim.send_id, claim.attempt, claim.files) == (3, 2, {})
        assert await journal.record_file(claim, "w", "pdf", _file_info())
        await journal.finish_send(claim, "w", Outcome.dead("expired", code="link_expired"))
        assert await journal.dead_codes() == {"link_expired": 1}
    finally:
        await journal.close()
    # Opening it again migrates nothing twice, and what was recorded is there.
    again = SqliteJournal(path).open()
    try:
        [send] = await again.sends("b")
        assert (send.code, send.files) == ("link_expired", {"pdf": _file_info()})
    finally:
        await again.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    db.close()


async def test_recorded_files_are_stored_as_json_by_role(journal: SqliteJournal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    [send] = await journal.route(claim, "w", [(0, "s")], {"s"}, 60)
    info = _file_info()
    # Recorded at once from several transfers: one batch, none lost.
    recorded = await asyncio.gather(
        *(journal.record_file(send, "w", role, info) for role in ("pdf", "xml", 'odd."role'))
    )
    assert recorded == [True, True, True]
    db = sqlite3.connect(journal.path)
    [(stored,)] = db.execute("SELECT files FROM sends WHERE id = ?", (send.send_id,))
    db.close()
    assert json.loads(stored) == dict.fromkeys(("pdf", "xml", 'odd."role'), info.model_dump())


async def test_renewing_many_leases_at_once(journal: SqliteJournal) -> None:
    d = raw()
    await journal.append(d, "k")
    [claim] = await journal.claim("w", 1, 60)
    sends = await journal.route(claim, "w", [(i, "s") for i in range(50)], {"s"}, 60)
    ids = [s.send_id for s in sends]
    # Ids past SQLite's limit on bound variables (unknown ones count for nothing).
    many = [*ids, *range(10**6, 10**6 + 40_000)]
    assert await journal.renew_sends("w", many, 60) == 50
