"""The HTTP sink against a bare aiohttp POST loop (and httpx): events/s at fixed concurrency.

Starts a fast receiver as a subprocess on 127.0.0.1 (this script with ``--serve``: uvicorn with
uvloop and httptools, a bare ASGI app that reads the body and answers 204), then, in this
process and on uvloop as ``hookdock serve`` runs, alternates for ``--rounds``:

  bare    one shared aiohttp ClientSession (same pool size as the sink) POSTing the same-sized
          body with a content type, nothing else
  signed  the same loop, but each request serializes its event (Event.to_json) and signs it
          (Standard Webhooks headers): the work any signing sink must do, without the sink
  sink    HttpSink.deliver on distinct events: JSON serialization, Standard Webhooks signing,
          status classification, the in-flight join
  httpx   (unless --no-httpx) one httpx.AsyncClient, same pool size, the same body

each with ``--concurrency`` workers (default 32) for ``--events`` requests (default 20000) or
``--max-seconds`` (default 30), after ``--warmup`` requests on the same client.  The body is
the normalized event of a ~3 KB SmartDocumentor text document (tests/sd_payloads.py).  Prints
one line per run, a table with medians and the ratios sink/bare (the aim: at least 0.8) and
sink/signed (what the sink itself adds).  Client and server CPU (from /proc, Linux) show which
side was the bottleneck; client CPU per event is the steadier figure on a shared machine.

    python bench/http_sink.py
    python bench/http_sink.py --rounds 5 --events 40000 --concurrency 64

A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from common import BENCH_DIR, HOST, Server, bench_events, free_port, percentile, table, work_folder

from handlers.event import Event
from handlers.signing import standard_webhook_v1
from handlers.sinks.http import HttpSink, HttpSinkConfig

PATH = "/events"


# ---------------------------------------------------------------- the receiver (--serve)


async def receiver_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers 204 (GET: 200 ``ok``, for the readiness probe)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    get = scope["method"] == "GET"
    await send({"type": "http.response.start", "status": 200 if get else 204, "headers": []})
    await send({"type": "http.response.body", "body": b"ok" if get else b""})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        receiver_app,
        host=HOST,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=2048,
    )


# ---------------------------------------------------------------- load


@dataclass
class Run:
    client: str
    round_no: int
    done: int
    errors: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Client CPU per event: steadier than events/s on a machine shared with others."""
        return self.client_cpu * self.seconds / self.done * 1e6 if self.done else float("nan")


def server_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    send: Callable[[int], Awaitable[None]], count: int, concurrency: int, max_seconds: float
) -> tuple[int, int, float, list[float]]:
    """``send(i)`` for i in range(count) from ``concurrency`` workers; (done, errors, s, lat)."""
    next_index = 0
    done = errors = 0
    latencies: list[float] = []
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal next_index, done, errors
        while next_index < count and time.monotonic() < deadline:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                await send(index)
            except Exception:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors, time.perf_counter() - started, latencies


async def measure(
    name: str, args: argparse.Namespace, url: str, events: list[Event], server_pid: int
) -> tuple[int, int, float, float, float | None, list[float]]:
    body = events[0].model_dump_json().encode()
    headers = {"content-type": "application/json"}
    pool = 100  # the sink's default max_connections, for every client alike
    closers: list[Callable[[], Awaitable[None]]] = []
    send: Callable[[int], Awaitable[None]]
    if name == "sink":
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        # The receiver is on 127.0.0.1, which the sink's SSRF guard refuses unless opted in.
        config = HttpSinkConfig(
            url=url, secret=secret, max_connections=pool, allow_networks=(f"{HOST}/32",)
        )
        sink = HttpSink(config)
        closers.append(sink.aclose)

        async def send(i: int) -> None:
            await sink.deliver(events[i % len(events)])

    elif name in ("bare", "signed"):
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=30)  # aiohttp's default
        if args.same_timeouts:
            # The sink's defaults: a read timer per request is part of what it must do.
            timeout = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=30)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool), timeout=timeout)
        closers.append(session.close)
        key = secrets.token_bytes(32)
        signed = name == "signed"

        async def send(i: int) -> None:
            data, sent = body, headers
            if signed:
                # The work any signing sink must do per event, without the sink around it.
                event = events[i % len(events)]
                data = event.to_json()
                stamp = int(time.time())
                sent = {
                    **headers,
                    "webhook-id": event.event_id,
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": standard_webhook_v1(key, event.event_id, stamp, data),
                }
            async with session.post(url, data=data, headers=sent) as response:
                await response.read()
                if response.status >= 300:
                    raise RuntimeError(response.status)

    else:
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        client = httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False)
        closers.append(client.aclose)

        async def send(i: int) -> None:
            response = await client.post(url, content=body, headers=headers)
            if response.status_code >= 300:
                raise RuntimeError(response.status_code)

    try:
        # Warm-up on the same client: connections opened, code paths hot.  Its events are
        # the last ones of the list, the measured run starts at the first.
        warm = args.warmup

        async def warm_send(i: int) -> None:
            await send(len(events) - 1 - i)

        await drive(warm_send, warm, args.concurrency, args.max_seconds)
        cpu0, srv0 = time.process_time(), server_cpu_seconds(server_pid)
        done, errors, seconds, latencies = await drive(
            send, args.events, args.concurrency, args.max_seconds
        )
        cpu1, srv1 = time.process_time(), server_cpu_seconds(server_pid)
    finally:
        for close in closers:
            await close()
    server_cpu = None if srv0 is None or srv1 is None else (srv1 - srv0) / seconds
    return done, errors, seconds, (cpu1 - cpu0) / seconds, server_cpu, latencies


