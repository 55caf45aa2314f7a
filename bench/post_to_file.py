"""POST-to-file latency at a fixed rate: from sending a webhook to its export file on disk.

Starts ``python -m receiver serve`` on 127.0.0.1 with a temporary config (one url-token route
for SmartDocumentor text documents, the in-process dispatcher, a local folder sink), sends N
requests at a fixed rate from an asyncio client (open loop: request i goes out at
start + i/rate whether or not earlier ones were answered), each a ~3 KB text document with its
own taskId, then waits until every export file exists.

Per request: send time = time.time_ns() right before the POST, and two file times:

  mtime    the export's st_mtime_ns (the local sink writes a temp file, fsyncs it and renames
           it, so the mtime is when the bytes were written, just before the fsyncs and rename)
  inotify  time.time_ns() when inotify reports the rename that makes the file visible (Linux;
           a watcher thread in this process)

File timestamps come from the kernel's coarse clock, which ticks every few milliseconds and
trails time.time() by up to a tick or more, so at millisecond latencies the mtime row can even
be negative; the script measures that offset on the same filesystem first and prints a
clock-corrected mtime row too.  The inotify row does not depend on that clock.  Also printed:
p50/p99/max of the POST round trip.

    python bench/post_to_file.py                     # 2000 requests at 200/s
    python bench/post_to_file.py --requests 6000 --rate 300

Needs aiohttp (pip install -e '.[bench]').  A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import secrets
import select
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    HOST,
    BodyTemplate,
    PgTarget,
    body_template,
    create_cost_us,
    drop_pg_schema,
    free_port,
    hookdock_server,
    journal_counts,
    new_pg_target,
    percentile,
    pg_dsn,
    pg_problem,
    table,
    work_folder,
    worker_process,
    write_config,
)

try:
    import aiohttp

    HAVE_AIOHTTP = True
except ImportError:  # reported to the user in main()
    HAVE_AIOHTTP = False


@dataclass
class Sent:
    task_id: str
    scheduled: float  # loop.time() the request was due
    send_ns: int = 0  # time.time_ns() right before the POST
    lag: float = 0.0  # seconds the POST went out after it was due
    rtt: float | None = None  # seconds, POST round trip
    status: int | None = None
    error: str | None = None
    file_ns: int | None = None  # st_mtime_ns of the export file
    seen_ns: int | None = None  # time.time_ns() when inotify reported the file's rename


def clock_offset_ns(directory: Path, samples: int = 200) -> list[int]:
    """``st_mtime_ns - time.time_ns()`` for files written just after reading the clock."""
    directory.mkdir(parents=True, exist_ok=True)
    offsets = []
    for i in range(samples):
        path = directory / f"probe-{i}"
        before = time.time_ns()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        offsets.append(os.stat(path).st_mtime_ns - before)
        path.unlink()
        time.sleep(0.0007 * (i % 7))  # spread the probes over the clock's tick phase
    return offsets


class ExportWatcher:
    """Notes the moment each export file appears (its rename), with inotify (Linux only).

    The local sink's default layout is ``smartdocumentor/<workspace>/<task>/<file>``: this
    watches the workspace folder for new task folders, then each task folder for a file renamed
    into it.  A file that appears before its folder's watch is in place is found by listing
    the folder right after adding the watch, and left without a time (counted as ``missed``).
    """

    _IN_MOVED_TO = 0x80
    _IN_CREATE = 0x100
    _IN_ISDIR = 0x40000000
    _HEADER = struct.Struct("iIII")

    def __init__(self, workspace_dir: Path) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.workspace_dir = workspace_dir
        self.seen: dict[str, int] = {}
        self.missed: set[str] = set()
        self._dirs: dict[int, str] = {}
        self._stop = threading.Event()
        self._watch(workspace_dir, self._IN_CREATE)
        self._thread = threading.Thread(target=self._run, name="export-watcher", daemon=True)

    def _watch(self, path: Path, mask: int) -> int:
        wd: int = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")
        return wd

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            now = time.time_ns()
            offset = 0
            while offset < len(data):
                wd, mask, _, size = self._HEADER.unpack_from(data, offset)
                offset += self._HEADER.size
                name = data[offset : offset + size].rstrip(b"\0").decode()
                offset += size
                if mask & self._IN_CREATE and mask & self._IN_ISDIR:
                    self._new_task_dir(name)
                elif mask & self._IN_MOVED_TO and not name.startswith("."):
                    task_id = self._dirs.pop(wd, None)
                    if task_id is not None and task_id not in self.seen:
                        self.seen[task_id] = now
                        self._libc.inotify_rm_watch(self._fd, wd)

    def _new_task_dir(self, task_id: str) -> None:
        path = self.workspace_dir / task_id
        try:
            wd = self._watch(path, self._IN_MOVED_TO)
        except OSError:
            self.missed.add(task_id)
            return
        self._dirs[wd] = task_id
        try:
            early = [n for n in os.listdir(path) if not n.startswith(".")]
        except FileNotFoundError:
            early = []
        if early:  # renamed before the watch was in place: no precise time
            self._dirs.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)
            self.missed.add(task_id)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, item: Sent) -> None:
    loop = asyncio.get_running_loop()
    item.lag = loop.time() - item.scheduled
    item.send_ns = time.time_ns()
    start = time.perf_counter()
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            item.status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        item.error = type(exc).__name__
    item.rtt = time.perf_counter() - start


async def send_at_rate(
    url: str, template: BodyTemplate, items: list[Sent], rate: float, connections: int
) -> float:
    """Send every item at its due time; returns the seconds from the first to the last send."""
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        tasks = []
        for i, item in enumerate(items):
            item.scheduled = start + i / rate
            delay = item.scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = template.body(item.task_id)
            tasks.append(asyncio.create_task(post(session, url, body, item)))
        await asyncio.gather(*tasks)
    sent = [i.send_ns for i in items]
    return (max(sent) - min(sent)) / 1e9 if sent else 0.0


def find_exports(exports: Path, workspace_id: str, items: list[Sent], deadline: float) -> None:
    """Fill in ``file_ns`` for every 2xx'd item whose export file appears before ``deadline``."""
    base = exports / "smartdocumentor" / workspace_id
    pending = {i.task_id: i for i in items if i.status is not None and 200 <= i.status < 300}
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            try:
                names = [n for n in os.listdir(base / task_id) if not n.startswith(".")]
            except FileNotFoundError:
                continue
            if names:
                pending.pop(task_id).file_ns = os.stat(base / task_id / names[0]).st_mtime_ns
        if pending:
            time.sleep(0.1)


