"""The operator's event listing at scale: p50/p99 of a page, first and deep (cursor), with and
without filters, over a journal of N routed events (default 1,000,000), on SQLite (a file in a
temporary folder) or PostgreSQL (a schema of its own, dropped afterwards).

    python bench/operator_list.py [--events 1000000] [--runs 50] [--engine sqlite|postgres]
                                  [--dsn postgresql://postgres@127.0.0.1:5432/test]

Rows are written straight into the tables (the shapes routing writes: one event and one send
to ``archive`` per delivery, 1 in 1000 sends dead; and 1 in 1000 deliveries left without
events, not routable, with a task in their subject), then each query runs ``--runs`` times
through ``Operator.events``, as the API and the CLI call it.

Free text (``q``) is measured as the service runs it, then again without its trigram index
(PostgreSQL's ``events_display_trgm``, SQLite's FTS5 table ``events_text`` with its triggers,
dropped in the same run): the scan it replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from common import PgTarget, drop_pg_schema, new_pg_target, work_folder

from receiver.journal import SqlJournal
from receiver.journal.dialect import Tx
from receiver.operator import Operator, query_from

CHUNK = 5000


def _rows(start: int, count: int, base_ms: int) -> tuple[list[Any], list[Any], list[Any]]:
    deliveries, events, sends = [], [], []
    for i in range(start, start + count):
        ms = base_ms + i  # one a millisecond: ids sort by time, like ingest makes them
        did = f"{ms:012x}{i:014x}"
        received = datetime.fromtimestamp(ms / 1000, UTC).isoformat()
        unroutable = i % 1000 == 3
        deliveries.append(
            (
                did,
                "sd",
                "smartdocumentor.text_document",
                received,
                "application/json",
                b"{}",
                b"{}",
                did,
                f"smartdocumentor:task:task-{i}",
                "dead" if unroutable else "routed",
                1,
                ms / 1000,
                ms / 1000,
            )
        )
        if unroutable:
            continue
        eid = f"{did}-0"
        body = orjson.dumps({"event_id": eid, "delivery_id": did, "task_id": f"task-{i}"})
        events.append(
            (
                eid,
                did,
                0,
                body,
                "sd",
                "smartdocumentor",
                "text_document",
                f"task-{i}",
                f"batch-{i // 100}",
                f"ws-{i % 50}",
                f"ext-{i}",
                f"Invoice {i}.pdf",
            )
        )
        state = "dead" if i % 1000 == 7 else "delivered"
        sends.append((did, 0, eid, "archive", state, 1, ms / 1000, ms / 1000))
    return deliveries, events, sends


async def fill(journal: SqlJournal, n: int) -> None:
    base_ms = int(time.time() * 1000) - n - 60_000
    for start in range(0, n, CHUNK):
        deliveries, events, sends = _rows(start, min(CHUNK, n - start), base_ms)

        def work(tx: Tx, d: Any = deliveries, e: Any = events, s: Any = sends) -> None:
            tx.executemany(
                "INSERT INTO deliveries (id, route, source, received_at, content_type, headers,"
                " body, dedupe_key, subject, state, attempts, next_attempt_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                d,
            )
            tx.executemany(
                "INSERT INTO events (id, delivery_id, position, body, route, vendor, kind,"
                " task_id, batch_id, workspace_id, external_id, display_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                e,
            )
            tx.executemany(
                "INSERT INTO sends (delivery_id, event_index, event_id, sink, state, attempts,"
                " next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                s,
            )

        await journal._write(work)
    if journal.dialect.name == "postgres":
        await journal._write(lambda tx: tx.execute("ANALYZE"))


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float, int]:
    await call()  # warm
    took = []
    found = 0
    for _ in range(runs):
        began = time.perf_counter()
        page = await call()
        took.append((time.perf_counter() - began) * 1000)
        found = len(page.items)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))], found


def _drop_text_index(tx: Tx) -> None:
    """SQLite's FTS5 trigram table and its triggers (``text_index``): listings scan again."""
    from receiver.journal.text_index import TEXT_TABLE

    for trigger in ("insert", "delete", "update"):
        tx.execute(f"DROP TRIGGER IF EXISTS {TEXT_TABLE}_{trigger}")
    tx.execute(f"DROP TABLE IF EXISTS {TEXT_TABLE}")


