"""Crash test: SIGKILL the server mid-burst, over and over, then drain and count the exports.

One journal and one export folder are shared by every run, so the state left by each kill is
what the next server starts from.  Each run starts ``python -m receiver serve`` in a
subprocess, fires a bounded burst of concurrent posts (every one a distinct ``taskId``, hence a
distinct dedupe key) and kills the server with SIGKILL at a seeded random moment: after a
random number of 2xx answers, or after a random delay.  A request that got a 2xx must end up
exported exactly once; one that got an error or a reset connection may or may not have been
stored, but is never exported twice.  After the last run a final server drains the journal,
and the journal itself is read: every delivery id answered with a 2xx is in it.

It runs on each journal engine: a SQLite file, and a PostgreSQL schema of the test's own (where
a kill drops the server's connections and PostgreSQL rolls back whatever was not committed).

Reproduce one schedule with the seeds printed per run (``SEED_BASE + run``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import delivery_id_from, pg_journal_table, to_toml
from tests.sd_payloads import load

pytestmark = [pytest.mark.crash, pytest.mark.timeout(240)]

SEED_BASE = 20261122
RUNS = 20
BURST = 200
TOKEN = "crash-test-token_0123456789.abc~XYZ"
ROUTE = "sd-text"
VENDOR = "smartdocumentor"
KIND = "text_document"
READY_SECONDS = 20.0
RUN_SECONDS = 20.0
DRAIN_SECONDS = 60.0
_HOOKDOCK = (sys.executable, "-m", "receiver")

SQLITE_JOURNAL = """\
[journal]
path = "data/hookdock.db"
"""

CONFIG = f"""\
[server]
host = "127.0.0.1"
grace_seconds = 2

{{journal}}
[dispatcher]
poll_seconds = 0.1
lease_seconds = 2

[dispatcher.retry]
max_attempts = 50
base_seconds = 0.1
cap_seconds = 1.0

[[routes]]
name = "{ROUTE}"
source = "smartdocumentor.{KIND}"
auth = {{ type = "url-token", token = "{TOKEN}" }}
sinks = ["exports"]

