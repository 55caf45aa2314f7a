"""What the console's overview costs to draw (it refreshes every 15 s while open): each query
through the operator service, p50/p99, over a journal of N routed events (default 200,000),
all received within the windows, on SQLite or PostgreSQL.

    python bench/console_overview.py [--events 200000] [--runs 10] [--engine sqlite|postgres]

Side by side, measured in the same run on the same journal: the events listing's first page
with its total count (``GET /admin/api/events``), the costliest query the API already makes.
Rows are written as ``operator_list.py`` writes them (one event and one send per delivery,
1 in 1000 dead, a batch per 100 events), each delivered send with its delivery time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import work_folder
from operator_list import close_journal, fill, open_journal

from receiver.journal.dialect import Tx
from receiver.operator import Operator, query_from


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    await call()  # warm
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))]


async def run(args: argparse.Namespace) -> None:
    folder = work_folder("hookdock-bench-overview-")
    journal, pg = open_journal(args.engine, args.dsn, folder)
    try:
        began = time.perf_counter()
        await fill(journal, args.events)
        for low in range(0, args.events + 1, 20_000):  # chunks: under the statement timeout

            def delivered(tx: Tx, low: int = low) -> None:
                tx.execute(
                    "UPDATE sends SET delivered_at = updated_at"
                    " WHERE state = 'delivered' AND id > ? AND id <= ?",
                    (low, low + 20_000),
                )

            await journal._write(delivered)
        print(f"{args.engine}: {args.events:,} events in {time.perf_counter() - began:.0f} s")
        ops = Operator(journal, {"archive": "local"})

        async def overview() -> None:
            await ops.activity("6h")
            await ops.sinks()
            await ops.dead_groups()
            await ops.pollers()
            await ops.batches()

        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("reference: events page 1 with totalCount", lambda: ops.events(query_from({}))),
            ("activity 6h (per minute)", lambda: ops.activity("6h")),
            ("activity 7d (per hour)", lambda: ops.activity("7d")),
            ("batches (last 7 days)", ops.batches),
            ("dead letters per sink and code", ops.dead_groups),
            ("sinks", ops.sinks),
            ("the whole overview (6h)", overview),
        ]
        print(f"{'query':44} {'p50 ms':>8} {'p99 ms':>8}")
        for name, call in cases:
            p50, p99 = await timed(args.runs, call)
            print(f"{name:44} {p50:8.1f} {p99:8.1f}")
    finally:
        await close_journal(journal, folder, pg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
