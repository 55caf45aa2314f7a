"""Ingest while a bulk replay runs: requests/s and p99 without and with a replay, in one run.

Issue 15's aim: "a bulk replay of 100,000 events while webhooks keep coming: ingest keeps at
least 0.8 of its rate without the replay".  One SQLite journal is filled by the bulk loader of
``bench/journal_scale.py`` (not by POSTing) with ``--events`` deliveries of the last 30 days
(98.4 % of them routed with their one send delivered, the rest pending, dead or unroutable, as
that loader makes them), then ``hookdock serve`` starts on it (dispatcher on, the sink one that
does nothing: ``bench/null_sink.py``; an ``[admin]`` token for the operator API) and:

  without  wrk posts distinct ~3 KB text documents for ``-d`` (as ``bench/ingest.py`` does)
  with     ``POST /admin/api/replays`` starts a bulk replay of the filled, delivered events
           (``{"filter": {"state": ["delivered"], "until": <before wrk's first POST>}}``, a
           dry run first for the count), the same wrk load runs again while
           ``GET /admin/api/replays/{id}`` is polled, then the replay is cancelled
           (``DELETE``) if it has not finished

and prints both runs side by side, the ratio with/without (aim >= 0.80), and how far the replay
got during the window (events replayed, events/s, share of what it matched).  Everything is on
127.0.0.1, in a temporary folder removed at the end; every process started is stopped.

    python bench/bulk_replay.py                      # 100,000 events, -c32 -d10s
    python bench/bulk_replay.py --events 20000 -d 5s # quick

Needs wrk on PATH.  A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    HOST,
    NULL_SINK,
    BodyTemplate,
    body_template,
    free_port,
    hookdock_server,
    table,
    work_folder,
    write_config,
)
from ingest import LUA, Result, measure
from journal_scale import EventTemplate, fill_rows, fill_sqlite

from receiver.journal import make_journal

API = "/admin/api"


@dataclass
class Progress:
    """What ``GET /replays/{id}`` said over the loaded window."""

    job_id: str
    matched: int = 0
    dry_run_count: int = 0
    replayed_at_start: int = 0
    replayed_at_end: int = 0
    state: str = "running"
    final: dict[str, Any] = field(default_factory=dict)
    polls: list[tuple[float, int]] = field(default_factory=list)

    @property
    def window_replayed(self) -> int:
        return self.replayed_at_end - self.replayed_at_start


def call(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One admin API request to 127.0.0.1, its JSON answer (raises on a non-2xx)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (always http://127.0.0.1:<port>)
        base + API + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None


def poll(base: str, token: str, progress: Progress, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(0.5):
        try:
            now = call(base, token, "GET", f"/replays/{progress.job_id}")
        except Exception as exc:  # a poll that fails is not worth stopping the run for
            print(f"    poll failed: {exc}", file=sys.stderr)
            continue
        progress.polls.append((time.monotonic() - started, int(now["replayed"])))
        progress.state = str(now["state"])
        if progress.state != "running":
            return


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=100_000, help="deliveries filled (default 100000)"
    )
    parser.add_argument("--chunk", type=int, default=10_000, help="fill transaction size")
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "-c", "--connections", type=int, default=32, help="wrk connections (default 32)"
    )
    parser.add_argument("-d", "--duration", default="10s", help="each measured run (default 10s)")
    parser.add_argument("--warmup", default="2s", help="warm-up before each run (default 2s)")
    parser.add_argument("--timeout", default="5s", help="wrk request timeout (default 5s)")
    parser.add_argument("--body-bytes", type=int, default=3072, help="body size (default 3072)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    # measure() reads these from the namespace
    args.journal_stats = False

    if shutil.which("wrk") is None:
        print("bench/bulk_replay.py needs wrk on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2

    work = work_folder("hookdock-bench-replay-")
    try:
        return run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    template: BodyTemplate = body_template(args.body_bytes)
    body = (work / "body-prefix.json", work / "body-suffix.json")
    body[0].write_bytes(template.prefix)
    body[1].write_bytes(template.suffix)
    script = work / "post.lua"
    script.write_text(LUA, encoding="utf-8")

    setup = write_config(work / "hookdock", dispatcher=True, sink_type=NULL_SINK)
    admin_token = secrets.token_urlsafe(32)
    with setup.config.open("a", encoding="utf-8") as f:
        f.write(f'\n[admin]\ntokens = ["{admin_token}"]\n')

    # The journal as hookdock creates it, then filled behind its back.
    opened = make_journal(setup.journal_config).open()
    asyncio.run(opened.close())
    print(f"filling {args.events} deliveries (SQLite) ...", flush=True)
    started = time.monotonic()
    chunks = fill_rows(EventTemplate(template), args.events, args.chunk, random.getrandbits(32))
    filled = fill_sqlite(setup.journal, chunks)
    fill_seconds = time.monotonic() - started
    print(f"filled {filled} in {fill_seconds:.1f} s ({filled / fill_seconds:.0f}/s)", flush=True)
    # Only the filled events (received up to an hour ago), not what wrk posts.
    until = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    replay_filter = {"state": ["delivered"], "until": until}

    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration} (warm-up {args.warmup}),"
        f" body {template.size} bytes, distinct per request; dispatcher on, null sink",
        flush=True,
    )
    with hookdock_server(setup, free_port(), work) as server:
        base = f"http://{HOST}:{server.port}"
        without = measure(args, "without", server, setup.hook_path, script, body, work, 1)
        print(f"  without replay: {without.rps:.0f} req/s, p99 {without.p99_ms:.2f} ms", flush=True)

        dry = call(base, admin_token, "POST", "/replays", {"filter": replay_filter, "dryRun": True})
        job = call(base, admin_token, "POST", "/replays", {"filter": replay_filter})
        progress = Progress(job_id=str(job["jobId"]), dry_run_count=int(dry["matched"]))
        stop = threading.Event()
        poller = threading.Thread(target=poll, args=(base, admin_token, progress, stop))
        poller.start()
        try:
            # The warm-up runs with the replay going too, so the window starts mid-replay.
            if args.warmup:
                warm = argparse.Namespace(**{**vars(args), "duration": args.warmup, "warmup": ""})
                measure(warm, "with-warmup", server, setup.hook_path, script, body, work, 1)
            at_start = call(base, admin_token, "GET", f"/replays/{progress.job_id}")
            progress.replayed_at_start = int(at_start["replayed"])
            window_started = time.monotonic()
            args_measured = argparse.Namespace(**{**vars(args), "warmup": ""})
            with_replay = measure(
                args_measured, "with", server, setup.hook_path, script, body, work, 1
            )
            window = time.monotonic() - window_started
            at_end = call(base, admin_token, "GET", f"/replays/{progress.job_id}")
            progress.replayed_at_end = int(at_end["replayed"])
            progress.matched = int(at_end["matched"])
            progress.state = str(at_end["state"])
        finally:
            stop.set()
            poller.join(10)
            if progress.state == "running":
                progress.final = call(base, admin_token, "DELETE", f"/replays/{progress.job_id}")
            else:
                progress.final = call(base, admin_token, "GET", f"/replays/{progress.job_id}")
        print(
            f"  with replay:    {with_replay.rps:.0f} req/s, p99 {with_replay.p99_ms:.2f} ms",
            flush=True,
        )
    print()
    print(report(args, filled, without, with_replay, progress, window))
    return 0


def report(
    args: argparse.Namespace,
    filled: int,
    without: Result,
    with_replay: Result,
    progress: Progress,
    window: float,
) -> str:
    headers = ["run", "requests/s", "p50 ms", "p99 ms", "max ms", "requests", "non-2xx"]
    headers += ["socket errors"]
    rows = [
        [
            name,
            f"{r.rps:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.max_ms:.1f}",
            str(r.requests),
            str(r.non_2xx),
            str(r.socket_errors),
        ]
        for name, r in (("without replay", without), ("with replay", with_replay))
    ]
    ratio = with_replay.rps / without.rps if without.rps else float("nan")
    p99 = with_replay.p99_ms / without.p99_ms if without.p99_ms else float("nan")
    matched = progress.matched or progress.dry_run_count
    done = progress.replayed_at_end
    final = progress.final
    lines = [
        table(headers, rows),
        f"with/without throughput ratio: {ratio:.2f}  ({with_replay.rps:.0f} / {without.rps:.0f}"
        f" req/s; aim >= 0.80); p99 ratio {p99:.2f}",
        f"replay: {filled} deliveries filled, the filter matched {matched} delivered events"
        f" (dry run {progress.dry_run_count}); during the {window:.1f} s window"
        f" {progress.window_replayed} replayed ({progress.window_replayed / window:.0f} events/s),"
        f" {done}/{matched} ({100 * done / max(matched, 1):.1f} %) since it started;"
        f" state then {progress.state}, at the end {final.get('state')}"
        f" (replayed {final.get('replayed')}, requeued {final.get('requeued')},"
        f" created {final.get('created')})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
