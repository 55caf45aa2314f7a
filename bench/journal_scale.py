"""Does the journal slow down as it fills?  Ingest and dispatch on an empty journal and on one
that already holds a million deliveries, on SQLite and on PostgreSQL, in one run.

For each engine, two journals: ``empty``, and ``full``, filled first by a bulk loader (not by
POSTing) with ``--rows`` deliveries that look like what weeks of ``hookdock serve`` leave:

  98.4 %  routed, their one event stored, its send to the sink delivered (attempt rows too)
   1.0 %  routed, the send pending: failed three times, next attempt in 1 to 6 hours
   0.5 %  routed, the send dead after five attempts, with a failure code
   0.1 %  dead: could not be routed

each with a distinct ~3 KB SmartDocumentor body, its real dedupe key (task id and SHA-256 of
the body) and stored event JSON, received over the last 30 days.  SQLite is filled with
``executemany`` in transactions of ``--chunk`` deliveries (synchronous off, a big page cache,
no rollback journal while it fills: a throwaway file), PostgreSQL with binary ``COPY`` (then
``VACUUM ANALYZE`` and a ``CHECKPOINT``, what autovacuum and time would do anyway).  Then, on
each journal:

  dispatch  ``--dispatch`` fresh deliveries are appended through the journal (in this process),
            then ``hookdock worker`` drains them into a sink that does nothing
            (``bench/null_sink.py``; ``--sink local`` for the folder sink): events/s from the
            first routing claim to the last delivered send, as the journal recorded them
  ingest    ``hookdock serve`` (dispatcher off) under wrk, as ``bench/ingest.py`` drives it:
            requests/s, p50, p99

``--rounds`` times (3), alternating which journal goes first, with a new empty journal each
round (the full one is filled once and keeps what the rounds add), then prints every run and
the ratios full/empty of the medians (the aim is at least 0.9).  Everything lives in a
temporary folder and fresh schemas ``bench_scale_<hex>``, removed at the end.

    python bench/journal_scale.py                          # 1,000,000 rows, both engines
    python bench/journal_scale.py --rows 20000 --dispatch 2000 -d 3s --rounds 1   # quick
    python bench/journal_scale.py --engines sqlite --keep

Needs wrk on PATH, and PostgreSQL for its rows (``--dsn``, else $HOOKDOCK_TEST_PG_DSN, else
the local test database).  A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import resource
import secrets
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from common import (
    NULL_SINK,
    ROUTE,
    SOURCE,
    BodyTemplate,
    HookdockSetup,
    Server,
    body_template,
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
from ingest import LUA, Result, measure

from handlers.event import RawDelivery
from handlers.sources.smartdocumentor import TextDocumentSource
from receiver.journal import SqlJournal, make_journal

ENGINES = ("sqlite", "postgres")
SINK = "exports"  # the one sink of common.write_config's route
HEADERS = orjson.dumps({"user-agent": "SmartDocumentor/7.4 (+export)"})
OWNER = "bench-fill:1"
DAY = 86_400.0


# ---------------------------------------------------------------- rows of a year's journal


@dataclass(frozen=True)
class Rows:
    """One chunk of filled deliveries, a list of rows per table."""

    deliveries: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    sends: list[tuple[Any, ...]]
    send_attempts: list[tuple[Any, ...]]


DELIVERY_COLUMNS = (
    "id, route, source, received_at, content_type, headers, body, dedupe_key, state, attempts,"
    " next_attempt_at, lease_owner, lease_until, last_error, updated_at"
)
ATTEMPT_COLUMNS = "delivery_id, attempt, owner, started_at, finished_at, outcome, error"
EVENT_COLUMNS = "id, delivery_id, position, body"
SEND_COLUMNS = (
    "id, delivery_id, event_index, sink, state, attempts, next_attempt_at, lease_owner,"
    " lease_until, last_error, delivered_at, updated_at, files, code, event_id"
)
SEND_ATTEMPT_COLUMNS = "send_id, attempt, owner, started_at, finished_at, outcome, error"

PG_TYPES = {
    "deliveries": "text text text text text bytea bytea text text int4 float8 text float8 text"
    " float8",
    "attempts": "text int4 text float8 float8 text text",
    "events": "text text int4 bytea",
    "sends": "int8 text int4 text text int4 float8 text float8 text float8 float8 text text text",
    "send_attempts": "int8 int4 text float8 float8 text text",
}
"""Column types of each table's columns above, for a binary COPY (three times faster than
text here: no hex round trip of the bodies)."""


class EventTemplate:
    """The stored event JSON of one real delivery, normalized by the real source once, with
    its delivery id, task id and time swapped per row (normalizing a million is minutes)."""

    def __init__(self, template: BodyTemplate) -> None:
        self.template = template
        self.delivery_id = "0" * 12 + "f" * 14
        self.task_id = "abcdef01-2345-4000-8000-0123456789ab"
        self.when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        raw = RawDelivery(
            delivery_id=self.delivery_id,
            route=ROUTE,
            source=SOURCE,
            received_at=self.when,
            content_type="application/json",
            headers=orjson.loads(HEADERS),
            body=template.body(self.task_id),
        )
        (event,) = TextDocumentSource().normalize(raw)
        self.json = event.to_json()
        self.when_text = orjson.loads(self.json)["received_at"]
        for needle in (self.delivery_id, self.task_id, self.when_text):
            if needle.encode() not in self.json:
                raise RuntimeError(f"the event template lost {needle!r}: adjust the bench")

    def event(self, delivery_id: str, task_id: str, received: datetime) -> bytes:
        when = received.isoformat().replace("+00:00", "Z")
        if not self.when_text.endswith("Z"):
            when = received.isoformat()
        return (
            self.json.replace(self.delivery_id.encode(), delivery_id.encode())
            .replace(self.task_id.encode(), task_id.encode())
            .replace(self.when_text.encode(), when.encode())
        )


def fill_rows(events: EventTemplate, total: int, chunk: int, tag: int) -> Iterator[Rows]:
    """``total`` deliveries in chunks, oldest first, received over the 30 days before now."""
    rnd = random.Random(tag)
    template = events.template
    now = time.time()
    start = now - 30 * DAY
    step = (30 * DAY - 3600) / max(total, 1)
    send_id = 0
    for first in range(0, total, chunk):
        rows = Rows([], [], [], [], [])
        for i in range(first, min(total, first + chunk)):
            t = start + i * step
            received = datetime.fromtimestamp(t, UTC)
            delivery_id = f"{int(t * 1000):012x}{rnd.getrandbits(56):014x}"
            task_id = f"{tag:08x}-{(i >> 48) & 0xFFFF:04x}-4000-8000-{i & 0xFFFFFFFFFFFF:012x}"
            body = template.body(task_id)
            dedupe = f"{ROUTE}:text_document:{task_id}:{hashlib.sha256(body).hexdigest()}"
            kind = i % 1000
            routed = kind != 999  # 0.1 %: could not be routed
            error: str | None = None if routed else "cannot normalize: no taskId"
            rows.deliveries.append(
                (
                    *(delivery_id, ROUTE, SOURCE, received.isoformat(), "application/json"),
                    *(HEADERS, body, dedupe, "routed" if routed else "dead", 1, t),
                    *(None, None, error, t + 0.01),
                )
            )
            rows.attempts.append(
                (delivery_id, 1, OWNER, t, t + 0.01, "routed" if routed else "dead", error)
            )
            if not routed:
                continue
            event_id = f"{delivery_id}-0"
            event = events.event(delivery_id, task_id, received)
            rows.events.append((event_id, delivery_id, 0, event))
            send_id += 1
            code: str | None = None
            delivered_at: float | None = None
            if kind < 10:  # 1 %: failing, retried in 1 to 6 hours
                error, code, state, tries, outcome = "HTTP 503", "http_503", "pending", 3, "retry"
                next_at = now + rnd.uniform(3600, 6 * 3600)
            elif kind < 15:  # 0.5 %: gave up
                error, code, state, tries, outcome = "HTTP 413", "http_413", "dead", 5, "dead"
                next_at = t + 600
            else:
                state, tries, outcome = "delivered", 1, "delivered"
                next_at = delivered_at = t + 0.02
            rows.sends.append(
                (
                    *(send_id, delivery_id, 0, SINK, state, tries, next_at, None, None),
                    *(error, delivered_at, t + 0.02, None, code, event_id),
                )
            )
            for n in range(1, tries + 1):
                kind_n = outcome if n == tries else "retry"
                rows.send_attempts.append((send_id, n, OWNER, t + n, t + n + 0.01, kind_n, error))
        yield rows


def fill_sqlite(path: Path, rows: Iterator[Rows]) -> int:
    """executemany in one transaction per chunk, on a connection set for loading only."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A throwaway file being loaded: no rollback journal, no fsync; WAL again at the end,
        # as hookdock opens it.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB: the indexes stay in memory
        n = 0
        for chunk in rows:
            conn.execute("BEGIN")
            for name, columns, values in _tables(chunk):
                marks = ",".join("?" * len(columns.split(",")))
                conn.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", values)
            conn.execute("COMMIT")
            n += len(chunk.deliveries)
            _progress(n)
        conn.execute("PRAGMA journal_mode = WAL")
        return n
    finally:
        conn.close()


