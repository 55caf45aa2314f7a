"""The service on PostgreSQL, end to end: replicas sharing a schema, an outage, a bad DSN.

* Two ``hookdock serve`` processes on one schema get the same delivery at the same moment:
  both answer 200, one delivery is journaled and it is exported once.
* An outage under load: hookdock reaches PostgreSQL through a ``TcpProxy`` on 127.0.0.1, a few
  clients post steadily, the proxy is cut for a few seconds and restored.  While it is cut every
  post is refused with 503 (never a 500, never a 2xx) and ``/readyz`` is 503; afterwards both
  are 200 again without a restart, and every delivery that got a 2xx is in PostgreSQL (read
  directly, not through hookdock) and in the export folder.
* A DSN that cannot be reached at start: ``serve`` exits non-zero at once, with one line that
  names the host and never the password.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    export_path,
    free_port,
    make_config,
    pg_journal_table,
    run_hookdock,
    wait_until,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

JSON = {"content-type": "application/json"}
WORKSPACE = "ws-pg"
REFUSED_503 = "hookdock: cannot store the delivery right now, please retry\n"


def text_document(task_id: str) -> bytes:
    return json.dumps(
        {"taskId": task_id, "workspaceId": WORKSPACE, "displayName": "pg.pdf", "chunks": []}
    ).encode()


def sd_url(process: HookdockProcess) -> str:
    return f"{process.url}/hooks/{SD_ROUTES['text_document']}/{CREDS.url_token}"


def exported(exports: Path, task_id: str, delivery_id: str) -> Path:
    return export_path(
        exports,
        kind="text_document",
        task_id=task_id,
        delivery_id=delivery_id,
        workspace_id=WORKSPACE,
    )


def pg_config(folder: Path, dsn: str, schema: str, **journal: Any) -> str:
    # Short leases: work whose outcome could not be recorded during an outage is taken up
    # again a few seconds later rather than the default minute.
    return make_config(
        folder,
        journal={"path": None, **pg_journal_table(dsn, schema, **journal)},
        dispatcher={"lease_seconds": 3.0},
    )


def journaled_ids(dsn: str, schema: str) -> set[str]:
    """Delivery ids in the schema, read straight from PostgreSQL."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return {row[0] for row in conn.execute(f'SELECT id FROM "{schema}".deliveries')}


def delivered_sends(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM \"{schema}\".sends WHERE state = 'delivered'"
        ).fetchone()
        assert row is not None
        return int(row[0])


# --------------------------------------------------------------------------- two replicas

ROUNDS = 20


def post_at_once(clients: list[httpx.Client], urls: list[str], body: bytes) -> list[httpx.Response]:
    """``body`` to every url, each from its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(urls))
    answers: list[httpx.Response | BaseException] = [RuntimeError("no answer")] * len(urls)

    def post(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            answers[i] = clients[i].post(urls[i], content=body, headers=JSON)
        except httpx.HTTPError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    assert len(responses) == len(urls), answers
    return responses


def test_two_servers_on_one_schema_take_the_same_delivery_once(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """Replicas behind one load balancer: a vendor's retry lands on the other one while the
    first is still writing.  Both say 200 with the same id; one row, one export."""
    folders = [tmp_path / "a", tmp_path / "b"]
    with contextlib.ExitStack() as stack:
        servers = []
        for folder in folders:
            folder.mkdir()
            config = pg_config(folder, pg_dsn, pg_schema)
            servers.append(stack.enter_context(run_hookdock(folder, config)))
        clients = [
            stack.enter_context(httpx.Client(timeout=15.0, trust_env=False)) for _ in servers
        ]

        ids: dict[str, str] = {}
        for _ in range(ROUNDS):
            task_id = str(uuid.uuid4())
            urls = [sd_url(server) for server in servers]
            responses = post_at_once(clients, urls, text_document(task_id))
            assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
            (first_id,) = {delivery_id_from(r.text) for r in responses}
            kinds = sorted(r.text.split(" as ")[0] for r in responses)
            assert kinds == ["hookdock: accepted", "hookdock: already accepted"], kinds
            ids[task_id] = first_id

        assert journaled_ids(pg_dsn, pg_schema) == set(ids.values())
        # Both dispatchers claim from the one schema: each send goes out from one of them.
        wait_until(
            lambda: delivered_sends(pg_dsn, pg_schema) == ROUNDS,
            30.0,
            0.1,
            lambda: f"{delivered_sends(pg_dsn, pg_schema)} of {ROUNDS} sends delivered",
        )
    # Both servers stopped: nothing can be exported any more, so the count is final.
    for task_id, delivery_id in ids.items():
        copies = [exported(f / "exports", task_id, delivery_id) for f in folders]
        assert sum(p.exists() for p in copies) == 1, copies
    files = [p for f in folders for p in (f / "exports").rglob("*.json")]
    assert len(files) == ROUNDS


# --------------------------------------------------------------------------- outage


CLIENTS = 4
PACE_SECONDS = 0.02
"""Each client's pause between posts: a steady load, not a flood of 503s while cut."""
MAX_POSTS_PER_CLIENT = 3000
OUTAGE_SECONDS = 3.0
RECOVERY_SECONDS = 15.0