async def bench(args: argparse.Namespace, url: str, server_pid: int) -> list[Run]:
    events = bench_events(args.events + args.warmup, args.body_bytes)
    names = ["bare", "signed", "sink"] + ([] if args.no_httpx else ["httpx"])
    print(
        f"{args.events} events per run, concurrency {args.concurrency}, warm-up {args.warmup},"
        f" rounds {args.rounds}; body {len(events[0].model_dump_json())} bytes;"
        f" loop {type(asyncio.get_running_loop()).__module__}",
        flush=True,
    )
    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        for name in names:
            done, errors, seconds, cpu, srv, lat = await measure(
                name, args, url, events, server_pid
            )
            run = Run(name, round_no, done, errors, seconds, cpu, srv, sorted(lat))
            runs.append(run)
            print(
                f"  round {round_no} {name:5}  {run.rate:8.0f} events/s  {done} in {seconds:.2f} s"
                f"  errors {errors}  client CPU {cpu:.0%} ({run.cpu_us:.0f} us/event)"
                f"  server CPU {_pct(srv)}",
                flush=True,
            )
    return runs


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def report(runs: list[Run]) -> str:
    headers = ["client", "round", "events/s", "p50 ms", "p99 ms", "events", "errors"]
    headers += ["client CPU", "client CPU us/event", "server CPU"]
    rows = [
        [
            r.client,
            str(r.round_no),
            f"{r.rate:.0f}",
            f"{percentile(r.latencies_ms, 50):.2f}",
            f"{percentile(r.latencies_ms, 99):.2f}",
            str(r.done),
            str(r.errors),
            _pct(r.client_cpu),
            f"{r.cpu_us:.0f}",
            _pct(r.server_cpu),
        ]
        for r in runs
    ]
    medians = {
        name: statistics.median(r.rate for r in runs if r.client == name)
        for name in dict.fromkeys(r.client for r in runs)
    }
    lines = [table(headers, rows), ""]
    cpu = {name: statistics.median(r.cpu_us for r in runs if r.client == name) for name in medians}
    lines.append(
        "medians: "
        + ", ".join(f"{k} {v:.0f} events/s ({cpu[k]:.0f} us CPU/event)" for k, v in medians.items())
    )
    bare = medians.get("bare") or float("nan")
    lines.append(f"sink/bare ratio: {medians['sink'] / bare:.2f}  (aim: >= 0.80)")
    lines.append(
        f"sink/signed ratio: {medians['sink'] / medians['signed']:.2f}  (the sink's own cost"
        " beyond serializing and signing)"
    )
    if "httpx" in medians:
        lines.append(f"httpx/bare ratio: {medians['httpx'] / bare:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="per run (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="workers (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--warmup", type=int, default=1000, help="requests before each run")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cap per run (30)")
    parser.add_argument("--body-bytes", type=int, default=3072, help="payload size (3072)")
    parser.add_argument("--no-httpx", action="store_true", help="leave out the httpx column")
    parser.add_argument(
        "--same-timeouts",
        action="store_true",
        help="give the bare and signed loops the sink's connect/read/total timeouts",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return 0

    work = work_folder("hookdock-bench-http-")
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "http_sink.py"), "--serve", "--port", str(port)]
    try:
        with Server("receiver", argv, port=port, ready_path="/healthz", log_dir=work) as server:
            assert server.proc is not None
            url = f"{server.base_url}{PATH}"
            coro = bench(args, url, server.proc.pid)
            if args.loop == "uvloop" and importlib.util.find_spec("uvloop"):
                import uvloop

                runs = uvloop.run(coro)
            else:
                runs = asyncio.run(coro)
    finally:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    print()
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