def open_journal(engine: str, dsn: str, folder: Path) -> tuple[SqlJournal, PgTarget | None]:
    """A fresh journal: a SQLite file in ``folder``, or a schema of its own in PostgreSQL."""
    if engine == "sqlite":
        from receiver.journal.sqlite import SqliteJournal

        return SqliteJournal(folder / "hookdock.db").open(), None
    from receiver.journal.postgres import PostgresJournal

    pg = new_pg_target(dsn, "list")
    return PostgresJournal(pg.dsn, schema=pg.schema).open(), pg


async def close_journal(journal: SqlJournal, folder: Path, pg: PgTarget | None) -> None:
    """Close it and remove what ``open_journal`` made."""
    await journal.close()
    shutil.rmtree(folder, ignore_errors=True)
    if pg is not None:
        drop_pg_schema(pg)


async def run(args: argparse.Namespace) -> None:
    folder = work_folder("hookdock-bench-list-")
    journal, pg = open_journal(args.engine, args.dsn, folder)
    try:
        began = time.perf_counter()
        await fill(journal, args.events)
        print(
            f"{args.engine}: {args.events:,} events written in {time.perf_counter() - began:.0f} s"
        )
        ops = Operator(journal, {"archive": "local"})
        middle = await ops.events(
            query_from({"pageSize": 1, "pageNumber": args.events // 2, "count": False})
        )
        deep = f"{middle.items[0].delivery_id}.0"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("first page, no filter, no count", {"count": False}),
            ("first page, no filter, with totalCount", {}),
            ("deep page (cursor at the middle)", {"cursor": deep, "count": False}),
            ("taskId", {"taskId": f"task-{args.events // 3}"}),
            ("batchId (100 events)", {"batchId": "batch-42"}),
            ("workspaceId (1 in 50), first page", {"workspaceId": "ws-7", "count": False}),
            ("state=dead (1 in 1000), first page", {"state": ["dead"], "count": False}),
            (
                "sink=archive&state=dead, first page",
                {"sink": "archive", "state": ["dead"], "count": False},
            ),
            (
                "since/until (one minute)",
                {
                    "since": datetime.fromtimestamp(
                        int(middle.items[0].delivery_id[:12], 16) / 1000, UTC
                    ).isoformat(),
                    "count": False,
                },
            ),
            ("q common (1 in 90), first page", {"q": "invoice 99", "count": False}),
            ("q common, deep page (cursor)", {"q": "invoice 99", "cursor": deep, "count": False}),
            ("q rare (1 match), first page", {"q": f"invoice {args.events // 3}.", "count": False}),
            (
                "q rare, deep page (cursor)",
                {"q": f"invoice {args.events // 4 + 1}.", "cursor": deep, "count": False},
            ),
            ("taskId of an unroutable delivery", {"taskId": f"task-{args.events // 2 + 3}"}),
        ]
        print(f"{'query':44} {'p50 ms':>8} {'p99 ms':>8} {'rows':>5}")
        for name, params in cases:
            query = query_from({"pageSize": 50, **params})
            p50, p99, rows = await timed(args.runs, partial(ops.events, query))
            print(f"{name:44} {p50:8.1f} {p99:8.1f} {rows:5d}")
        # The same free-text queries without the trigram index: the scan it replaces.
        if args.engine == "postgres":
            await journal._write(lambda tx: tx.execute("DROP INDEX IF EXISTS events_display_trgm"))
        else:
            await journal._write(_drop_text_index)
        for name, params in cases:
            if "q" not in params:
                continue
            query = query_from({"pageSize": 50, **params})
            p50, p99, rows = await timed(args.runs, partial(ops.events, query))
            print(f"{name + ', no trigram index':44} {p50:8.1f} {p99:8.1f} {rows:5d}")
    finally:
        await close_journal(journal, folder, pg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