@dataclass
class Post:
    task_id: str
    started: float
    finished: float
    status: int | None
    text: str
    retry_after: str | None = None


@dataclass
class Load:
    """``CLIENTS`` threads posting fresh deliveries until ``stop()`` (or a bound per client)."""

    url: str
    posts: list[Post] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{n}") for n in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads), "a load client did not stop"

    def _client(self) -> None:
        with httpx.Client(timeout=20.0, trust_env=False) as client:
            for _ in range(MAX_POSTS_PER_CLIENT):
                if self._stop.is_set():
                    return
                task_id = str(uuid.uuid4())
                started = time.monotonic()
                try:
                    response = client.post(self.url, content=text_document(task_id), headers=JSON)
                except httpx.HTTPError as exc:
                    post = Post(task_id, started, time.monotonic(), None, repr(exc))
                else:
                    post = Post(
                        task_id,
                        started,
                        time.monotonic(),
                        response.status_code,
                        response.text,
                        response.headers.get("retry-after"),
                    )
                with self._lock:
                    self.posts.append(post)
                # Pacing, not synchronization: a bounded, steady rate.
                self._stop.wait(PACE_SECONDS)

    def snapshot(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def count(self, status: int, after: float = 0.0) -> int:
        return sum(p.status == status and p.started > after for p in self.snapshot())


@contextlib.contextmanager
def running_load(url: str) -> Iterator[Load]:
    load = Load(url)
    load.start()
    try:
        yield load
    finally:
        load.stop()


def _proxied(dsn: str, proxy: TcpProxy) -> str:
    return make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))


def _upstream(dsn: str) -> tuple[str, int]:
    parts = conninfo_to_dict(dsn)
    return str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432)


