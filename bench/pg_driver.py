"""PostgreSQL driver for the journal: psycopg 3 on a commit thread against asyncpg on the loop.

The journal runs its SQL on one dedicated commit thread through a synchronous DB-API driver
(group commit: the thread takes every job that queued while its previous commit ran, runs them
in one transaction and commits once), so that SQLite and PostgreSQL share one SQL
implementation.  This script measures what that design costs against asyncpg, with the same
group commit done on the event loop instead.  Four columns, side by side:

- **psycopg**: psycopg 3 (sync) owned by one thread fed by a ``queue.SimpleQueue``; futures are
  settled with one ``loop.call_soon_threadsafe`` per batch (as ``receiver/journal/committer.py``).
  A transaction is three round trips: ``BEGIN``, the statement(s), ``COMMIT``;
- **pipeline**: the same thread with the connection in pipeline mode for its whole life: a
  batch's ``BEGIN``, statements and ``COMMIT`` go out together, one round trip;
- **pipeline+RawCursor**: the same with ``psycopg.RawCursor`` and ``$n`` placeholders.  psycopg
  parses ``%s`` placeholders in Python and caches the result only for statements of at most 50
  parameters and 4096 bytes, so a 64-row ``VALUES`` list (640 parameters) is parsed anew on
  every execute; a raw cursor sends the text as it is;
- **asyncpg**: one asyncpg connection and a committer task on the event loop that batches the
  same way (``async with conn.transaction()``: ``BEGIN``, statement(s), ``COMMIT``).

Scenarios, all against a ``deliveries`` table shaped like the SQLite journal's (3 KB bodies):

1. group-commit append: ``--concurrency`` (64) asyncio "requests", each submitting one row and
   awaiting its commit, until ``--rows`` (20 000) or ``--time-limit``; every batch is one
   multi-row ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id``.  Rows/s, p50/p99
   per request, rows per commit, and CPU per row of this process and of the server backend.
   Also one request at a time (a lone request's latency: one commit, one fsync, each);
2. claim pattern: ``--rows`` pending rows (loaded by COPY, not timed); ``--claim-workers`` (2)
   dispatchers each claim ``--claim-limit`` (100) rows with ``UPDATE ... WHERE id IN (SELECT
   ... ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED) RETURNING *`` and finish them
   with one batched ``UPDATE``, each a job of the committer; claimed+finished rows/s;
3. ``SELECT 1`` round trip p50: the driver alone (a blocking call on a thread / an awaited
   call), and from asyncio through the committer (autocommit, no transaction).

Everything goes to the ``--dsn`` server (default ``$HOOKDOCK_TEST_PG_DSN``, else
``postgresql://postgres@127.0.0.1:5432/test``) in a fresh schema ``bench_pgdriver_<hex>``,
dropped at the end whatever happens.  Needs ``psycopg[binary]>=3.2`` and ``asyncpg``; uses
uvloop when installed (as ``hookdock serve``).  About 30 s on 2 cores::

    python bench/pg_driver.py
    python bench/pg_driver.py --rounds 3          # alternate the drivers 3 times, medians
    python bench/pg_driver.py --rows 50000 --concurrency 128 --time-limit 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import queue
import random
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
VARIANTS = ("psycopg", "pipeline", "raw", "asyncpg")
PSYCOPG = VARIANTS[:3]
HEADS = {
    "psycopg": "psycopg sync thread",
    "pipeline": "psycopg pipeline",
    "raw": "pipeline+RawCursor",
    "asyncpg": "asyncpg",
}
SHORT = {"psycopg": "sync", "pipeline": "pipeline", "raw": "raw"}
MAX_BATCH = 1000  # rows per multi-row INSERT (10 parameters a row; PostgreSQL allows 65535)
INSERT_COLUMNS = (
    "id, route, source, received_at, content_type, headers, body, dedupe_key,"
    " next_attempt_at, updated_at"
)
SCHEMA_SQL = """
CREATE TABLE {s}.deliveries (
    id text PRIMARY KEY,
    route text NOT NULL,
    source text NOT NULL,
    received_at text NOT NULL,
    content_type text NOT NULL,
    headers bytea NOT NULL,
    body bytea NOT NULL,
    dedupe_key text NOT NULL UNIQUE,
    state text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    lease_owner text,
    lease_until double precision,
    last_error text,
    updated_at double precision NOT NULL
);
CREATE INDEX deliveries_due ON {s}.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON {s}.deliveries (lease_owner) WHERE lease_owner IS NOT NULL;
"""

Row = tuple[Any, ...]
Job = tuple[str, Any, "asyncio.Future[Any]"]
Submit = Callable[[str, Any], Awaitable[Any]]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _body(size: int = 2900) -> tuple[bytes, bytes]:
    """A JSON-like body of about ``size`` bytes, split where each row's own id goes."""
    rnd = random.Random(7)
    words = [
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
        for _ in range(500)
    ]
    text = " ".join(rnd.choice(words) for _ in range(size // 6))[: size - 60]
    return b'{"taskId":"', ('","text":"' + text + '","status":"done"}').encode()


BODY_HEAD, BODY_TAIL = _body()
HEADERS = b'{"content-type":"application/json","user-agent":"bench"}'


def make_row(tag: str, i: int) -> Row:
    ident = f"{tag}-{i:08d}"
    now = time.time()
    return (
        ident,
        "sd-text",
        "smartdocumentor.text_document",
        "2025-01-01T00:00:00+00:00",
        "application/json",
        HEADERS,
        BODY_HEAD + ident.encode() + BODY_TAIL,
        f"sd:{ident}",
        now,
        now,
    )


class Sql:
    """The statements, written once, with ``%s`` (psycopg) or ``$n`` (asyncpg) placeholders."""

    def __init__(self, schema: str, numbered: bool) -> None:
        self.table = f"{schema}.deliveries"
        self.numbered = numbered
        self._inserts: dict[int, str] = {}
        p = self.params
        self.claim = (
            f"UPDATE {self.table} SET lease_owner = {p(1)}, lease_until = {p(2)},"
            f" attempts = attempts + 1, updated_at = {p(3)}"
            f" WHERE id IN (SELECT id FROM {self.table} WHERE state = 'pending'"
            f" AND next_attempt_at <= {p(4)} AND (lease_until IS NULL OR lease_until < {p(5)})"
            f" ORDER BY next_attempt_at LIMIT {p(6)} FOR UPDATE SKIP LOCKED) RETURNING *"
        )
        self.finish = (
            f"UPDATE {self.table} SET state = 'routed', lease_owner = NULL, lease_until = NULL,"
            f" updated_at = {p(1)} WHERE lease_owner = {p(2)} AND id = ANY({p(3)}::text[])"
        )
        self.select1 = "SELECT 1"

    def params(self, first: int, count: int = 1) -> str:
        if not self.numbered:
            return ", ".join(["%s"] * count)
        return ", ".join(f"${n}" for n in range(first, first + count))

    def insert(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            values = ", ".join(f"({self.params(1 + r * 10, 10)})" for r in range(rows))
            sql = (
                f"INSERT INTO {self.table} ({INSERT_COLUMNS}) VALUES {values}"
                " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
            )
            self._inserts[rows] = sql
        return sql


def _settle(outcomes: list[Outcome]) -> None:
    for future, value, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _take_batch(first: Job, get_nowait: Callable[[], Job | None]) -> tuple[list[Job], bool]:
    """``first`` and whatever else is queued (appends up to MAX_BATCH); True if told to stop."""
    batch, appends = [first], int(first[0] == "append")
    while appends < MAX_BATCH:
        try:
            job = get_nowait()
        except (queue.Empty, asyncio.QueueEmpty):
            break
        if job is None:
            return batch, True
        batch.append(job)
        appends += job[0] == "append"
    return batch, False


class Committer:
    """Counts shared by both committers."""

    commits = 0
    jobs = 0

    def submit(self, kind: str, payload: Any) -> asyncio.Future[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class ThreadCommitter(Committer):
    """psycopg on one thread: the journal's design."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        sql: Sql,
        *,
        pipeline: bool,
        raw: bool = False,
        transactional: bool = True,
    ) -> None:
        self.conn, self.sql = conn, sql
        self.cursor_class: type[psycopg.Cursor[Any]] = psycopg.RawCursor if raw else psycopg.Cursor
        self.pipeline, self.transactional = pipeline, transactional
        conn.autocommit = not transactional
        self.loop = asyncio.get_running_loop()
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="pg-commit", daemon=True)
        self.thread.start()

    def submit(self, kind: str, payload: Any) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self.queue.put((kind, payload, future))
        return future

    async def close(self) -> None:
        self.queue.put(None)
        await asyncio.to_thread(self.thread.join)

    def _run(self) -> None:
        with contextlib.ExitStack() as stack:
            pipe = stack.enter_context(self.conn.pipeline()) if self.pipeline else None
            while True:
                first = self.queue.get()
                if first is None:
                    return
                batch, stop = _take_batch(first, self.queue.get_nowait)
                try:
                    outcomes = self._apply(batch, pipe)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        self.conn.rollback()
                    outcomes = [(job[2], None, exc) for job in batch]
                self.commits += 1
                self.jobs += len(batch)
                self.loop.call_soon_threadsafe(_settle, outcomes)
                if stop:
                    return

    def _apply(self, batch: list[Job], pipe: psycopg.Pipeline | None) -> list[Outcome]:
        conn, sql = self.conn, self.sql
        steps: list[tuple[str, list[asyncio.Future[Any]], psycopg.Cursor[Any]]] = []
        appends = [job for job in batch if job[0] == "append"]
        if appends:
            cur = self.cursor_class(conn)
            cur.execute(sql.insert(len(appends)), [v for job in appends for v in job[1]])
            steps.append(("append", [job[2] for job in appends], cur))
        for kind, payload, future in batch:
            if kind != "append":
                cur = self.cursor_class(conn)
                cur.execute(getattr(sql, kind), payload)
                steps.append((kind, [future], cur))
        if self.transactional:
            conn.commit()  # in pipeline mode: BEGIN, statements, COMMIT and Sync in one flush
        elif pipe is not None:
            pipe.sync()
        return _outcomes(steps)


def _outcomes(steps: Sequence[tuple[str, list[asyncio.Future[Any]], Any]]) -> list[Outcome]:
    out: list[Outcome] = []
    for kind, futures, result in steps:
        if kind == "append":
            if isinstance(result, psycopg.Cursor):
                result.fetchall()  # the ids inserted (the others were duplicates)
            out.extend((f, True, None) for f in futures)  # committed, inserted or duplicate
        elif kind == "claim":
            rows = result.fetchall() if isinstance(result, psycopg.Cursor) else result
            out.append((futures[0], [r[0] for r in rows], None))
        elif kind == "finish":
            count = result.rowcount if isinstance(result, psycopg.Cursor) else result
            out.append((futures[0], count, None))
        else:
            value = result.fetchone() if isinstance(result, psycopg.Cursor) else (result,)
            out.append((futures[0], value[0] if value else None, None))
    return out


class LoopCommitter(Committer):
    """asyncpg on the event loop: a task that batches exactly like the thread."""

    def __init__(self, conn: Any, sql: Sql, *, transactional: bool = True) -> None:
        self.conn, self.sql, self.transactional = conn, sql, transactional
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def submit(self, kind: str, payload: Any) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self.queue.put_nowait((kind, payload, future))
        return future

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await self.task

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            if first is None:
                return
            batch, stop = _take_batch(first, self.queue.get_nowait)
            try:
                if self.transactional:
                    async with self.conn.transaction():
                        outcomes = await self._apply(batch)
                else:
                    outcomes = await self._apply(batch)
            except Exception as exc:
                outcomes = [(job[2], None, exc) for job in batch]
            self.commits += 1
            self.jobs += len(batch)
            _settle(outcomes)
            if stop:
                return

    async def _apply(self, batch: list[Job]) -> list[Outcome]:
        conn, sql = self.conn, self.sql
        steps: list[tuple[str, list[asyncio.Future[Any]], Any]] = []
        appends = [job for job in batch if job[0] == "append"]
        if appends:
            flat = [v for job in appends for v in job[1]]
            rows = await conn.fetch(sql.insert(len(appends)), *flat)
            steps.append(("append", [job[2] for job in appends], rows))
        for kind, payload, future in batch:
            if kind == "claim":
                steps.append((kind, [future], await conn.fetch(sql.claim, *payload)))
            elif kind == "finish":
                status = await conn.execute(sql.finish, *payload)
                steps.append((kind, [future], int(status.rsplit(" ", 1)[1])))
            elif kind == "select1":
                steps.append((kind, [future], await conn.fetchval(sql.select1)))
        return _outcomes(steps)


# ---------------------------------------------------------------------------------- harness


@dataclass
class Env:
    dsn: str
    schema: str
    admin: psycopg.Connection[Any]  # autocommit; DDL, TRUNCATE, COPY, checks
    args: argparse.Namespace
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def run_tag(self) -> str:
        return f"{self.tag}{next(self.seq)}"

    def truncate(self) -> None:
        self.admin.execute(f"TRUNCATE {self.schema}.deliveries")

    def count(self, where: str = "true") -> int:
        row = self.admin.execute(f"SELECT count(*) FROM {self.schema}.deliveries WHERE {where}")
        return int(row.fetchone()[0])  # type: ignore[index]


def _server_cpu(pid: int) -> float | None:
    """user+system seconds of a local server backend, or None if /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Driver:
    """One column: how to open a connection and a committer for it."""

    def __init__(self, variant: str, env: Env) -> None:
        self.variant, self.env = variant, env
        self.sql = Sql(env.schema, numbered=variant in ("asyncpg", "raw"))
        self.conn: Any = None

    async def open(self) -> None:
        if self.variant == "asyncpg":
            self.conn = await asyncpg.connect(self.env.dsn)
        else:
            self.conn = await asyncio.to_thread(psycopg.connect, self.env.dsn)

    async def close(self) -> None:
        if self.conn is not None:
            await (
                self.conn.close()
                if self.variant == "asyncpg"
                else asyncio.to_thread(self.conn.close)
            )

    def backend_pid(self) -> int:
        if self.variant == "asyncpg":
            return int(self.conn.get_server_pid())
        return int(self.conn.info.backend_pid)

    def committer(self, transactional: bool = True) -> Committer:
        if self.variant == "asyncpg":
            return LoopCommitter(self.conn, self.sql, transactional=transactional)
        return ThreadCommitter(
            self.conn,
            self.sql,
            pipeline=self.variant != "psycopg",
            raw=self.variant == "raw",
            transactional=transactional,
        )


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _appends(
    committer: Committer, tag: str, rows: int, concurrency: int, time_limit: float
) -> tuple[list[float], float]:
    counter = itertools.count()
    latencies: list[float] = []
    deadline = time.perf_counter() + time_limit

    async def request() -> None:
        while True:
            i = next(counter)
            if i >= rows or time.perf_counter() > deadline:
                return
            row = make_row(tag, i)
            t0 = time.perf_counter()
            await committer.submit("append", row)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(request() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def bench_append(d: Driver, results: dict[str, float], concurrency: int, label: str) -> None:
    env, args = d.env, d.env.args
    rows = args.rows if concurrency > 1 else args.lone_rows
    limit = args.time_limit if concurrency > 1 else min(args.time_limit, 3.0)
    committer = d.committer()
    try:
        await _appends(committer, "w" + env.run_tag(), args.warmup, concurrency, 5.0)
        env.truncate()
        committer.commits = committer.jobs = 0
        pid = d.backend_pid()
        cpu0, srv0 = time.process_time(), _server_cpu(pid)
        latencies, elapsed = await _appends(committer, env.run_tag(), rows, concurrency, limit)
        cpu1, srv1 = time.process_time(), _server_cpu(pid)
        commits = committer.commits
    finally:
        await committer.close()
    done = len(latencies)
    stored = env.count()
    if stored != done:
        print(f"  ! {d.variant} {label}: {done} acknowledged, {stored} in the table")
    results[f"{label} rows/s"] = done / elapsed
    results[f"{label} p50 ms"] = _pct(latencies, 0.50) * 1e3
    results[f"{label} p99 ms"] = _pct(latencies, 0.99) * 1e3
    if concurrency > 1:
        results[f"{label} rows/commit"] = done / max(commits, 1)
        results[f"{label} client CPU us/row"] = (cpu1 - cpu0) / done * 1e6
        if srv0 is not None and srv1 is not None:
            results[f"{label} server CPU us/row"] = (srv1 - srv0) / done * 1e6
    print(
        f"  {d.variant:>8} {label}: {done} rows in {elapsed:.2f} s, {commits} commits",
        flush=True,
    )


def _load_pending(env: Env, rows: int) -> None:
    env.truncate()
    tag, base = env.run_tag(), time.time() - 3600
    with (
        env.admin.cursor() as cur,
        cur.copy(f"COPY {env.schema}.deliveries ({INSERT_COLUMNS}) FROM STDIN") as copy,
    ):
        for i in range(rows):
            row = list(make_row(tag, i))
            row[8] = base + i * 1e-3
            copy.write_row(row)
    env.admin.execute(f"VACUUM ANALYZE {env.schema}.deliveries")


async def bench_claim(d: Driver, results: dict[str, float]) -> None:
    env, args = d.env, d.env.args
    await asyncio.to_thread(_load_pending, env, args.rows)
    committer = d.committer()
    finished = 0
    claim_latencies: list[float] = []
    deadline = time.perf_counter() + args.time_limit

    async def dispatcher(owner: str) -> None:
        nonlocal finished
        while time.perf_counter() < deadline:
            now = time.time()
            t0 = time.perf_counter()
            ids = await committer.submit(
                "claim", (owner, now + 60.0, now, now, now, args.claim_limit)
            )
            claim_latencies.append(time.perf_counter() - t0)
            if not ids:
                return
            count = await committer.submit("finish", (time.time(), owner, ids))
            finished += count

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(dispatcher(f"w{n}") for n in range(args.claim_workers)))
        elapsed = time.perf_counter() - t0
        commits = committer.commits
    finally:
        await committer.close()
    routed = env.count("state = 'routed'")
    if routed != finished:
        print(f"  ! {d.variant} claim: {finished} finished, {routed} routed in the table")
    results["claim+finish rows/s"] = finished / elapsed
    results["claim p50 ms"] = _pct(claim_latencies, 0.5) * 1e3
    print(
        f"  {d.variant:>8} claim: {finished} rows in {elapsed:.2f} s, {commits} commits",
        flush=True,
    )


def _ping_blocking(conn: psycopg.Connection[Any], pipeline: bool, n: int) -> list[float]:
    out: list[float] = []
    with conn.cursor() as cur, contextlib.ExitStack() as stack:
        pipe = stack.enter_context(conn.pipeline()) if pipeline else None
        for _ in range(n):
            t0 = time.perf_counter()
            cur.execute("SELECT 1")
            if pipe is not None:
                pipe.sync()
            cur.fetchone()
            out.append(time.perf_counter() - t0)
    return out


async def _ping_direct(d: Driver, n: int) -> list[float]:
    if d.variant != "asyncpg":
        return await asyncio.to_thread(_ping_blocking, d.conn, d.variant != "psycopg", n)
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await d.conn.fetchval("SELECT 1")
        out.append(time.perf_counter() - t0)
    return out


async def _ping_committer(committer: Committer, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await committer.submit("select1", ())
        out.append(time.perf_counter() - t0)
    return out


async def bench_pings(env: Env) -> dict[str, dict[str, float]]:
    """SELECT 1, the three drivers in alternating blocks (so that drift hits them alike)."""
    n, blocks = env.args.pings, 10
    drivers = [Driver(v, env) for v in VARIANTS]
    direct: dict[str, list[float]] = {v: [] for v in VARIANTS}
    hop: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for d in drivers:
            await d.open()
            if d.variant != "asyncpg":
                d.conn.autocommit = True
            await _ping_direct(d, 50)  # warm-up
        for _ in range(blocks):
            for d in drivers:
                direct[d.variant] += await _ping_direct(d, n // blocks)
        committers = [d.committer(transactional=False) for d in drivers]
        try:
            for c in committers:
                await _ping_committer(c, 50)
            for _ in range(blocks):
                for d, c in zip(drivers, committers, strict=True):
                    hop[d.variant] += await _ping_committer(c, n // blocks)
        finally:
            for c in committers:
                await c.close()
    finally:
        for d in drivers:
            await d.close()
    return {
        v: {
            "SELECT 1 p50 us, driver alone": _pct(direct[v], 0.5) * 1e6,
            "SELECT 1 p50 us, via committer": _pct(hop[v], 0.5) * 1e6,
        }
        for v in VARIANTS
    }


async def run_variant(variant: str, env: Env) -> dict[str, float]:
    d = Driver(variant, env)
    results: dict[str, float] = {}
    await d.open()
    try:
        await bench_append(d, results, env.args.concurrency, f"append x{env.args.concurrency}")
        await bench_append(d, results, 1, "append x1")
        await bench_claim(d, results)
    finally:
        await d.close()
    return results


# higher is better for these; lower for the rest
HIGHER = ("rows/s", "rows/commit")


def print_table(runs: dict[str, list[dict[str, float]]]) -> None:
    med = {v: _medians(rs) for v, rs in runs.items()}
    names = list(med["asyncpg"])
    heads = [
        "scenario",
        *(HEADS[v] for v in VARIANTS),
        *(f"asyncpg vs {SHORT[v]}" for v in PSYCOPG),
    ]
    lines = []
    for name in names:
        vals = [med[v].get(name, float("nan")) for v in VARIANTS]
        a = vals[-1]
        if name.endswith("rows/commit"):
            ratios = [""] * len(PSYCOPG)
        else:
            high = name.endswith(HIGHER)
            ratios = [f"{(a / b if high else b / a):.2f}x" if a and b else "-" for b in vals[:-1]]
        lines.append([name, *(_fmt(x) for x in vals), *ratios])
    widths = [max(len(str(r[i])) for r in [heads, *lines]) for i in range(len(heads))]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in lines:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print("asyncpg vs X: how many times better asyncpg is (> 1: asyncpg faster/quicker)")


def _medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results if k in r) for k in results[0]}


def _fmt(x: float) -> str:
    if x != x:
        return "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}"


async def main_async(args: argparse.Namespace) -> int:
    schema = f"bench_pgdriver_{secrets.token_hex(4)}"
    admin: psycopg.Connection[Any] = psycopg.connect(args.dsn, autocommit=True)
    try:
        info = admin.execute(
            "SELECT version(), current_setting('synchronous_commit'), current_setting('fsync'),"
            " current_setting('wal_sync_method')"
        ).fetchone()
        assert info is not None
        print(
            f"server: {info[0].split(' on ')[0]}; synchronous_commit={info[1]}, fsync={info[2]},"
            f" wal_sync_method={info[3]}"
        )
        print(
            f"client: Python {sys.version.split()[0]}, psycopg {psycopg.__version__}"
            f" (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}), asyncpg"
            f" {asyncpg.__version__}, loop {type(asyncio.get_running_loop()).__module__};"
            f" {os.cpu_count()} cores; schema {schema}"
        )
        print(
            f"append: {args.rows} rows x {len(make_row('x', 0)[6])} B bodies, concurrency"
            f" {args.concurrency}; lone appends: {args.lone_rows}; claim: {args.rows} rows,"
            f" {args.claim_workers} workers x {args.claim_limit}; time limit {args.time_limit} s"
        )
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(SCHEMA_SQL.format(s=schema))
        env = Env(args.dsn, schema, admin, args)
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            for variant in VARIANTS:
                runs[variant].append(await run_variant(variant, env))
            pings = await bench_pings(env)
            for variant in VARIANTS:
                runs[variant][-1].update(pings[variant])
        print()
        print_table(runs)
        if args.rounds > 1:
            print(f"(medians of {args.rounds} rounds)")
    finally:
        with contextlib.suppress(Exception):
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--dsn",
        default=os.environ.get("HOOKDOCK_TEST_PG_DSN") or DEFAULT_DSN,
        help="libpq URI (default: $HOOKDOCK_TEST_PG_DSN, else %(default)s)",
    )
    p.add_argument("--rows", type=int, default=20_000, help="rows per append/claim run")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent append requests")
    p.add_argument("--lone-rows", type=int, default=1000, help="rows appended one at a time")
    p.add_argument("--warmup", type=int, default=500, help="unmeasured appends before each run")
    p.add_argument("--claim-workers", type=int, default=2)
    p.add_argument("--claim-limit", type=int, default=100)
    p.add_argument("--pings", type=int, default=2000, help="SELECT 1 per measure")
    p.add_argument("--time-limit", type=float, default=8.0, help="seconds per measured run")
    p.add_argument("--rounds", type=int, default=1, help="alternate the drivers N times")
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.run(main_async(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
