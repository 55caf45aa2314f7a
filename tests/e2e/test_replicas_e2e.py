"""Two ``hookdock serve`` replicas on one PostgreSQL schema behind a real HAProxy.

HAProxy runs ``infra/haproxy.cfg`` itself, on loopback ports with faster checks
(``tests/haproxy.py``).  The replicas share one export folder and a journal schema, with
``[cluster]`` heartbeats every 0.5 s and a 2 s stale limit.  A bounded load of real POSTs
(a few threads, each with its own httpx client, unique task ids, bounded by count and time)
goes through the balancer while:

* one replica is SIGKILLed holding sends in flight to a slow HTTP destination: every delivery
  a client saw answered 2xx is exported exactly once to the folder, and reaches the slow
  destination too; the survivor logs "took over N leases" no earlier than the dead replica's
  last heartbeat + stale_seconds, and its leases and process row are gone from the journal
  and from ``hookdock status``;
* both replicas are restarted one at a time with SIGTERM (each new one on the old one's port,
  the next one restarted only once HAProxy sees it UP): no request fails at the client and
  HAProxy answers no 5xx; each draining replica leaves the rotation within drain_seconds;
* retention, a named-lease job, runs on exactly one replica (``hookdock status`` names it;
  only it logs that it runs the job and deletes anything), and moves to the other replica when
  its holder is SIGKILLed, within stale_seconds and a margin.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    free_port,
    make_config,
    pg_journal_table,
    route,
    run_cli,
    wait_until,
)
from tests.haproxy import HAPROXY_MISSING, SERVER_NAMES, HAProxy, haproxy_binary
from tests.webhook_receiver import Reply, WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(240)]

WORKSPACE = "ws-replicas"
HEARTBEAT = 0.5
STALE = 2.0
DRAIN = 1.5
GRACE = 4.0
SLOW_SECONDS = 0.3
"""How long the slow HTTP destination takes to answer each event."""
ROUTE = SD_ROUTES["text_document"]
SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtcmVwbGljYXMtdGVzdA=="
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_TOOK_OVER = re.compile(r"took over (\d+) leases")


@pytest.fixture(autouse=True)
def _needs_haproxy() -> None:
    if haproxy_binary() is None:
        pytest.fail(HAPROXY_MISSING, pytrace=False)


# --------------------------------------------------------------------------- the cluster


def cluster_config(
    tmp_path: Path, dsn: str, schema: str, *, sinks: dict[str, Any], **overrides: Any
) -> Path:
    """One config both replicas run: PostgreSQL journal, one route, a shared export folder."""
    text = make_config(
        tmp_path,
        server={"drain_seconds": DRAIN, "grace_seconds": GRACE},
        journal={"path": None, **pg_journal_table(dsn, schema)},
        cluster={"heartbeat_seconds": HEARTBEAT, "stale_seconds": STALE},
        routes=[route(ROUTE, {"type": "url-token", "token": CREDS.url_token}, sinks=list(sinks))],
        sinks=sinks,
        **overrides,
    )
    path = tmp_path / "hookdock.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Cluster:
    config: Path
    folder: Path
    ports: list[int]
    replicas: list[HookdockProcess]
    """The current process of hookdock-1 and hookdock-2 (a restart replaces one)."""
    lb: HAProxy
    every: list[HookdockProcess] = field(default_factory=list)
    """Every process started, restarted ones included: all are stopped at the end."""

    def start_replica(self, index: int) -> HookdockProcess:
        folder = self.folder / SERVER_NAMES[index]
        folder.mkdir(parents=True, exist_ok=True)
        # Each replica on a node of its own, as on two machines: a dead one is then known by
        # its stale heartbeat alone, never by a pid check on this host.
        config = folder / "hookdock.toml"
        text = self.config.read_text(encoding="utf-8")
        assert "\n[cluster]\n" in text
        text = text.replace("\n[cluster]\n", f'\n[cluster]\nnode = "node-{index + 1}"\n', 1)
        config.write_text(text, encoding="utf-8")
        process = HookdockProcess(folder, config, port=self.ports[index])
        self.every.append(process)
        process.start()
        process.wait_ready()
        if index < len(self.replicas):
            self.replicas[index] = process
        else:
            self.replicas.append(process)
        return process

    def owner(self, process: HookdockProcess) -> str:
        """The process's name in the journal (``host/pid/random``), from ``hookdock status``."""
        assert process.proc is not None
        (owner,) = [p["owner"] for p in self.status()["processes"] if p["pid"] == process.proc.pid]
        return str(owner)

    def status(self) -> dict[str, Any]:
        done = run_cli("status", config=self.config)
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def describe(self) -> str:
        haproxy = self.lb.log()[-4000:]
        return "\n".join(p.describe() for p in self.every) + f"\n--- haproxy ---\n{haproxy}"


