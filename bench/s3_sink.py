"""The S3 sink vs a bare aiobotocore put_object loop: events/s at the same concurrency.

Starts moto in server mode (``python -m moto.server``) as a subprocess on 127.0.0.1, then
alternates, ``--rounds`` times, two runs against it, each into a fresh bucket:

  bare   one aiobotocore client (the sink's settings: pool of 32, standard retries), a put
         per event of the exact bytes and key the sink would write, nothing else
  sink   ``S3Sink.deliver`` per event: key template, JSON serialization, metadata, and the
         conditional put (``If-None-Match: *``) unless ``--no-conditional``

Both run ``--concurrency`` workers (default 32) over ``--events`` distinct events (default
2000; ~3 KB SmartDocumentor text documents, each with its own taskId), stopping early at
``--time-limit`` seconds, after a short unmeasured warm-up.  After each run the bucket is
listed to check that every put is there.  Prints each run, then a table and the ratio of the
median events/s, sink/bare (the aim is at least 0.8).

    python bench/s3_sink.py                       # 3 rounds of 2000 events at concurrency 32
    python bench/s3_sink.py --events 5000 --rounds 5

Needs aiobotocore and moto[server] (pip install -e '.[test]').  A benchmark, not a test: it
asserts nothing about the figures.  moto is the store here, so the absolute numbers say more
about moto than about S3; the ratio is what the sink costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from common import HOST, Server, bench_events, free_port, percentile, table, work_folder

from handlers.event import Event
from handlers.sinks.s3 import S3Sink, S3SinkConfig, metadata

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CREDENTIALS = {"access_key_id": "bench", "secret_access_key": "bench"}


@dataclass
class Run:
    name: str
    round_no: int
    events: int
    seconds: float
    latencies_ms: list[float]
    stored: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def sink_config(url: str, bucket: str, conditional: bool, concurrency: int) -> S3SinkConfig:
    return S3SinkConfig.model_validate(
        {
            "bucket": bucket,
            "endpoint_url": url,
            "region": "us-east-1",
            "conditional_put": conditional,
            "max_connections": concurrency,
            **CREDENTIALS,
        }
    )


def bare_client(url: str, concurrency: int) -> AbstractAsyncContextManager[S3Client]:
    """What ``S3Sink`` makes for the same config: pool size, retries, timeouts."""
    config = AioConfig(
        s3={"addressing_style": "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10.0,
        read_timeout=30.0,
        max_pool_connections=concurrency,
    )
    return AioSession().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
        config=config,
    )


async def drive(
    items: int, concurrency: int, time_limit: float, one: Callable[[int], Awaitable[None]]
) -> tuple[int, float, list[float]]:
    """Run ``one(i)`` for i < items with ``concurrency`` workers; stop starting new ones at
    ``time_limit``.  Returns how many were done, the seconds taken and each one's latency."""
    next_index = 0
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + time_limit

    async def worker() -> None:
        nonlocal next_index
        while next_index < items and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - start, latencies


async def count_objects(client: S3Client, bucket: str) -> int:
    total = 0
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += len(page.get("Contents", []))
    return total