def test_database_outage_under_load_answers_503_then_recovers(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    with TcpProxy(_upstream(pg_dsn)) as proxy:
        config = pg_config(tmp_path, _proxied(pg_dsn, proxy), pg_schema, connect_timeout_seconds=2)
        with (
            run_hookdock(tmp_path, config) as process,
            httpx.Client(base_url=process.url, timeout=10.0, trust_env=False) as probe,
        ):

            def readyz() -> int:
                return probe.get("/readyz").status_code

            with running_load(sd_url(process)) as load:
                wait_until(lambda: load.count(200) >= 20, 15.0, message="no load before the cut")

                proxy.cut()
                cut_at = time.monotonic()
                ready_while_cut = probe.get("/readyz")
                wait_until(lambda: readyz() == 503, 10.0, 0.05, "/readyz stayed 200 while cut")
                # Hold the outage for a while, and until the load has met it a few times.
                wait_until(
                    lambda: (
                        time.monotonic() - cut_at >= OUTAGE_SECONDS
                        and load.count(503, after=cut_at) >= 10
                    ),
                    OUTAGE_SECONDS + 10.0,
                    0.05,
                    lambda: f"only {load.count(503, after=cut_at)} posts refused while cut",
                )
                last_ready_while_cut = probe.get("/readyz")
                restored_at = time.monotonic()
                proxy.restore()

                wait_until(
                    lambda: readyz() == 200,
                    RECOVERY_SECONDS,
                    0.05,
                    lambda: f"/readyz did not recover:\n{process.describe()}",
                )
                ready_after = time.monotonic() - restored_at
                wait_until(
                    lambda: load.count(200, after=restored_at) >= 20,
                    RECOVERY_SECONDS,
                    0.05,
                    lambda: f"posts did not succeed again after the restore:\n{process.describe()}",
                )
                assert process.running(), process.describe()
            posts = load.snapshot()

            # What each client saw.
            by_status: dict[int | None, int] = {}
            for post in posts:
                by_status[post.status] = by_status.get(post.status, 0) + 1
            odd = [p for p in posts if p.status not in (200, 503)]
            assert not odd, (by_status, odd[:5])
            for post in posts:
                if post.status == 503:
                    assert post.text == REFUSED_503
                    assert post.retry_after == "5"
                else:
                    assert post.text.startswith("hookdock: accepted as "), post.text
            # Sent and answered wholly inside the cut: there was no database to commit to.
            inside = [p for p in posts if p.started > cut_at and p.finished < restored_at]
            assert inside, "no post was made while the database was cut off"
            assert {p.status for p in inside} == {503}, [p for p in inside if p.status != 503][:5]
            assert last_ready_while_cut.status_code == 503, last_ready_while_cut.text
            assert last_ready_while_cut.text.startswith("hookdock: journal not writable")
            assert ready_while_cut.status_code in (200, 503)

            # Every 2xx is committed: read PostgreSQL itself, not through the proxy.
            acked = {p.task_id: delivery_id_from(p.text) for p in posts if p.status == 200}
            stored = journaled_ids(pg_dsn, pg_schema)
            missing = sorted(set(acked.values()) - stored)
            assert not missing, f"{len(missing)} deliveries answered 200 are not in PostgreSQL"

            # The vendor retries what was refused: now each is taken (or was, after all).
            refused = [p.task_id for p in posts if p.status == 503]
            for task_id in refused[:50]:
                again = probe.post(sd_url(process), content=text_document(task_id), headers=JSON)
                assert again.status_code == 200, again.text
                acked[task_id] = delivery_id_from(again.text)

            exports = tmp_path / "exports"
            wait_until(
                lambda: all(exported(exports, t, d).exists() for t, d in acked.items()),
                60.0,
                0.1,
                lambda: (
                    f"{sum(not exported(exports, t, d).exists() for t, d in acked.items())}"
                    f" of {len(acked)} accepted deliveries not exported\n{process.describe()}"
                ),
            )
            stderr = process.stderr_text()
            assert "unexpected error" not in stderr  # what a 500 logs
            # It did try the database while it was gone, and came back on its own.
            assert proxy.refused >= 1
            assert "journal: connected again" in stderr
            print(
                f"\noutage: {time.monotonic() - cut_at:.1f}s from the cut, {len(posts)} posts"
                f" ({by_status}), {len(inside)} inside the cut, {proxy.refused} connections"
                f" refused while cut, ready again {ready_after:.2f}s after the restore,"
                f" {len(acked)} exported"
            )


# --------------------------------------------------------------------------- bad DSN at start


def test_unreachable_database_at_start_exits_with_one_line_naming_the_host(
    tmp_path: Path,
) -> None:
    password = "pw-" + uuid.uuid4().hex
    port = free_port()  # nothing listens there
    dsn = f"postgresql://hookdock:{password}@127.0.0.1:{port}/hookdock"
    config = pg_config(tmp_path, dsn, "unreached", connect_timeout_seconds=2)
    started = time.monotonic()
    with run_hookdock(tmp_path, config, wait_ready=False) as process:
        code = process.wait(20.0)
        elapsed = time.monotonic() - started
        stderr = process.stderr_text()
        output = stderr + process.stdout_text()
    assert code != 0, stderr
    assert elapsed < 10.0, f"took {elapsed:.1f}s to give up"
    assert password not in output
    assert "Traceback" not in output
    lines = [line for line in stderr.splitlines() if "cannot be opened" in line]
    assert len(lines) == 1, stderr
    (line,) = lines
    assert f"127.0.0.1:{port}" in line
    assert "journal.dsn" in line  # says what to check


# --------------------------------------------------------------------------- no pg_trgm


@pytest.fixture
def limited_database(pg_dsn: str) -> Iterator[str]:
    """A database of its own where the journal's role may not create extensions (it owns its
    schema, not the database): the DSN of that role; dropped afterwards."""
    name = f"hookdock_nopriv_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(make_conninfo(pg_dsn, dbname=name), autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(f'CREATE SCHEMA journal AUTHORIZATION "{name}"')
    try:
        yield make_conninfo(pg_dsn, dbname=name, user=name)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_without_pg_trgm_search_still_works_and_one_line_says_why(
    tmp_path: Path, limited_database: str
) -> None:
    config = make_config(
        tmp_path,
        journal={"path": None, **pg_journal_table(limited_database, "journal")},
        admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"]},
    )
    token = "adm-" + uuid.uuid4().hex + uuid.uuid4().hex
    with run_hookdock(tmp_path, config, env={"HOOKDOCK_ADMIN_TOKEN": token}) as server:
        task = str(uuid.uuid4())
        response = httpx.post(sd_url(server), content=text_document(task), headers=JSON)
        delivery_id = delivery_id_from(response.text)

        def found() -> list[str]:
            page = httpx.get(
                f"{server.url}/admin/api/events",
                params={"q": "PG.PDF"},
                headers={"Authorization": f"Bearer {token}"},
                trust_env=False,
            ).json()
            return [item["deliveryId"] for item in page["items"]]

        assert wait_until(lambda: found() == [delivery_id])
        [line] = [
            line
            for line in server.stderr_text().splitlines()
            if "free-text search (q) scans every event" in line
        ]
        assert "the pg_trgm extension cannot be created (" in line
        assert line.endswith("ask the database's owner to run CREATE EXTENSION pg_trgm")
