"""What only the PostgreSQL journal does: several journals (processes, replicas) on one
database at once, the database's clock, connection errors, and ``hookdock journal copy``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from handlers.event import RawDelivery
from receiver.cli import main
from receiver.journal import (
    DeliveryState,
    JournalError,
    Outcome,
    PostgresConfig,
    SqliteJournal,
    make_journal,
)
from receiver.journal.postgres import PostgresJournal
from tests.conftest import to_toml
from tests.journal.contract import FUTURE, event, file_info, raw

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def journals(pg_dsn: str, pg_schema: str) -> AsyncIterator[Callable[[], PostgresJournal]]:
    """Opens journals on the test's schema, each with connections of its own (as two
    processes would have); all closed afterwards."""
    opened: list[PostgresJournal] = []

    def make() -> PostgresJournal:
        journal = PostgresJournal(pg_dsn, schema=pg_schema).open()
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        await journal.close()


async def test_the_same_dedupe_key_at_once_from_two_journals_is_one_delivery(
    journals: Callable[[], PostgresJournal],
) -> None:
    one, two = journals(), journals()
    for i in range(20):
        a, b = raw(b"same"), raw(b"same")
        first, second = await asyncio.gather(one.append(a, f"k{i}"), two.append(b, f"k{i}"))
        assert first.delivery_id == second.delivery_id
        assert sorted([first.duplicate, second.duplicate]) == [False, True]
        assert first.delivery_id in {a.delivery_id, b.delivery_id}
    assert (await one.counts())[DeliveryState.PENDING] == 20


async def test_concurrent_claims_never_hand_one_delivery_to_two_journals(
    journals: Callable[[], PostgresJournal],
) -> None:
    one, two = journals(), journals()
    await asyncio.gather(*(one.append(raw(str(i).encode()), f"k{i}") for i in range(300)))

    async def drain(journal: PostgresJournal, owner: str) -> list[str]:
        got: list[str] = []
        for _ in range(300):  # bounded: each round takes at least one, until none is left
            claims = await journal.claim(owner, 7, 60)
            if not claims:
                break
            got += [c.delivery.delivery_id for c in claims]
        return got

    mine, theirs = await asyncio.gather(drain(one, "one"), drain(two, "two"))
    assert not set(mine) & set(theirs)
    assert len(mine) + len(theirs) == len(set(mine) | set(theirs)) == 300
    assert mine and theirs, "both claimed at the same time (neither waited for the other)"


async def test_concurrent_send_claims_never_hand_one_send_to_two_journals(
    journals: Callable[[], PostgresJournal],
) -> None:
    one, two = journals(), journals()
    d = raw()
    await one.append(d, "k")
    [claim] = await one.claim("w", 1, 60)
    pairs = [(event(d, i), sink) for i in range(150) for sink in ("a", "b")]
    assert await one.route(claim, "w", pairs, set(), 60) == []

    async def drain(journal: PostgresJournal, owner: str) -> list[int]:
        got: list[int] = []
        for _ in range(300):
            claims = await journal.claim_sends(owner, {"a": 5, "b": 3}, 60)
            if not claims:
                break
            got += [c.send_id for c in claims]
        return got

    mine, theirs = await asyncio.gather(drain(one, "one"), drain(two, "two"))
    assert not set(mine) & set(theirs)
    assert len(mine) + len(theirs) == len(set(mine) | set(theirs)) == 300
    assert mine and theirs


async def test_leases_are_compared_on_the_database_clock(
    journals: Callable[[], PostgresJournal],
) -> None:
    honest, skewed = journals(), journals()
    # A replica whose clock runs an hour ahead: had it used its own clock, every lease would
    # look lapsed to it, and every due time reached.
    skewed._committer._clock = lambda: time.time() + 3600
    d = raw()
    await honest.append(d, "k")
    [claim] = await honest.claim("honest", 1, 60)
    assert await skewed.claim("skewed", 1, 60) == []
    [send] = await honest.route(claim, "honest", [(event(d), "a")], {"a"}, 60)
    assert await skewed.claim_sends("skewed", {"a": 1}, 60) == []
    await honest.finish_send(send, "honest", Outcome.retry("busy", at=time.time() + 600))
    assert await skewed.claim_sends("skewed", {"a": 1}, 60) == [], "not due on the database"
    # Its own leases run on the database's clock too.
    other = raw(b"other")
    await skewed.append(other, "k2")
    [mine] = await skewed.claim("skewed", 1, 60)
    assert mine.delivery == other
    assert abs(mine.claimed_at - time.time()) < 60
    assert await honest.claim("honest", 1, 60) == []


async def test_an_unreachable_database_is_a_clear_error_without_the_password() -> None:
    dsn = "postgresql://hookdock:s3cret-Pa55@127.0.0.1:1/hookdock"
    for journal in (
        PostgresJournal(dsn, connect_timeout_seconds=1),
        make_journal(
            PostgresConfig.model_validate(
                {"type": "postgres", "dsn": dsn, "connect_timeout_seconds": 1}
            )
        ),
    ):
        started = time.monotonic()
        with pytest.raises(JournalError) as refused:
            journal.open()
        assert time.monotonic() - started < 10
        message = str(refused.value)
        assert "127.0.0.1:1" in message and "journal.dsn" in message, message
        assert "s3cret-Pa55" not in message
        assert "s3cret-Pa55" not in repr(refused.value)
        await journal.close()


def test_a_schema_name_must_be_plain() -> None:
    with pytest.raises(JournalError, match=r"journal\.schema"):
        PostgresJournal("postgresql://127.0.0.1:1/x", schema='x"; DROP TABLE deliveries; --')


# --------------------------------------------------------------------------- journal copy


async def _populate(path: Path) -> dict[str, int]:
    """A SQLite journal with something of everything; the send ids it made, by sink."""
    journal = SqliteJournal(path).open()
    try:
        ids: dict[str, int] = {}
        unrouted = raw(b"unrouted")
        await journal.append(unrouted, "unrouted")
        for n in range(3):
            d = raw(f"delivery {n}".encode())
            await journal.append(d, d.delivery_id)
        claims = await journal.claim("w", 10, 60)
        await journal.release("w", [unrouted.delivery_id])
        dead, *rest = [c for c in claims if c.delivery != unrouted]
        await journal.finish(dead, "w", Outcome.dead("taskId missing"))
        first, second = rest
        e = event(first.delivery)
        sends = await journal.route(
            first, "w", [(e, "exports"), (e, "hook"), (e, "s3")], {"exports", "hook"}, 60
        )
        by_sink = {s.sink: s for s in sends}
        await journal.finish_send(by_sink["exports"], "w", Outcome.delivered())
        assert await journal.record_file(by_sink["hook"], "w", "pdf", file_info("a.pdf", 2048))
        await journal.finish_send(
            by_sink["hook"], "w", Outcome.dead("the link expired", code="link_expired")
        )
        await journal.route(second, "w", [(event(second.delivery, 0), "s3")], set(), 60)
        [s3] = await journal.claim_sends("w", {"s3": 1}, 60)
        await journal.finish_send(s3, "w", Outcome.retry("slow down", at=FUTURE, code="throttled"))
        await journal.stop_sink("s3", "410 Gone")
        for info in await journal.sends(first.delivery.delivery_id):
            ids[info.sink] = info.send_id
        return ids
    finally:
        await journal.close()


async def _snapshot(journal: SqliteJournal | PostgresJournal) -> dict[str, Any]:
    """Everything an operator can read of a journal."""
    listed = await journal.list()
    return {
        "counts": await journal.counts(),
        "list": listed,
        "sends": {i.delivery_id: await journal.sends(i.delivery_id) for i in listed},
        "raw": {i.delivery_id: await journal.get_raw(i.delivery_id) for i in listed},
        "sinks": await journal.sink_counts(),
        "codes": await journal.dead_codes(),
        "stopped": await journal.stopped_sinks(),
    }


async def _raw(journal: PostgresJournal, delivery_id: str) -> RawDelivery:
    found = await journal.get_raw(delivery_id)
    assert found is not None
    return found


def _copy(config: Path, dsn: str, schema: str) -> int:
    return main(["journal", "copy", "--to", dsn, "--schema", schema, "--config", str(config)])


async def test_journal_copy_moves_everything_into_an_empty_schema(
    tmp_path: Path, pg_dsn: str, pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.db"
    send_ids = await _populate(path)
    config = tmp_path / "hookdock.toml"
    doc = {
        "journal": {"path": "j.db"},
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
    config.write_text(to_toml(doc), encoding="utf-8")

    assert await asyncio.to_thread(_copy, config, pg_dsn, pg_schema) == 0
    out = capsys.readouterr().out
    assert "deliveries 4" in out and "sends 4" in out and "stopped_sinks 1" in out, out

    source = SqliteJournal(path, create=False).open()
    target = PostgresJournal(pg_dsn, schema=pg_schema).open()
    try:
        before = await _snapshot(source)
        assert await _snapshot(target) == before
        assert before["codes"] == {"link_expired": 1}
        assert [s.sink for s in before["stopped"]] == ["s3"]
        assert before["counts"] == {
            DeliveryState.PENDING: 3,
            DeliveryState.DONE: 0,
            DeliveryState.DEAD: 1,
        }
        # The copied journal carries on: a stopped sink stays stopped, a new send gets a new id.
        assert await target.resume_sink("s3") is True
        d = raw(b"after the copy")
        await target.append(d, "new")
        claims = await target.claim("w", 5, 60)
        assert len(claims) == 2, "the new one, and the one never routed before the copy"
        [claim] = [c for c in claims if c.delivery == d]
        [send] = await target.route(claim, "w", [(event(claim.delivery), "new")], {"new"}, 60)
        assert send.send_id > max(send_ids.values())
        # Of the two sends to s3, one is throttled until 2096; the other comes with its event.
        [due] = await target.claim_sends("w", {"s3": 5}, 60)
        assert (due.attempt, due.event) == (1, event(await _raw(target, due.delivery_id)))
    finally:
        await source.close()
        await target.close()

    # A second copy would merge two journals: refused, and nothing changes.
    assert await asyncio.to_thread(_copy, config, pg_dsn, pg_schema) == 1
    assert "already holds deliveries" in capsys.readouterr().err
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{pg_schema}".deliveries').fetchone()
        assert row is not None and row[0] == 5


async def test_a_failing_job_undoes_only_itself_in_a_batch_without_savepoints(
    journals: Callable[[], PostgresJournal],
) -> None:
    """Batches run without savepoints first; one failing job sends the batch round again with
    them, so the others still commit and the failure is the failing job's alone."""
    journal = journals()

    def good(n: int) -> Callable[[Any], None]:
        def work(tx: Any) -> None:
            tx.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (f"good-{n}",))

        return work

    def bad(tx: Any) -> None:
        tx.execute("SELECT * FROM no_such_table")

    for _ in range(5):  # some rounds land in one batch, whatever the scheduling
        results = await asyncio.gather(
            *(journal._write(good(n)) for n in range(10)),
            journal._write(bad),
            return_exceptions=True,
        )
        assert [isinstance(r, Exception) for r in results] == [False] * 10 + [True]
        assert "no_such_table" in str(results[-1])

        def count(tx: Any) -> int:
            return int(
                tx.execute("SELECT count(*) FROM meta WHERE key LIKE 'good-%'").fetchone()[0]
            )

        assert await journal._write(count) == 10

        def clear(tx: Any) -> None:
            tx.execute("DELETE FROM meta WHERE key LIKE 'good-%'")

        await journal._write(clear)