async def one_run(
    args: argparse.Namespace, name: str, round_no: int, url: str, admin: S3Client
) -> Run:
    bucket = f"bench-{name}-{round_no}-{secrets.token_hex(3)}"
    await admin.create_bucket(Bucket=bucket)
    tag = secrets.token_hex(4)
    events = bench_events(args.events + args.warmup, args.body_bytes, tag)
    warm, measured = events[: args.warmup], events[args.warmup :]
    sink = S3Sink(sink_config(url, bucket, not args.no_conditional, args.concurrency))
    stack = AsyncExitStack()
    c, limit = args.concurrency, args.time_limit
    try:
        if name == "sink":

            async def put_sink(batch: list[Event], i: int) -> None:
                await sink.deliver(batch[i])

            await drive(len(warm), c, limit, lambda i: put_sink(warm, i))
            done, seconds, lat = await drive(
                len(measured), c, limit, lambda i: put_sink(measured, i)
            )
        else:
            # A client of its own with the sink's settings; the bytes and keys the sink would
            # write are made before the clock starts.
            client = await stack.enter_async_context(bare_client(url, args.concurrency))
            content_type = sink.config.content_type

            def prepared(batch: list[Event]) -> list[tuple[str, bytes, dict[str, str]]]:
                return [
                    (sink.key_for(e), e.model_dump_json(indent=2).encode(), metadata(e))
                    for e in batch
                ]

            async def put_bare(batch: list[tuple[str, bytes, dict[str, str]]], i: int) -> None:
                key, body, meta = batch[i]
                await client.put_object(
                    Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=meta
                )

            warm_p, measured_p = prepared(warm), prepared(measured)
            await drive(len(warm_p), c, limit, lambda i: put_bare(warm_p, i))
            done, seconds, lat = await drive(
                len(measured_p), c, limit, lambda i: put_bare(measured_p, i)
            )
        stored = await count_objects(admin, bucket)
    finally:
        await sink.aclose()
        await stack.aclose()
    return Run(name, round_no, done, seconds, sorted(lat), stored - len(warm))


async def bench(args: argparse.Namespace, url: str) -> list[Run]:
    admin_sink = S3Sink(sink_config(url, "bench-admin", True, 4))
    admin = await admin_sink.client()
    runs: list[Run] = []
    try:
        for round_no in range(1, args.rounds + 1):
            for name in ("bare", "sink"):
                run = await one_run(args, name, round_no, url, admin)
                runs.append(run)
                print(
                    f"  round {round_no} {name:4}  {run.rate:7.0f} events/s"
                    f"  {run.events} in {run.seconds:.2f} s"
                    f"  p50 {percentile(run.latencies_ms, 50):6.1f} ms"
                    f"  p99 {percentile(run.latencies_ms, 99):6.1f} ms"
                    f"  stored {run.stored}",
                    flush=True,
                )
    finally:
        await admin_sink.aclose()
    return runs


def report(runs: list[Run]) -> str:
    rows = [
        [
            r.name,
            str(r.round_no),
            f"{r.rate:.0f}",
            f"{percentile(r.latencies_ms, 50):.1f}",
            f"{percentile(r.latencies_ms, 99):.1f}",
            str(r.events),
            str(r.stored),
        ]
        for r in runs
    ]
    headers = ["run", "round", "events/s", "p50 ms", "p99 ms", "events", "stored"]
    lines = [table(headers, rows), ""]
    medians = {}
    for name in ("bare", "sink"):
        rates = [r.rate for r in runs if r.name == name]
        if rates:
            medians[name] = statistics.median(rates)
            lines.append(f"median {name}: {medians[name]:.0f} events/s over {len(rates)} run(s)")
    if medians.get("bare"):
        ratio = medians.get("sink", 0.0) / medians["bare"]
        lines.append(f"sink/bare throughput ratio: {ratio:.2f} (aim: >= 0.80)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured first (default 100)")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="workers (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="bare/sink pairs (default 3)")
    parser.add_argument(
        "--time-limit", type=float, default=60.0, help="seconds per run at most (default 60)"
    )
    parser.add_argument("--body-bytes", type=int, default=3072, help="payload size (default 3072)")
    parser.add_argument(
        "--no-conditional", action="store_true", help="sink without If-None-Match: *"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()

    # Nothing but the moto server on 127.0.0.1: no AWS config files, no instance metadata.
    os.environ.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    work = work_folder("hookdock-bench-s3-")
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    sample = bench_events(1, args.body_bytes, "size")[0]
    print(
        f"moto server on {HOST}; concurrency {args.concurrency}, {args.events} events per run"
        f" (+{args.warmup} warm-up), object {len(sample.model_dump_json(indent=2))} bytes,"
        f" conditional put {'off' if args.no_conditional else 'on'}, rounds {args.rounds}",
        flush=True,
    )
    try:
        with Server("moto", argv, port=port, ready_path="/moto-api/", log_dir=work) as server:
            runs = asyncio.run(bench(args, server.base_url))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