[sinks.exports]
type = "local"
root = "exports"
"""


@dataclass
class RunResult:
    run: int
    seed: int
    trigger: str
    acked: set[str] = field(default_factory=set)
    delivery_ids: dict[str, str] = field(default_factory=dict)
    """taskId -> the delivery id its 2xx named."""
    unknown: set[str] = field(default_factory=set)
    unsent: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)
    killed_mid_burst: bool = False


class Server:
    """``python -m receiver serve`` in a subprocess, its output in a log file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*_HOOKDOCK, "serve", "--config", str(config), "--port", str(self.port)],
            cwd=config.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, deadline_seconds: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + deadline_seconds
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited early ({self.proc.returncode}):\n{self.log}"
                    )
                try:
                    if client.get(f"{self.base}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.02)  # deadline-bounded poll
        raise AssertionError(f"server not ready within {deadline_seconds}s:\n{self.log}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Kill if still running, reap, close the log: safe to call more than once."""
        try:
            self.kill()
            self.proc.wait(timeout=10)
        finally:
            self._log.close()

    def stop(self) -> int:
        """A graceful stop (SIGTERM), SIGKILL as the fallback."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _body(template: dict[str, object], task_id: str) -> bytes:
    return orjson.dumps({**template, "taskId": task_id})


async def _burst(
    server: Server, run: int, rng: random.Random, template: dict[str, object]
) -> RunResult:
    concurrency = rng.randint(16, 32)
    if rng.random() < 0.5:
        kill_after_acks = rng.randrange(0, BURST)
        kill_after_seconds = RUN_SECONDS  # only the bound: the ack count triggers the kill
        trigger = f"after {kill_after_acks} acks (concurrency {concurrency})"
    else:
        kill_after_acks = BURST + 1  # never
        kill_after_seconds = rng.uniform(0.0, 0.4)
        trigger = f"after {kill_after_seconds * 1000:.0f} ms (concurrency {concurrency})"
    result = RunResult(run=run, seed=SEED_BASE + run, trigger=trigger)
    url = f"{server.base}/hooks/{ROUTE}/{TOKEN}"
    reached = asyncio.Event()
    done_sending = asyncio.Event()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(limits=limits, timeout=RUN_SECONDS) as client:

        async def post(i: int) -> None:
            task_id = f"run{run}-{i}"
            async with gate:
                try:
                    response = await client.post(
                        url,
                        content=_body(template, task_id),
                        headers={"content-type": "application/json"},
                    )
                except httpx.ConnectError:
                    result.unsent.add(task_id)  # never reached the server: not stored
                    return
                except httpx.TransportError:
                    result.unknown.add(task_id)  # cut off mid-request: may be stored
                    return
            if 200 <= response.status_code < 300:
                assert "already accepted" not in response.text, (task_id, response.text)
                result.acked.add(task_id)
                result.delivery_ids[task_id] = delivery_id_from(response.text)
                if len(result.acked) >= kill_after_acks:
                    reached.set()
            else:
                result.refused[task_id] = response.status_code

        async def killer() -> None:
            if kill_after_acks == 0:
                reached.set()
            waits = [asyncio.ensure_future(e.wait()) for e in (reached, done_sending)]
            try:
                await asyncio.wait(
                    waits, timeout=kill_after_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()
            result.killed_mid_burst = not done_sending.is_set()
            server.kill()

        kill_task = asyncio.create_task(killer())
        posts = [asyncio.create_task(post(i)) for i in range(BURST)]
        try:
            async with asyncio.timeout(RUN_SECONDS):
                await asyncio.gather(*posts)
                done_sending.set()
                await kill_task
        finally:
            for task in [*posts, kill_task]:
                task.cancel()
            await asyncio.gather(*posts, kill_task, return_exceptions=True)
    return result


def _status(config: Path) -> dict[str, int]:
    out = subprocess.run(
        [*_HOOKDOCK, "--log-level", "warning", "status", "--config", str(config)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    counts: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return counts


def _exports(root: Path) -> tuple[Counter[str], list[Path], list[Path]]:
    """Files per taskId, the exported files, and any leftover temp files."""
    per_task: Counter[str] = Counter()
    files: list[Path] = []
    temps: list[Path] = []
    if not root.exists():
        return per_task, files, temps
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            temps.append(path)
            continue
        rel = path.relative_to(root).parts
        # smartdocumentor/<workspace>/<taskId>/text_document-<eventid>.json
        assert len(rel) == 4, path
        assert rel[0] == VENDOR, path
        assert rel[3].startswith(f"{KIND}-") and rel[3].endswith(".json"), path
        per_task[rel[2]] += 1
        files.append(path)
    return per_task, files, temps


def _journal_ids(folder: Path, pg: tuple[str, str] | None) -> set[str]:
    """Every delivery id in the journal, read with the engine's own driver."""
    if pg is not None:
        dsn, schema = pg
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            return {row[0] for row in conn.execute(f'SELECT id FROM "{schema}".deliveries')}
    db = sqlite3.connect(folder / "data" / "hookdock.db")
    try:
        return {row[0] for row in db.execute("SELECT id FROM deliveries")}
    finally:
        db.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_sigkill_mid_burst_loses_and_duplicates_nothing(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    pg: tuple[str, str] | None = None
    journal = SQLITE_JOURNAL
    if engine == "postgres":
        pg = (request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema"))
        journal = to_toml({"journal": pg_journal_table(*pg)})
    config = tmp_path / "hookdock.toml"
    config.write_text(CONFIG.replace("{journal}", journal), encoding="utf-8")
    exports = tmp_path / "exports"
    template = orjson.loads(load(KIND, "baseline"))
    workspace = str(template["workspaceId"])

    results: list[RunResult] = []
    for run in range(RUNS):
        rng = random.Random(SEED_BASE + run)
        server = Server(config, tmp_path / f"server-run{run:02d}.log")
        try:
            server.wait_ready()
            result = asyncio.run(_burst(server, run, rng, template))
        finally:
            server.close()
        assert server.proc.returncode == -signal.SIGKILL, (run, server.proc.returncode)
        bad = {t: s for t, s in result.refused.items() if s < 500}
        assert not bad, f"run {run}: requests refused as malformed: {bad}\n{server.log}"
        results.append(result)
        print(
            f"run {run:2d} seed {result.seed}: kill {result.trigger}: "
            f"{len(result.acked)} acked, {len(result.unknown)} unknown, "
            f"{len(result.unsent)} unsent, "
            f"{len(result.refused)} refused, mid-burst={result.killed_mid_burst}"
        )

    acked = set().union(*(r.acked for r in results))
    delivery_ids = {t: d for r in results for t, d in r.delivery_ids.items()}
    unknown = set().union(*(r.unknown for r in results))
    unsent = set().union(*(r.unsent for r in results))
    refused = {t: s for r in results for t, s in r.refused.items()}
    sent = {f"run{r.run}-{i}" for r in results for i in range(BURST)}

    # Drain: one more server, until every acked task is exported and nothing is pending.
    drain_log = tmp_path / "server-drain.log"
    server = Server(config, drain_log)
    counts: dict[str, int] = {}
    try:
        server.wait_ready()
        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            per_task, _, _ = _exports(exports)
            if acked <= set(per_task):
                counts = _status(config)
                if counts.get("pending", 0) == 0:
                    break
            if time.monotonic() > deadline:
                missing = sorted(acked - set(per_task))
                raise AssertionError(
                    f"not drained within {DRAIN_SECONDS}s: status {counts}, "
                    f"{len(missing)} acked tasks not exported, e.g. {missing[:10]}\n{server.log}"
                )
            time.sleep(0.2)  # deadline-bounded poll
        assert server.stop() == 0, server.log  # a clean shutdown exits 0
    finally:
        server.close()

    counts = _status(config)
    per_task, files, temps = _exports(exports)
    missing = sorted(acked - set(per_task))
    duplicated = {t: n for t, n in per_task.items() if n > 1}
    strangers = sorted(set(per_task) - sent)
    never_acked_exported = sorted(set(per_task) - acked)
    kills_mid_burst = sum(r.killed_mid_burst for r in results)
    states = {k: counts.get(k) for k in ("pending", "done", "dead")}
    elapsed = time.monotonic() - started
    print(
        f"\ncrash summary ({engine}): {RUNS} runs / {RUNS} SIGKILLs ({kills_mid_burst} mid-burst), "
        f"{len(sent)} sent, {len(acked)} acked 2xx, {len(unknown)} unknown outcome, "
        f"{len(unsent)} never connected, "
        f"{len(refused)} refused 5xx, {len(files)} exported files "
        f"({len(never_acked_exported)} of them for unacked requests), "
        f"status {states}, "
        f"{elapsed:.1f}s"
    )

    assert not missing, f"{len(missing)} acked deliveries never exported: {missing[:20]}"
    # Every 2xx named a delivery the journal holds, and the export is that very delivery's.
    unjournaled = sorted(set(delivery_ids.values()) - _journal_ids(tmp_path, pg))
    assert not unjournaled, f"{len(unjournaled)} acked delivery ids not in the journal"
    exported_ids = {p.parent.name: p.name.split("-")[1] for p in files}
    wrong = {t: (d, exported_ids[t]) for t, d in delivery_ids.items() if exported_ids[t] != d}
    assert not wrong, f"exported under another delivery id than acked: {list(wrong.items())[:5]}"
    assert not duplicated, f"exported more than once: {dict(list(duplicated.items())[:20])}"
    assert not strangers, f"exports for tasks never sent: {strangers[:20]}"
    assert all(p.parent.parent.name == workspace for p in files)
    assert counts.get("dead", 0) == 0, counts
    assert counts.get("pending", 0) == 0, counts
    # One delivery per distinct task, each done with exactly one file.
    assert counts.get("done", 0) == len(files), (counts, len(files))
    # The test must not pass vacuously: kills landed while requests were in flight.
    assert acked, "no request was ever acknowledged"
    assert unknown, "no kill ever interrupted a request"
    assert kills_mid_burst >= RUNS // 2, kills_mid_burst
    # Last, so that a failure here says every check above passed: a sink write cut off by
    # SIGKILL must not leave its temp file behind for good.
    orphans = [
        # (temp file, its size, whether the finished file it was meant to become exists)
        (
            str(t.relative_to(exports)),
            t.stat().st_size,
            t.with_name(t.name[1:].split(".json.")[0] + ".json").exists(),
        )
        for t in temps
    ]
    assert not temps, f"{len(temps)} leftover temp files in the export folder: {orphans[:20]}"