@contextlib.contextmanager
def run_cluster(tmp_path: Path, config: Path) -> Iterator[Cluster]:
    """Two replicas on fixed ports (a restart reuses its port), then HAProxy in front."""
    ports = [free_port(), free_port()]
    cluster = Cluster(config, tmp_path, ports, [], HAProxy(tmp_path, ports))
    try:
        for index in range(2):
            cluster.start_replica(index)
        cluster.lb.start()
        for name in SERVER_NAMES:
            cluster.lb.wait_status(name, "UP")
        yield cluster
    finally:
        cluster.lb.stop()
        for process in cluster.every:
            process.stop()


def journal_rows(dsn: str, schema: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from PostgreSQL, not through hookdock."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return list(conn.execute(sql, params).fetchall())


def log_time(line: str) -> float:
    """The epoch seconds of a hookdock log line (its asctime is local time, ms)."""
    match = _LOG_TIME.match(line)
    assert match, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def lines_with(process: HookdockProcess, text: str) -> list[str]:
    return [line for line in process.stderr_text().splitlines() if text in line]


# --------------------------------------------------------------------------- the load


def text_document(task_id: str) -> bytes:
    return json.dumps(
        {"taskId": task_id, "workspaceId": WORKSPACE, "displayName": "r.pdf", "chunks": []}
    ).encode()


@dataclass
class Answer:
    task_id: str
    status: int | None
    """None: no HTTP answer (the error says why)."""
    delivery_id: str | None = None
    error: str | None = None
    sent_at: float = 0.0
    """Wall-clock time the POST began."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Load:
    """``threads`` clients POSTing through the balancer, each up to ``posts`` times, until
    ``stop()`` or ``seconds``; one unique task id per POST, never retried."""

    def __init__(
        self, url: str, *, threads: int = 4, posts: int = 2000, seconds: float = 90.0
    ) -> None:
        self.url = url
        self.threads = threads
        self.posts = posts
        self.seconds = seconds
        self.tag = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.seconds
        self._workers = [
            threading.Thread(target=self._post, args=(n, deadline), daemon=True)
            for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _post(self, n: int, deadline: float) -> None:
        with httpx.Client(timeout=15.0, trust_env=False) as client:
            for i in range(self.posts):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                task_id = f"{self.tag}-{n}-{i:05d}"
                sent_at = time.time()
                try:
                    response = client.post(
                        self.url,
                        content=text_document(task_id),
                        headers={"content-type": "application/json"},
                    )
                    delivery_id = None
                    if response.status_code == 200:
                        delivery_id = delivery_id_from(response.text)
                    answer = Answer(task_id, response.status_code, delivery_id, sent_at=sent_at)
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    answer = Answer(task_id, None, error=error, sent_at=sent_at)
                with self._lock:
                    self._answers.append(answer)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        assert not any(w.is_alive() for w in self._workers), "a client thread did not stop"

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def ok(self) -> int:
        return sum(1 for a in self.answers() if a.ok)

    def wait_ok(self, at_least: int, cluster: Cluster, timeout: float = 30.0) -> None:
        """Wait until ``at_least`` POSTs in all have been answered 2xx."""
        wait_until(lambda: self.ok() >= at_least, timeout, message=cluster.describe)


def post_url(lb: HAProxy) -> str:
    return f"{lb.url}/hooks/{ROUTE}/{CREDS.url_token}"


def exports_per_task(exports: Path) -> dict[str, int]:
    """Task id -> number of exported event files in its folder (temp files not counted)."""
    root = exports / "smartdocumentor" / WORKSPACE
    if not root.is_dir():
        return {}
    return {d.name: len(list(d.glob("text_document-*.json"))) for d in root.iterdir()}


def assert_exported_once(exports: Path, answers: list[Answer], cluster: Cluster) -> None:
    """Every 2xx'd delivery is in the folder exactly once; no other delivery more than once."""
    ok = {a.task_id for a in answers if a.ok}

    def all_there() -> bool:
        found = exports_per_task(exports)
        return all(found.get(task, 0) >= 1 for task in ok)

    wait_until(
        all_there,
        60,
        0.2,
        lambda: (
            f"missing exports: {sorted(ok - set(exports_per_task(exports)))[:10]}\n"
            + cluster.describe()
        ),
    )
    found = exports_per_task(exports)
    assert {task: n for task, n in found.items() if n != 1} == {}
    assert set(found) <= {a.task_id for a in answers}, "an export no client asked for"


# --------------------------------------------------------------------------- the tests


def test_sigkill_mid_load_the_survivor_takes_over_after_the_heartbeat_goes_stale(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    exports = tmp_path / "exports"
    with WebhookReceiver(SECRET, default=Reply(204, delay=SLOW_SECONDS)) as slow:
        sinks = {
            "exports": {"type": "local", "root": str(exports)},
            # A slow destination keeps sends in flight (leased) at any moment of the load.
            "slow": {
                "type": "http",
                "url": f"{slow.url}/hook",
                "secret": SECRET,
                "allow_networks": ["127.0.0.1/32"],
                "concurrency": 16,
            },
        }
        # The default 60 s lease: a take-over within seconds can only be the heartbeat's.
        config = cluster_config(tmp_path, pg_dsn, pg_schema, sinks=sinks)
        with run_cluster(tmp_path, config) as cluster:
            victim, survivor = cluster.replicas
            victim_owner = cluster.owner(victim)

            def held_by_victim(table: str) -> int:
                sql = f"SELECT count(*) FROM {table} WHERE lease_owner = %s"
                return int(journal_rows(pg_dsn, pg_schema, sql, victim_owner)[0][0])

            with Load(post_url(cluster.lb), threads=4, posts=80) as load:
                load.wait_ok(60, cluster)
                wait_until(lambda: held_by_victim("sends"), 15, 0.05, "no sends in flight")
                signalled_at = time.time()
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                killed_at = time.time()
                answered_at_kill = len(load.answers())
                cluster.lb.wait_status(SERVER_NAMES[0], "DOWN", 10)
                down_at = time.time()
                # Its row stays until a live process finds it stale: its last heartbeat.
                sql = "SELECT heartbeat_at FROM processes WHERE owner = %s"
                beats = journal_rows(pg_dsn, pg_schema, sql, victim_owner)
                assert beats, "the victim's process row went before it was stale"
                last_beat = float(beats[0][0])
                took_over = wait_until(
                    lambda: lines_with(survivor, "took over"), STALE + 5, 0.05, cluster.describe
                )
                wait_until(
                    lambda: len(load.answers()) >= answered_at_kill + 40,
                    30,
                    message=cluster.describe,
                )
            answers = load.answers()

            # Every 2xx is exported once, and reached the slow destination: the sends the
            # victim held were taken over, not lost.
            assert_exported_once(exports, answers, cluster)
            event_ids = {f"{a.delivery_id}-0" for a in answers if a.ok}
            slow.wait_for(lambda: event_ids <= set(slow.stored("/hook")), 60)

            # The journal and `hookdock status`: nothing is held by the dead replica any more.
            assert held_by_victim("sends") == 0
            assert held_by_victim("deliveries") == 0
            status = cluster.status()
            assert [p["owner"] for p in status["processes"]] == [cluster.owner(survivor)]
            assert status["processes"][0]["alive"] is True

    # The survivor released the victim's leases once its heartbeat was stale, not before.
    (line,) = took_over
    match = _TOOK_OVER.search(line)
    assert match and int(match.group(1)) >= 1, line
    assert log_time(line) >= last_beat + STALE - 0.01, (line, last_beat)
    assert log_time(line) <= killed_at + STALE + 5, (line, killed_at)
    # Only requests sent while the balancer still had the victim in rotation can have failed:
    # those in flight when it died (HAProxy never replays a POST that reached a server), and
    # those HAProxy handed to it, on a server connection it had not yet seen close, in the
    # moment before its checks marked it DOWN.  It answers 502, or, for a request it had sent
    # on a kept-alive server connection, closes the client's connection without an answer (what
    # a server closing an idle connection does, so the sender may retry).  Connections the dead
    # port refused went to the survivor (redispatch) and succeeded.
    failed = [a for a in answers if not a.ok]
    no_answer = "RemoteProtocolError: Server disconnected without sending a response."
    assert all(a.status == 502 or a.error == no_answer for a in failed), failed
    assert all(a.sent_at <= down_at for a in failed), (down_at, failed)
    assert len([a for a in failed if a.sent_at < signalled_at]) <= load.threads, failed


def test_rolling_restart_with_sigterm_fails_no_request(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    exports = tmp_path / "exports"
    sinks = {"exports": {"type": "local", "root": str(exports)}}
    config = cluster_config(tmp_path, pg_dsn, pg_schema, sinks=sinks)
    with run_cluster(tmp_path, config) as cluster:
        lb = cluster.lb
        before = lb.frontend()
        with Load(post_url(lb), threads=4, posts=3000, seconds=120) as load:
            load.wait_ok(50, cluster)
            for index, name in enumerate(SERVER_NAMES):
                old = cluster.replicas[index]
                answered = load.ok()
                old.send_signal(signal.SIGTERM)
                # Out of rotation while the listener is still open (the drain).
                out_after = lb.wait_status(name, "DOWN", DRAIN)
                assert out_after < DRAIN
                assert old.wait(DRAIN + GRACE + 10) == 0, old.describe()
                new = cluster.start_replica(index)
                lb.wait_status(name, "UP", 10)
                # The load went on through the other replica while this one was away.
                load.wait_ok(answered + 50, cluster)
                assert "shutting down: not ready" in old.stderr_text()
                assert new.running()
            # The new replicas take requests too.
            load.wait_ok(load.ok() + 100, cluster)
        answers = load.answers()
        after = lb.frontend()
        assert_exported_once(exports, answers, cluster)

    failed = [a for a in answers if a.status != 200]
    assert failed == [], failed[:10]
    assert after["hrsp_5xx"] - before["hrsp_5xx"] == 0, lb.log()[-3000:]
    assert after["hrsp_2xx"] - before["hrsp_2xx"] >= len(answers)


def test_a_named_lease_job_runs_on_one_replica_and_moves_when_its_holder_dies(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    exports = tmp_path / "exports"
    sinks = {"exports": {"type": "local", "root": str(exports)}}
    # Its lease lasts three runs (3 s): a holder that is merely slow keeps it.
    every = 1.0
    # Delivered deliveries older than about 0.9 s are deleted, every second.
    config = cluster_config(
        tmp_path,
        pg_dsn,
        pg_schema,
        sinks=sinks,
        retention={"delivered_days": 1e-5, "every_seconds": every},
    )
    runs_it = "job retention: this process runs it now"
    deleted = "retention: deleted"
    with run_cluster(tmp_path, config) as cluster:
        owners = {cluster.owner(p): p for p in cluster.replicas}

        def holder(other_than: str | None = None) -> str | None:
            """The lease's owner, when there is one and it is not ``other_than``."""
            rows = journal_rows(
                pg_dsn, pg_schema, "SELECT owner FROM named_leases WHERE name = 'retention'"
            )
            owner = str(rows[0][0]) if rows else None
            return owner if owner != other_than else None

        with Load(post_url(cluster.lb), threads=2, posts=1500, seconds=90) as load:
            first = wait_until(holder, 10)
            assert first is not None
            holding = owners[first]
            (other,) = [p for p in cluster.replicas if p is not holding]
            # It runs, more than once, on its holder only; the lease stays where it is.
            wait_until(lambda: len(lines_with(holding, deleted)) >= 2, 30, 0.1, cluster.describe)
            status = cluster.status()
            assert status["leases"]["retention"]["owner"] == first
            assert holder() == first
            assert len(lines_with(holding, runs_it)) == 1
            assert lines_with(other, runs_it) == []
            assert lines_with(other, deleted) == []

            holding.send_signal(signal.SIGKILL)
            holding.wait(10)
            # The lease runs out (3 x every_seconds) or the heartbeat goes stale, whichever
            # comes first; the survivor takes it at its next try.
            second = wait_until(lambda: holder(first), STALE + 3, 0.05, cluster.describe)
            assert second is not None
            assert owners[second] is other
            wait_until(lambda: lines_with(other, deleted), 30, 0.1, cluster.describe)
            assert len(lines_with(other, runs_it)) == 1
            assert load.ok() > 0
        # The dead holder's process row goes once it is stale; the lease stays with the survivor.
        wait_until(
            lambda: [p["owner"] for p in cluster.status()["processes"]] == [second], STALE + 5
        )
        assert cluster.status()["leases"]["retention"]["owner"] == second
