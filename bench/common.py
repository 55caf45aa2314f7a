"""Shared pieces of the benchmarks: request bodies, a temporary hookdock config, servers.

Everything here talks to 127.0.0.1 only, and every process it starts is stopped by ``Server``
(SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

from handlers.event import Event  # noqa: E402
from receiver.journal import PostgresConfig, SqliteConfig, SqlJournal, make_journal  # noqa: E402
from tests.sd_payloads import load  # noqa: E402

HOST = "127.0.0.1"
ROUTE = "sd-text"
SOURCE = "smartdocumentor.text_document"
TASK_ID_MARK = "@@TASK_ID@@"


# ---------------------------------------------------------------- bodies


@dataclass(frozen=True)
class BodyTemplate:
    """A text-document body split around its ``taskId`` value: ``prefix + id + suffix``."""

    prefix: bytes
    suffix: bytes
    workspace_id: str

    def body(self, task_id: str) -> bytes:
        return self.prefix + task_id.encode() + self.suffix

    @property
    def size(self) -> int:
        """Length with a 36-character (UUID-shaped) task id."""
        return len(self.prefix) + 36 + len(self.suffix)


def body_template(target_bytes: int = 3072) -> BodyTemplate:
    """The recorded ``text_document/baseline`` body, with entities dropped from the end until it
    is at most ``target_bytes`` long (compact JSON, a UUID-shaped task id)."""
    doc: dict[str, Any] = orjson.loads(load("text_document", "baseline"))
    doc["taskId"] = TASK_ID_MARK

    def size() -> int:
        return len(orjson.dumps(doc)) - len(TASK_ID_MARK) + 36

    while size() > target_bytes:
        chunks = doc["chunks"]
        if not chunks:
            break
        if chunks[-1]["entities"]:
            chunks[-1]["entities"].pop()
        else:
            chunks.pop()
    prefix, suffix = orjson.dumps(doc).split(TASK_ID_MARK.encode())
    return BodyTemplate(prefix, suffix, str(doc["workspaceId"]))


# ---------------------------------------------------------------- work folders

# linux/fs.h: FS_IOC_GETFLAGS, FS_IOC_SETFLAGS (the kernel reads an int) and FS_TOPDIR_FL.
_GETFLAGS = 0x80086601
_SETFLAGS = 0x40086602
_TOPDIR = 0x00020000


def work_folder(prefix: str) -> Path:
    """A new temporary folder for one run, flagged so that ext4 places each folder made directly
    in it as it would a top-level folder (``chattr +T``): spread over the block groups instead
    of beside the temporary folder, where every earlier run made and deleted its files.

    Why: an ext4 without a journal (the CI machine's is one) passes over every inode of a group
    deleted in the last minutes whenever it allocates one there, reading each one's inode table
    block (``recently_deleted`` in ``fs/ext4/ialloc.c``).  Each run deletes its tens of thousands
    of files, so the next run's creates in those groups cost 10 to 30 times more kernel CPU: a
    folder and a file made in a plain loop measured 25 to 53 µs in a fresh group and 560 to
    1,500 µs in ``/tmp`` after a few runs.  The flag only makes a fresh group likely, not sure
    (after many runs most groups have had deletions): ``create_cost_us`` measures what the run
    got, and the scripts print it beside the figures it weighs on.  Where the flag cannot be set
    (another filesystem) nothing changes.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            flags = array.array("i", [0])
            fcntl.ioctl(fd, _GETFLAGS, flags, True)
            flags[0] |= _TOPDIR
            fcntl.ioctl(fd, _SETFLAGS, flags)
        finally:
            os.close(fd)
    return folder


def create_cost_us(folder: Path, n: int = 500) -> float:
    """CPU (user and kernel) of making a folder and a 3 KiB file in it, in µs each, measured
    in ``folder`` (made if missing, and left in place): what this disk charges for the folder
    sink's own work in this run, to print beside the figures it weighs on (see
    ``work_folder``: from 25 µs to 1,500 µs on the same machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"x" * 3072
    started = time.process_time()
    for i in range(n):
        sub = folder / f"probe-{i}"
        sub.mkdir()
        fd = os.open(sub / "file.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return (time.process_time() - started) * 1e6 / n


# ---------------------------------------------------------------- hookdock config


@dataclass(frozen=True)
class PgTarget:
    """A PostgreSQL journal for a bench run: the DSN and a schema of its own."""

    dsn: str
    schema: str


@dataclass(frozen=True)
class HookdockSetup:
    config: Path
    token: str
    journal: Path
    """The SQLite journal's file (unused when ``pg`` is set)."""
    exports: Path
    pg: PgTarget | None = None

    @property
    def hook_path(self) -> str:
        return f"/hooks/{ROUTE}/{self.token}"

    @property
    def journal_config(self) -> SqliteConfig | PostgresConfig:
        """The ``[journal]`` this config names, with absolute paths: for ``make_journal``."""
        if self.pg is None:
            return SqliteConfig(path=self.journal)
        return PostgresConfig.model_validate(
            {"type": "postgres", "dsn": self.pg.dsn, "schema": self.pg.schema}
        )


NULL_SINK = "bench.null_sink:NullSink"
"""A sink that accepts every event and does nothing: what is left is hookdock's own cost."""


def write_config(
    directory: Path,
    *,
    dispatcher: bool = True,
    pg: PgTarget | None = None,
    sink_type: str = "local",
    sink_options: str = "",
    dispatcher_options: str = "",
) -> HookdockSetup:
    """A config with one url-token route for SmartDocumentor text documents and one sink
    (``local``: a folder; or ``NULL_SINK``), journal and exports inside ``directory`` (paths
    relative to the config file), or the journal in PostgreSQL when ``pg`` is given;
    ``sink_options``, ``dispatcher_options``: more TOML lines for those tables."""
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    if pg is None:
        journal = 'path = "data/hookdock.db"'
    else:
        # json.dumps makes a valid TOML basic string of a DSN or a schema name.
        journal = f'type = "postgres"\ndsn = {json.dumps(pg.dsn)}\nschema = {json.dumps(pg.schema)}'
    sink = 'root = "exports"\n' if sink_type == "local" else ""
    sink += sink_options
    text = f"""\
# Written by bench/: one route, one sink, everything under this folder (or in PostgreSQL).
[server]
host = "{HOST}"
grace_seconds = 5.0

[journal]
{journal}

[dispatcher]
enabled = {"true" if dispatcher else "false"}
{dispatcher_options}
[[routes]]
name = "{ROUTE}"
source = "{SOURCE}"
sinks = ["exports"]
auth = {{ type = "url-token", token = "{token}" }}

[sinks.exports]
type = "{sink_type}"
{sink}"""
    path = directory / "hookdock.toml"
    path.write_text(text, encoding="utf-8")
    return HookdockSetup(path, token, directory / "data" / "hookdock.db", directory / "exports", pg)


# ---------------------------------------------------------------- journals


PG_DSN_ENV = "HOOKDOCK_TEST_PG_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_dsn(given: str | None = None) -> str:
    """``--dsn``, else ``$HOOKDOCK_TEST_PG_DSN``, else the local test database."""
    return given or os.environ.get(PG_DSN_ENV) or DEFAULT_PG_DSN


def pg_problem(dsn: str) -> str | None:
    """Why PostgreSQL at ``dsn`` cannot be used (one line), or None."""
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def new_pg_target(dsn: str, purpose: str) -> PgTarget:
    """A fresh schema name; the journal creates the schema, ``drop_pg_schema`` removes it."""
    return PgTarget(dsn, f"bench_{purpose}_{secrets.token_hex(4)}")


def drop_pg_schema(target: PgTarget) -> None:
    import psycopg

    with psycopg.connect(target.dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{target.schema}" CASCADE')


async def _with_journal(setup: HookdockSetup, fn: Any) -> Any:
    journal: SqlJournal = make_journal(setup.journal_config, create=False)
    await asyncio.to_thread(journal.open)
    try:
        return await fn(journal)
    finally:
        await journal.close()


def journal_counts(setup: HookdockSetup) -> dict[str, int]:
    """The journal's deliveries per overall state, read through the journal itself (the
    server must have stopped for SQLite, or this waits on its lock); {} if it cannot."""

    async def counts(journal: SqlJournal) -> dict[str, int]:
        return {str(state): n for state, n in (await journal.counts()).items()}

    try:
        result: dict[str, int] = asyncio.run(_with_journal(setup, counts))
    except Exception as exc:
        print(f"cannot read the journal's states: {exc}", file=sys.stderr)
        return {}
    return result


def journal_query(setup: HookdockSetup, sql: str, params: Sequence[Any] = ()) -> Any:
    """One row of ``sql`` (``?`` placeholders, either engine), read through the journal."""

    async def query(journal: SqlJournal) -> Any:
        # The journal's read path converts the placeholders and picks the connection.
        return await journal._read(lambda tx: tx.execute(sql, params).fetchone())

    return asyncio.run(_with_journal(setup, query))


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One server subprocess, logs to files in ``log_dir``; use as a context manager."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        ready_path: str,
        log_dir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_dir / f"{name}.log"
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_process(self) -> None:
        """Start it without waiting for it to answer (a worker serves nothing)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=_child_env()
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 30.0) -> None:
        self.start_process()
        assert self.proc is not None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready;"
                    f" see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                url = self.base_url + self.ready_path  # always http://127.0.0.1:...
                with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {ready_timeout:.0f}s")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The children import ``receiver``/``bench`` from this checkout whatever the working folder.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p)
    env.pop("HOOKDOCK_CONFIG", None)
    return env


def hookdock_server(
    setup: HookdockSetup, port: int, log_dir: Path, *, journal_stats: bool = False
) -> Server:
    """``python -m receiver serve --config ... --port ...`` (the stats wrapper runs the same
    CLI and only adds a SIGUSR1 handler that prints the journal's commit counters)."""
    if journal_stats:
        argv = [sys.executable, str(BENCH_DIR / "serve_stats.py")]
    else:
        argv = [sys.executable, "-m", "receiver"]
    argv += ["serve", "--config", str(setup.config), "--port", str(port)]
    return Server(
        "hookdock", argv, port=port, ready_path="/readyz", log_dir=log_dir, cwd=setup.config.parent
    )


def worker_process(setup: HookdockSetup, log_dir: Path, *, nice: int = 0) -> Server:
    """``python -m receiver worker --config ...`` (under ``nice -n`` when ``nice`` is set):
    start it with ``start_process``."""
    argv = [sys.executable, "-m", "receiver", "worker", "--config", str(setup.config)]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    return Server("worker", argv, port=0, ready_path="", log_dir=log_dir, cwd=setup.config.parent)


def bare_server(port: int, log_dir: Path) -> Server:
    argv = [sys.executable, str(BENCH_DIR / "bare_app.py"), "--port", str(port)]
    return Server("bare", argv, port=port, ready_path="/healthz", log_dir=log_dir)


# ---------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``nan`` when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def bench_events(n: int, body_bytes: int = 3072, tag: str | None = None) -> list[Event]:
    """``n`` distinct text-document events (each its own task id) whose payload is the body a
    benchmark would POST: what a sink is handed after normalizing, made before any clock runs."""
    template = body_template(body_bytes)
    tag = tag or secrets.token_hex(4)
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        task_id = f"{tag}-4000-8000-{i:012x}"
        delivery_id = f"{tag}{i:010d}"
        events.append(
            Event(
                event_id=f"{delivery_id}-0",
                delivery_id=delivery_id,
                vendor="smartdocumentor",
                kind="text_document",
                route=ROUTE,
                received_at=now,
                task_id=task_id,
                workspace_id=template.workspace_id,
                payload=orjson.loads(template.body(task_id)),
            )
        )
    return events
