"""How fast the dispatcher drains a backlog, each figure beside its ceiling from the same run.

Two comparisons, on SQLite and on PostgreSQL:

  null sink   ``hookdock serve`` (dispatcher off) ingests N requests from 32 concurrent HTTP
              clients: the *ingest* rate of the process.  Then ``hookdock worker`` drains those
              N deliveries into a sink that does nothing: the *drain* rate (first routing
              attempt to last delivered send, on the journal's clock).  Aim: drain >= 0.8 of
              ingest.
  folder      N deliveries are appended through the journal, then ``hookdock worker`` drains
              them into the ``local`` sink (``fsync`` on, then off), against a plain Python
              loop writing the same files (same bytes, same folders) atomically with the same
              durability: temp file, write, fsync, rename, fsync of the folder (no fsyncs when
              off).  Aim: sink >= 0.8 of the loop.

    python bench/drain.py                       # 5000 deliveries, both engines, all rows
    python bench/drain.py -n 2000 --engines sqlite --only folder
    python bench/drain.py --engines postgres --only null --workers 2

``--workers N`` drains with N ``hookdock worker`` processes on the same journal (the ceilings
stay those of one process).

A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import aiohttp
from common import (
    HOST,
    NULL_SINK,
    BodyTemplate,
    HookdockSetup,
    PgTarget,
    bench_events,
    body_template,
    create_cost_us,
    drop_pg_schema,
    free_port,
    hookdock_server,
    new_pg_target,
    pg_dsn,
    pg_problem,
    table,
    work_folder,
    write_config,
)
from journal_scale import Dispatch, measure_dispatch

from handlers.templates import EventTemplate

FOLDER_TEMPLATE = "{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json"
"""The local sink's default path template: one folder per task, as the sink writes them."""


async def post_all(url: str, template: BodyTemplate, n: int, concurrency: int) -> float:
    """POST ``n`` distinct bodies over ``concurrency`` connections; seconds taken."""
    tag = secrets.token_hex(4)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    failed = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = template.body(f"{tag}-aaaa-4000-8000-{i:012x}")
            headers = {"content-type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                failed += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    if failed:
        print(f"    {failed} of {n} POSTs were not answered 200", file=sys.stderr)
    return seconds


def ingest_rate(setup: HookdockSetup, work: Path, n: int) -> float:
    template = body_template()
    with hookdock_server(setup, free_port(), work) as server:
        url = f"http://{HOST}:{server.port}{setup.hook_path}"
        asyncio.run(post_all(url, template, 200, 32))  # warm-up
        seconds = asyncio.run(post_all(url, template, n, 32))
    return n / seconds


def plain_loop(root: Path, n: int, fsync: bool) -> float:
    """Events/s of the plainest atomic writer of the files the sink writes."""
    events = bench_events(n)
    template = EventTemplate(FOLDER_TEMPLATE, sink="bench")
    started = time.perf_counter()
    for event in events:
        target = root / template.render(event)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = event.to_json(indent=True)
        temp = target.with_name(f".{target.name}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        if fsync:
            folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    return n / (time.perf_counter() - started)


def _rate(d: Dispatch) -> str:
    return "-" if d.rate is None else f"{d.rate:.0f}"


def _cpu(d: Dispatch) -> str:
    return (
        "-" if not d.cpu_seconds or not d.delivered else f"{d.cpu_seconds * 1e6 / d.delivered:.0f}"
    )


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def run_engine(engine: str, args: argparse.Namespace, work: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    template = body_template()
    by = f", {args.workers} workers" if args.workers > 1 else ""

    def setup_for(name: str, **kw: object) -> tuple[HookdockSetup, PgTarget | None]:
        pg = new_pg_target(pg_dsn(args.dsn), "drain") if engine == "postgres" else None
        directory = work / f"{engine}-{name}-{secrets.token_hex(3)}"
        return write_config(directory, dispatcher=False, pg=pg, **kw), pg  # type: ignore[arg-type]

    if args.only in (None, "null"):
        setup, pg = setup_for("null", sink_type=NULL_SINK)
        try:
            ingest = ingest_rate(setup, work, args.deliveries)
            drain = measure_dispatch(
                setup, args.deliveries, template, work, args.timeout, args.workers
            )
        finally:
            if pg is not None:
                drop_pg_schema(pg)
        ratio = _ratio(drain.rate, ingest)
        rows.append(
            [
                engine,
                f"null sink drain{by}",
                _rate(drain),
                _cpu(drain),
                "ingest",
                f"{ingest:.0f}",
                ratio,
            ]
        )
        print(
            f"  {engine}: null sink {_rate(drain)}/s ({_cpu(drain)} µs CPU each),"
            f" ingest {ingest:.0f}/s",
            flush=True,
        )
    if args.only in (None, "folder"):
        for fsync in (True, False):
            setup, pg = setup_for("folder", sink_options=f"fsync = {str(fsync).lower()}\n")
            try:
                drain = measure_dispatch(
                    setup, args.deliveries, template, work, args.timeout, args.workers
                )
            finally:
                if pg is not None:
                    drop_pg_schema(pg)
            loop_root = work / f"loop-{secrets.token_hex(3)}"
            create_cost = create_cost_us(loop_root / "create-probe")
            ceiling = plain_loop(loop_root, args.deliveries, fsync)
            # Left until the end, with the rest of ``work``: on a journal-less ext4 deleting
            # its files now would make the next drain's creations dearer (``work_folder``).
            what = f"folder sink, fsync {'on' if fsync else 'off'}{by}"
            ratio = _ratio(drain.rate, ceiling)
            rows.append(
                [
                    engine,
                    what,
                    _rate(drain),
                    _cpu(drain),
                    "atomic-write loop",
                    f"{ceiling:.0f}",
                    ratio,
                ]
            )
            print(
                f"  {engine}: {what} {_rate(drain)}/s ({_cpu(drain)} µs CPU each),"
                f" loop {ceiling:.0f}/s (a folder and a file made there: {create_cost:.0f} µs CPU)",
                flush=True,
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--deliveries", type=int, default=5000, help="(default 5000)")
    parser.add_argument("--engines", default="sqlite,postgres", help="(default both)")
    parser.add_argument("--only", choices=("null", "folder"), help="one comparison only")
    parser.add_argument("--timeout", type=float, default=120.0, help="per drain (default 120 s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $HOOKDOCK_TEST_PG_DSN or local)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "postgres" in engines and (problem := pg_problem(pg_dsn(args.dsn))) is not None:
        print(f"PostgreSQL is not reachable ({problem}): leaving it out", file=sys.stderr)
        engines.remove("postgres")
    work = work_folder("hookdock-bench-drain-")
    rows: list[list[str]] = []
    try:
        for engine in engines:
            rows += run_engine(engine, args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ndrain of {args.deliveries} deliveries (events/s), each beside its ceiling:\n")
    headers = [
        "journal",
        "measure",
        "events/s",
        "worker CPU µs/event",
        "ceiling",
        "ceiling/s",
        "ratio",
    ]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