def ms_row(name: str, values_ms: list[float]) -> list[str]:
    values = sorted(values_ms)
    return [
        name,
        str(len(values)),
        f"{percentile(values, 50):.2f}",
        f"{percentile(values, 99):.2f}",
        f"{values[-1]:.2f}" if values else "-",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--requests", type=int, default=2000, help="measured (default 2000)")
    parser.add_argument("-r", "--rate", type=float, default=200.0, help="per second (default 200)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="unmeasured requests sent first (default 100)"
    )
    parser.add_argument(
        "--deadline", type=float, default=60.0, help="seconds to wait for the files (default 60)"
    )
    parser.add_argument("--body-bytes", type=int, default=3072, help="body size (default 3072)")
    parser.add_argument(
        "--connections", type=int, default=64, help="client connection pool (default 64)"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="journal in PostgreSQL instead of SQLite"
    )
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $HOOKDOCK_TEST_PG_DSN or local)")
    parser.add_argument(
        "--dispatcher",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [dispatcher] setting, as TOML (busy_requests=0); repeatable",
    )
    parser.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the folder sink, as TOML (fsync=false, concurrency=128); repeatable",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="the dispatcher in a `hookdock worker` process beside `serve` (dispatcher off"
        " there), under `nice -n 10` so that ingest keeps the first call on the CPU",
    )
    parser.add_argument(
        "--summary", type=Path, help="also write the figures as one JSON object to this file"
    )
    parser.add_argument(
        "--exports-in",
        type=Path,
        help="put the folder sink's root in a new folder inside this one (a tmpfs such as"
        " /dev/shm), the journal staying in the run's folder: the exports without this disk's"
        " cost of making inodes",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--defer-cleanup",
        type=Path,
        metavar="LIST",
        help="add the folders to delete to LIST instead of deleting them (a ladder of runs"
        " deletes them at its end: on a journal-less ext4 a deletion makes the next half"
        " minute's file creations dearer, see common.work_folder)",
    )
    args = parser.parse_args()

    if not HAVE_AIOHTTP:
        print(
            "bench/post_to_file.py needs aiohttp: pip install -e '.[bench]'"
            " (or pip install aiohttp)",
            file=sys.stderr,
        )
        return 2

    pg: PgTarget | None = None
    if args.postgres:
        dsn = pg_dsn(args.dsn)
        if (problem := pg_problem(dsn)) is not None:
            print(f"PostgreSQL is not reachable: {problem}", file=sys.stderr)
            return 2
        pg = new_pg_target(dsn, "post_to_file")
    work = work_folder("hookdock-bench-file-")
    template = body_template(args.body_bytes)
    tag = secrets.randbits(32)
    warmup = [Sent(f"{tag:08x}-0000-4000-8000-{i:012x}", 0.0) for i in range(args.warmup)]
    items = [Sent(f"{tag:08x}-0001-4000-8000-{i:012x}", 0.0) for i in range(args.requests)]
    exports_elsewhere: Path | None = None
    try:
        offsets = clock_offset_ns(work / "clock-probe")
        options = "".join(f"{option}\n" for option in args.dispatcher)
        sink_options = "".join(f"{option}\n" for option in args.sink)
        setup = write_config(
            work / "hookdock",
            pg=pg,
            dispatcher=not args.worker,
            dispatcher_options=options,
            sink_options=sink_options,
        )
        if args.exports_in is not None:
            # The config names "exports" beside it: a link takes the sink elsewhere.
            exports_elsewhere = Path(
                tempfile.mkdtemp(prefix="hookdock-exports-", dir=args.exports_in)
            )
            setup.exports.symlink_to(exports_elsewhere, target_is_directory=True)
        port = free_port()
        # The sink creates missing folders itself; creating the two shared ones first lets the
        # watcher see every task folder appear.
        workspace_dir = setup.exports / "smartdocumentor" / template.workspace_id
        workspace_dir.mkdir(parents=True)
        create_cost = create_cost_us(setup.exports / "create-probe")
        watcher: ExportWatcher | None = None
        if sys.platform == "linux":
            watcher = ExportWatcher(workspace_dir)
            watcher.start()
        # hookdock (and its worker) are the only children reaped in between: their CPU time.
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker = worker_process(setup, work, nice=10) if args.worker else None
        if worker is not None:
            worker.start_process()
        with hookdock_server(setup, port, work) as server, contextlib.ExitStack() as stack:
            if worker is not None:
                stack.callback(worker.stop)
            url = f"http://{HOST}:{server.port}{setup.hook_path}"
            if warmup:
                asyncio.run(send_at_rate(url, template, warmup, args.rate, args.connections))
                find_exports(setup.exports, template.workspace_id, warmup, time.monotonic() + 30)
            span = asyncio.run(send_at_rate(url, template, items, args.rate, args.connections))
            sent_done = time.monotonic()
            find_exports(setup.exports, template.workspace_id, items, sent_done + args.deadline)
            waited = time.monotonic() - sent_done
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # The server has stopped: read the states through the journal itself.
        states = {k: n for k, n in journal_counts(setup).items() if n}
        if watcher is not None:
            time.sleep(0.2)  # let the watcher read the last events
            watcher.stop()
            for item in items:
                item.seen_ns = watcher.seen.get(item.task_id)
    finally:
        if args.keep:
            print(f"kept {work}" + (f" and {exports_elsewhere}" if exports_elsewhere else ""))
        else:
            folders = [work, *([exports_elsewhere] if exports_elsewhere is not None else [])]
            if args.defer_cleanup is not None:
                with args.defer_cleanup.open("a", encoding="utf-8") as listing:
                    listing.writelines(f"{folder}\n" for folder in folders)
            else:
                for folder in folders:
                    shutil.rmtree(folder, ignore_errors=True)
            if pg is not None:
                drop_pg_schema(pg)

    ok = [i for i in items if i.status is not None and 200 <= i.status < 300]
    non_2xx = sum(1 for i in items if i.status is not None and not 200 <= i.status < 300)
    errors = sum(1 for i in items if i.error is not None)
    exported = [i for i in ok if i.file_ns is not None]
    offset = statistics.median(offsets)
    print(
        f"hookdock POST-to-file ({'PostgreSQL' if pg else 'SQLite'} journal):"
        f" {len(items)} requests at {args.rate:g}/s"
        f" (after {len(warmup)} warm-up), body {template.size} bytes, one taskId each"
    )
    print(
        f"sent over {span:.2f} s ({(len(items) - 1) / span if span else 0:.1f}/s),"
        f" send lag p99 {percentile(sorted(i.lag * 1e3 for i in items), 99):.2f} ms;"
        f" 2xx {len(ok)}, non-2xx {non_2xx}, client errors {errors}"
    )
    print(
        f"exported {len(exported)}/{len(ok)} (waited {waited:.2f} s after the last send,"
        f" deadline {args.deadline:g} s); journal states at stop: {states}"
    )
    print(
        f"file clock: st_mtime - time.time() = median {offset / 1e6:+.2f} ms"
        f" (range {min(offsets) / 1e6:+.2f} to {max(offsets) / 1e6:+.2f} ms over"
        f" {len(offsets)} probes)"
    )
    user = cpu_after.ru_utime - cpu_before.ru_utime
    system = cpu_after.ru_stime - cpu_before.ru_stime
    total = len(items) + len(warmup)
    print(
        f"hookdock CPU (start to stop, warm-up included): {user:.1f} s user + {system:.1f} s"
        f" system = {(user + system) * 1e6 / total:.0f} µs per request"
    )
    print(
        f"this disk: a folder and a file made in the exports folder cost {create_cost:.0f} µs"
        " CPU each (plain loop, before the run)"
    )
    print()
    rtt = [i.rtt * 1e3 for i in ok if i.rtt is not None]
    raw = [(i.file_ns - i.send_ns) / 1e6 for i in exported if i.file_ns is not None]
    fixed = [v - offset / 1e6 for v in raw]
    seen = [(i.seen_ns - i.send_ns) / 1e6 for i in exported if i.seen_ns is not None]
    print(
        table(
            ["measure", "n", "p50 ms", "p99 ms", "max ms"],
            [
                ms_row("POST round trip (2xx)", rtt),
                ms_row("POST to file: mtime - send", raw),
                ms_row("POST to file, clock-corrected", fixed),
                *([ms_row("POST to file: inotify rename - send", seen)] if watcher else []),
            ],
        )
    )
    if watcher is not None and len(seen) < len(exported):
        print(f"inotify: {len(exported) - len(seen)} files appeared before their watch (no time)")
    if len(exported) < len(ok):
        print(f"MISSING: {len(ok) - len(exported)} accepted deliveries had no file by the deadline")
    if args.summary is not None:
        ordered = sorted(fixed)
        summary = {
            "rate": args.rate,
            "requests": len(items),
            "ok": len(ok),
            "exported": len(exported),
            "post_p99_ms": percentile(sorted(rtt), 99) if rtt else None,
            "file_p50_ms": percentile(ordered, 50) if ordered else None,
            "file_p99_ms": percentile(ordered, 99) if ordered else None,
            "file_max_ms": ordered[-1] if ordered else None,
            "waited_s": waited,
            "cpu_us_per_request": (user + system) * 1e6 / total,
            "create_us": create_cost,
        }
        args.summary.write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