async def test_the_queue_tables_are_vacuumed_by_dead_rows_not_by_a_share_of_the_table(
    journals: Callable[[], PostgresJournal], pg_dsn: str, pg_schema: str
) -> None:
    journal = journals()
    await journal.append(raw(), "k")  # opened, so migrated

    def options(conn: psycopg.Connection[Any], table: str) -> list[str]:
        row = conn.execute(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (pg_schema, table),
        ).fetchone()
        assert row is not None
        return sorted(row[0] or [])

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        wanted = ["autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=10000"]
        assert options(conn, "deliveries") == options(conn, "sends") == wanted
        assert options(conn, "attempts") == []
        # An operator's own setting is theirs: a journal opened again leaves it.
        conn.execute(
            f'ALTER TABLE "{pg_schema}".sends RESET (autovacuum_vacuum_threshold,'
            " autovacuum_vacuum_scale_factor)"
        )
        conn.execute(f'ALTER TABLE "{pg_schema}".sends SET (autovacuum_vacuum_threshold = 5)')
    again = journals()
    await again.append(raw(b"2"), "k2")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert options(conn, "sends") == ["autovacuum_vacuum_threshold=5"]


async def test_a_role_that_may_not_alter_the_tables_runs_and_says_what_to_ask_for(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    await PostgresJournal(pg_dsn, schema=pg_schema).open().close()  # made by their owner
    role = f"hookdock_dml_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(
            f'ALTER TABLE "{pg_schema}".deliveries'
            " RESET (autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor)"
        )
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO "{role}"')
        admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{pg_schema}" TO "{role}"')
        admin.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{pg_schema}" TO "{role}"')
    try:
        journal = PostgresJournal(make_conninfo(pg_dsn, user=role), schema=pg_schema)
        with caplog.at_level(logging.WARNING, logger="hookdock.journal"):
            journal.open()
        try:
            d = raw()
            assert (await journal.append(d, "k")).delivery_id == d.delivery_id
        finally:
            await journal.close()
        [line] = [r.getMessage() for r in caplog.records if "vacuumed" in r.getMessage()]
        assert line.startswith("journal: deliveries is vacuumed on PostgreSQL's defaults (")
        assert line.endswith(
            "ask its owner to run ALTER TABLE deliveries SET"
            " (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)"
        )
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_free_text_search_goes_through_a_trigram_index(
    journals: Callable[[], PostgresJournal], pg_dsn: str, pg_schema: str
) -> None:
    from receiver.journal.views import EventFilter
    from tests.journal.helpers import accepted

    journal = journals()
    for name in ("Invoice 100.pdf", "Contract 7.pdf"):
        d = raw(name.encode())
        claim = await accepted(journal, d)
        e = event(d).model_copy(update={"display_name": name})
        await journal.route(claim, "w", [(e, "a")], set(), 60)
    found = await journal.events(EventFilter(text="ICE 10"))
    assert [r.display_name for r in found.items] == ["Invoice 100.pdf"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}", public')
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
            (pg_schema, "events_display_trgm"),
        ).fetchone()
        assert index is not None and "gin_trgm_ops" in index[0]
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM events WHERE lower(display_name) LIKE '%ice 10%'"
            )
        )
        assert "events_display_trgm" in plan