def fill_postgres(dsn: str, schema: str, rows: Iterator[Rows]) -> int:
    """A binary COPY per table per chunk, then what autovacuum and the checkpointer would do."""
    import psycopg

    n = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("SET synchronous_commit = off")  # a loader: the bench waits at the end
        for chunk in rows:
            with conn.transaction(), conn.cursor() as cur:
                for name, columns, values in _tables(chunk):
                    with cur.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(PG_TYPES[name].split())
                        for row in values:
                            copy.write_row(row)
            n += len(chunk.deliveries)
            _progress(n)
        # The sends' ids were given: the sequence must start after them.
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('sends', 'id'), coalesce(max(id), 1)) FROM sends"
        )
        for name in ("deliveries", "attempts", "events", "sends", "send_attempts"):
            conn.execute(f"VACUUM ANALYZE {name}")
        conn.execute("CHECKPOINT")
    return n


def _tables(rows: Rows) -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    return [
        ("deliveries", DELIVERY_COLUMNS, rows.deliveries),
        ("attempts", ATTEMPT_COLUMNS, rows.attempts),
        ("events", EVENT_COLUMNS, rows.events),
        ("sends", SEND_COLUMNS, rows.sends),
        ("send_attempts", SEND_ATTEMPT_COLUMNS, rows.send_attempts),
    ]


def _progress(n: int) -> None:
    if n % 100_000 == 0:
        print(f"    ... {n} rows", flush=True)


# ---------------------------------------------------------------- reading the journal


class Probe:
    """A plain connection to the journal (read-only unless ``write``) beside the running
    hookdock: polling through it takes no write lock."""

    def __init__(self, setup: HookdockSetup, *, write: bool = False) -> None:
        self.conn: Any
        if setup.pg is None:
            self.mark = "?"
            mode = "rw" if write else "ro"
            self.conn = sqlite3.connect(
                f"file:{setup.journal}?mode={mode}", uri=True, isolation_level=None
            )
        else:
            import psycopg

            self.mark = "%s"
            self.conn = psycopg.connect(setup.pg.dsn, autocommit=True)
            self.conn.execute(f'SET search_path TO "{setup.pg.schema}"')

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", self.mark), params).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql.replace("?", self.mark), params)

    def close(self) -> None:
        self.conn.close()


def journal_size(setup: HookdockSetup) -> int:
    if setup.pg is None:
        return sum(p.stat().st_size for p in setup.journal.parent.glob(setup.journal.name + "*"))
    probe = Probe(setup)
    try:
        row = probe.one(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        return int(row[0] or 0)
    finally:
        probe.close()


# ---------------------------------------------------------------- dispatch


@dataclass
class Dispatch:
    deliveries: int
    append_seconds: float
    delivered: int
    sends: int
    seconds: float | None
    """First routing claim to last delivered send, on the journal's clock."""
    wall: float
    """From starting the worker to seeing the last send delivered (its start-up included)."""
    cpu_seconds: float | None = None
    """The worker's CPU time (user + system, start-up and shutdown included): unlike the rate,
    hardly moved by whatever else the machine is doing."""

    @property
    def rate(self) -> float | None:
        return self.delivered / self.seconds if self.seconds else None


async def append_fresh(setup: HookdockSetup, n: int, template: BodyTemplate) -> tuple[str, str]:
    """``n`` new deliveries through the journal, as ingest makes them; their id range."""
    source = TextDocumentSource()
    tag = random.getrandbits(32)
    journal: SqlJournal = make_journal(setup.journal_config)
    await asyncio.to_thread(journal.open)
    ids: list[str] = []
    try:
        batch: list[Any] = []
        for i in range(n):
            now = time.time()
            delivery = RawDelivery(
                delivery_id=f"{int(now * 1000):012x}{random.getrandbits(56):014x}",
                route=ROUTE,
                source=SOURCE,
                received_at=datetime.fromtimestamp(now, UTC),
                content_type="application/json",
                headers=orjson.loads(HEADERS),
                body=template.body(f"{tag:08x}-ffff-4000-8000-{i:012x}"),
            )
            ids.append(delivery.delivery_id)
            batch.append(journal.append(delivery, source.admit(delivery)))
            if len(batch) == 256:  # 256 requests in flight, as a busy ingest would have
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await journal.close()
    return min(ids), max(ids)


def worker(setup: HookdockSetup, log_dir: Path) -> Server:
    argv = [sys.executable, "-m", "receiver", "worker", "--config", str(setup.config)]
    return Server("worker", argv, port=0, ready_path="", log_dir=log_dir, cwd=setup.config.parent)


def measure_dispatch(
    setup: HookdockSetup,
    n: int,
    template: BodyTemplate,
    work: Path,
    timeout: float,
    workers: int = 1,
) -> Dispatch:
    """``n`` deliveries appended, then drained by ``workers`` ``hookdock worker`` processes."""
    started = time.monotonic()
    lo, hi = asyncio.run(append_fresh(setup, n, template))
    append_seconds = time.monotonic() - started
    probe = Probe(setup)
    servers = []
    for number in range(workers):
        logs = work / f"worker-{number}" if number else work
        logs.mkdir(parents=True, exist_ok=True)
        servers.append(worker(setup, logs))
    delivered = 0
    # The workers are the only children reaped in between: the difference is their CPU time.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        for server in servers:
            server.start_process()
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            delivered = probe.one(
                "SELECT count(*) FROM sends WHERE delivery_id BETWEEN ? AND ?"
                " AND state = 'delivered'",
                (lo, hi),
            )[0]
            if delivered >= n or not all(server.alive() for server in servers):
                break
            time.sleep(0.2)
        wall = time.monotonic() - began
    finally:
        for server in servers:
            server.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        first, last, sends = probe.one(
            "SELECT (SELECT min(started_at) FROM attempts WHERE delivery_id BETWEEN ? AND ?),"
            " (SELECT max(delivered_at) FROM sends WHERE delivery_id BETWEEN ? AND ?),"
            " (SELECT count(*) FROM sends WHERE delivery_id BETWEEN ? AND ?)",
            (lo, hi, lo, hi, lo, hi),
        )
    finally:
        probe.close()
    if delivered < n:
        print(f"    drained {delivered}/{n} in {wall:.0f} s; worker log:\n{servers[0].log_tail()}")
    seconds = last - first if first is not None and last is not None else None
    return Dispatch(n, append_seconds, delivered, sends, seconds, wall, cpu)


# ---------------------------------------------------------------- one journal


@dataclass
class Journal:
    engine: str
    size: str
    setup: HookdockSetup
    rows: int = 0
    fill_seconds: float | None = None


@dataclass
class Row:
    engine: str
    size: str
    round: int
    rows: int
    bytes: int
    dispatch: Dispatch
    ingest: Result


def new_journal(
    args: argparse.Namespace, engine: str, size: str, work: Path, events: EventTemplate
) -> Journal:
    """A journal as ``hookdock serve`` creates it; filled behind its back when ``full``."""
    pg = new_pg_target(pg_dsn(args.dsn), "scale") if engine == "postgres" else None
    setup = write_config(
        work / f"{engine}-{size}-{secrets.token_hex(3)}",
        dispatcher=False,
        pg=pg,
        sink_type=NULL_SINK if args.sink == "null" else "local",
    )
    journal = Journal(engine, size, setup)
    try:
        opened = make_journal(setup.journal_config).open()
        asyncio.run(opened.close())
        if size == "full":
            print(f"  {engine}: filling {args.rows} deliveries ...", flush=True)
            started = time.monotonic()
            chunks = fill_rows(events, args.rows, args.chunk, random.getrandbits(32))
            if pg is None:
                journal.rows = fill_sqlite(setup.journal, chunks)
            else:
                journal.rows = fill_postgres(pg.dsn, pg.schema, chunks)
            journal.fill_seconds = time.monotonic() - started
            print(
                f"  {engine}: filled {journal.rows} in {journal.fill_seconds:.0f} s"
                f" ({journal.rows / journal.fill_seconds:.0f}/s)",
                flush=True,
            )
    except BaseException:
        drop(journal, keep=False)
        raise
    return journal


def drop(journal: Journal, *, keep: bool) -> None:
    if journal.setup.pg is not None:
        drop_pg_schema(journal.setup.pg)
    elif not keep:
        shutil.rmtree(journal.setup.config.parent, ignore_errors=True)


def measure_journal(
    args: argparse.Namespace,
    journal: Journal,
    round_no: int,
    work: Path,
    template: BodyTemplate,
    wrk_files: tuple[Path, tuple[Path, Path]],
) -> Row:
    """Dispatch, then ingest (which leaves its own deliveries pending: it comes last)."""
    setup, engine, size = journal.setup, journal.engine, journal.size
    size_bytes = journal_size(setup)
    dispatch = measure_dispatch(setup, args.dispatch, template, work, args.drain_timeout)
    script, body = wrk_files
    with hookdock_server(setup, free_port(), work) as server:
        ingest = measure(args, engine, server, setup.hook_path, script, body, work, round_no)
    settle_ingested(setup)
    print(
        f"  round {round_no} {engine:8} {size:5}  dispatch {_fmt(dispatch.rate, 0):>5} events/s"
        f" ({dispatch.delivered}/{dispatch.deliveries})"
        f"  ingest {ingest.rps:5.0f} req/s  p50 {ingest.p50_ms:6.2f} ms"
        f"  p99 {ingest.p99_ms:6.2f} ms  non-2xx {ingest.non_2xx}",
        flush=True,
    )
    return Row(engine, size, round_no, journal.rows, size_bytes, dispatch, ingest)


def settle_ingested(setup: HookdockSetup) -> None:
    """Mark what wrk journaled as routed with no sends (what the rules dropping every event
    leaves: done), so the full journal keeps the rows but the next round's worker drains only
    its own fresh deliveries, not this run's tens of thousands first."""
    probe = Probe(setup, write=True)
    try:
        probe.run("UPDATE deliveries SET state = 'routed' WHERE state = 'pending'")
    finally:
        probe.close()


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def report(results: list[Row], fills: dict[str, Journal]) -> str:
    headers = ["engine", "journal", "round", "rows before", "size MiB"]
    headers += ["ingest req/s", "p50 ms", "p99 ms", "non-2xx"]
    headers += ["dispatch events/s", "drained", "append/s"]
    lines = [
        table(
            headers,
            [
                [
                    r.engine,
                    r.size,
                    str(r.round),
                    str(r.rows),
                    f"{r.bytes / 2**20:.0f}",
                    f"{r.ingest.rps:.0f}",
                    _fmt(r.ingest.p50_ms),
                    _fmt(r.ingest.p99_ms),
                    str(r.ingest.non_2xx),
                    _fmt(r.dispatch.rate, 0),
                    f"{r.dispatch.delivered}/{r.dispatch.deliveries}",
                    f"{r.dispatch.deliveries / r.dispatch.append_seconds:.0f}",
                ]
                for r in results
            ],
        )
    ]
    for engine, full in fills.items():
        if full.fill_seconds:
            lines.append(
                f"{engine} fill: {full.rows} deliveries in {full.fill_seconds:.0f} s"
                f" ({full.rows / full.fill_seconds:.0f}/s)"
            )
    rounds = max((r.round for r in results), default=1)
    how = "" if rounds == 1 else f", medians of {rounds} rounds"
    for engine in ENGINES:
        rows = {
            size: [r for r in results if r.engine == engine and r.size == size]
            for size in ("empty", "full")
        }
        if not rows["empty"] or not rows["full"]:
            continue
        ingest = [_median([r.ingest.rps for r in rows[size]]) for size in ("empty", "full")]
        p99 = [_median([r.ingest.p99_ms for r in rows[size]]) for size in ("empty", "full")]
        dispatch = [_median([r.dispatch.rate for r in rows[size]]) for size in ("empty", "full")]

        def ratio(pair: list[float | None]) -> str:
            return _fmt(pair[1] / pair[0] if pair[0] and pair[1] else None)

        lines.append(
            f"{engine} full/empty ({rows['full'][0].rows} rows{how}):"
            f" ingest {ratio(ingest)} ({_fmt(ingest[1], 0)} / {_fmt(ingest[0], 0)} req/s),"
            f" dispatch {ratio(dispatch)} ({_fmt(dispatch[1], 0)} / {_fmt(dispatch[0], 0)}"
            f" events/s), ingest p99 {ratio(p99)}  (aim >= 0.90; p99: lower is better)"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="deliveries in the full journal"
    )
    parser.add_argument("--chunk", type=int, default=20_000, help="deliveries per fill transaction")
    parser.add_argument(
        "--dispatch", type=int, default=5000, help="fresh deliveries to drain (default 5000)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="longest drain, seconds (default 300)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternate empty/full this many times (default 3)"
    )
    parser.add_argument("--sink", choices=["null", "local"], default="null")
    parser.add_argument("--engines", default=",".join(ENGINES), help="sqlite,postgres (default)")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $HOOKDOCK_TEST_PG_DSN or local)")
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "-c", "--connections", type=int, default=32, help="wrk connections (default 32)"
    )
    parser.add_argument("-d", "--duration", default="10s", help="measured ingest (default 10s)")
    parser.add_argument("--warmup", default="2s", help="wrk warm-up run before each (default 2s)")
    parser.add_argument("--timeout", default="5s", help="wrk request timeout (default 5s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.journal_stats = False  # what ingest.measure reads

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        parser.error(f"--engines: of {', '.join(ENGINES)}")
    if shutil.which("wrk") is None:
        print("bench/journal_scale.py needs wrk on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if "postgres" in engines and (problem := pg_problem(pg_dsn(args.dsn))) is not None:
        print(f"PostgreSQL is not reachable ({problem})", file=sys.stderr)
        return 2

    work = work_folder("hookdock-bench-scale-")
    template = body_template()
    events = EventTemplate(template)
    body = (work / "body-prefix.json", work / "body-suffix.json")
    body[0].write_bytes(template.prefix)
    body[1].write_bytes(template.suffix)
    script = work / "post.lua"
    script.write_text(LUA, encoding="utf-8")
    print(
        f"journal scale: {args.rows} rows before, {args.dispatch} to dispatch"
        f" ({args.sink} sink), wrk -t{args.threads} -c{args.connections} -d{args.duration};"
        f" {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[Row] = []
    fills: dict[str, Journal] = {}
    started = time.monotonic()
    wrk_files = (script, body)
    try:
        for engine in engines:
            full = fills[engine] = new_journal(args, engine, "full", work, events)
            try:
                for round_no in range(1, args.rounds + 1):
                    # A new empty journal each round (the last one's runs filled it a little);
                    # the order alternates so that a drift in the machine's load hits both.
                    empty = new_journal(args, engine, "empty", work, events)
                    try:
                        pair = [empty, full] if round_no % 2 else [full, empty]
                        for journal in pair:
                            results.append(
                                measure_journal(args, journal, round_no, work, template, wrk_files)
                            )
                    finally:
                        drop(empty, keep=args.keep)
            finally:
                drop(full, keep=args.keep)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n(whole run {time.monotonic() - started:.0f} s)\n")
    print(report(results, fills))
    return 0


if __name__ == "__main__":
    sys.exit(main())
