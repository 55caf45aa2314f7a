"""The admin API end to end: a real ``hookdock serve`` and a real HTTP client.

Webhooks go in, then the API finds them (by either id, by filters), shows their sends and
attempts, replays a delivered event, stops and resumes a sink, and records who did what.
Admin tokens and webhook tokens never open each other's doors.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    export_path,
    free_port,
    make_config,
    pg_journal_table,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(32)
ENV = {"HOOKDOCK_ADMIN_TOKEN": ADMIN_TOKEN}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Hookdock-Actor": "ann@ops"}


def _config(tmp_path: Path, **admin: Any) -> str:
    return make_config(tmp_path, admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"], **admin})


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``make_config``'s ``journal=`` overrides: its SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return {"path": None, **pg_journal_table(dsn, schema)}


def _webhook(
    server: HookdockProcess,
    task_id: str,
    name: str = "Invoice 7.pdf",
    *,
    path: str = SD_ROUTES["text_document"],
    workspace: str = "ws-9",
) -> str:
    body = {"taskId": task_id, "workspaceId": workspace, "displayName": name, "chunks": []}
    response = httpx.post(
        f"{server.url}/hooks/{path}/{CREDS.url_token}",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return delivery_id_from(response.text)


def _api(base: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    return httpx.request(
        method, f"{base}/admin/api{path}", headers=headers, trust_env=False, timeout=10, **kwargs
    )


def _delivered_attempts(base: str, event_id: str) -> list[str]:
    shown = _api(base, "GET", f"/events/{event_id}").json()
    [send] = shown["events"][0]["sends"]
    return [a["outcome"] for a in send["attempts"]] if send["state"] == "delivered" else []


def test_find_show_replay_and_record_over_http(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        base = server.url
        delivery_id = _webhook(server, task)
        _webhook(server, str(uuid.uuid4()), name="other.pdf")
        event_id = f"{delivery_id}-0"
        server.wait_export(
            export_path(
                tmp_path / "exports",
                kind="text_document",
                task_id=task,
                delivery_id=delivery_id,
                workspace_id="ws-9",
            ),
            delivery_id,
        )
        wait_until(lambda: _delivered_attempts(base, event_id) == ["delivered"])

        listed = _api(base, "GET", "/events", params={"taskId": task}).json()
        assert [i["eventId"] for i in listed["items"]] == [event_id]
        assert (listed["totalCount"], listed["totalPages"], listed["hasNextPage"]) == (1, 1, False)
        item = listed["items"][0]
        assert (item["deliveryId"], item["state"], item["sends"]) == (
            delivery_id,
            "delivered",
            {"exports": "delivered"},
        )
        assert item["receivedAt"].endswith(("Z", "+00:00"))
        found = _api(base, "GET", "/events", params={"q": "INVOICE 7", "state": "delivered"})
        assert [i["eventId"] for i in found.json()["items"]] == [event_id]
        page = _api(base, "GET", "/events", params={"pageSize": 1}).json()
        assert (page["totalCount"], page["hasNextPage"]) == (2, True)
        deeper = _api(base, "GET", "/events", params={"pageSize": 1, "cursor": page["nextCursor"]})
        assert deeper.json()["items"][0]["eventId"] != page["items"][0]["eventId"]

        # Either id finds it: the one in "accepted as <id>", and the event's.
        by_delivery = _api(base, "GET", f"/events/{delivery_id}").json()
        by_event = _api(base, "GET", f"/events/{event_id}").json()
        assert (by_delivery["foundBy"], by_event["foundBy"]) == ("delivery", "event")
        assert by_delivery["payload"]["taskId"] == task
        assert by_event["events"][0]["event"]["task_id"] == task
        [attempt] = by_event["events"][0]["sends"][0]["attempts"]
        assert attempt["outcome"] == "delivered" and attempt["durationSeconds"] >= 0

        replayed = _api(base, "POST", f"/events/{event_id}/replay", json={"sink": "exports"})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["requeued"] == 1
        wait_until(lambda: _delivered_attempts(base, event_id) == ["delivered", "delivered"])
        [action] = _api(base, "GET", f"/events/{delivery_id}").json()["actions"]
        assert (action["actor"], action["action"], action["sink"]) == (
            "ann@ops (admin token 1)",
            "replay",
            "exports",
        )

        stopped = _api(base, "POST", "/sinks/exports/stop", json={"reason": "disk swap"})
        assert stopped.json()["changed"] is True
        [sink] = _api(base, "GET", "/sinks").json()
        assert (sink["name"], sink["stopped"], sink["stoppedReason"]) == (
            "exports",
            True,
            "disk swap",
        )
        assert _api(base, "POST", "/sinks/exports/resume").json()["changed"] is True
        assert _api(base, "GET", "/sinks/exports/dead").json()["items"] == []
        missing = _api(base, "GET", "/batches/no-such-batch")
        assert (missing.status_code, missing.json()) == (
            404,
            {"error": "no events of batch 'no-such-batch' in the journal"},
        )
        actions = [a["action"] for a in _api(base, "GET", "/actions").json()]
        assert actions == ["resume-sink", "stop-sink", "replay"]


def test_errors_are_json_and_say_why(tmp_path: Path) -> None:
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        base = server.url
        missing = _api(base, "GET", "/events/0123456789abcdef0123456789")
        assert (missing.status_code, missing.json()) == (
            404,
            {"error": "no delivery or event '0123456789abcdef0123456789' in the journal"},
        )
        bad = _api(base, "GET", "/events", params={"taskid": "x", "state": "lost"})
        assert bad.status_code == 400
        assert "taskid: unknown parameter" in bad.json()["error"]
        wrong_sink = _api(base, "POST", "/events/x/replay", json={"sink": "nope"})
        assert wrong_sink.status_code == 400
        assert "no sink named 'nope'" in wrong_sink.json()["error"]
        not_json = _api(base, "POST", "/sinks/exports/stop", content=b"{")
        assert (not_json.status_code, not_json.json()) == (400, {"error": "the body is not JSON"})
        nowhere = _api(base, "GET", "/nothing")
        assert (nowhere.status_code, nowhere.json()) == (404, {"error": "not found"})


def test_admin_and_webhook_tokens_never_cross(tmp_path: Path) -> None:
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        base = server.url
        for headers in (
            {},
            {"Authorization": f"Bearer {CREDS.url_token}"},
            {"Authorization": f"Bearer {CREDS.header_token}"},
            {"Authorization": f"Basic {ADMIN_TOKEN}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        ):
            refused = _api(base, "GET", "/events", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert ADMIN_TOKEN not in refused.text
        # The admin token opens no webhook route.
        hook = httpx.post(
            f"{base}/hooks/{SD_ROUTES['text_document']}/{ADMIN_TOKEN}",
            content=b"{}",
            headers={"content-type": "application/json"},
            trust_env=False,
        )
        assert hook.status_code == 401
        header_route = httpx.post(
            f"{base}/hooks/header-token",
            content=b'{"taskId": "t"}',
            headers={"content-type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
            trust_env=False,
        )
        assert header_route.status_code == 401
        # The document holds no data: it needs no token.
        document = httpx.get(f"{base}/admin/api/openapi.json", trust_env=False).json()
        assert document["openapi"].startswith("3.1")
        assert "/events/{ref}/replay" in document["paths"]
        assert ADMIN_TOKEN not in server.stderr_text() + server.stdout_text()


def test_the_api_on_a_listener_of_its_own(tmp_path: Path) -> None:
    port = free_port()
    with run_hookdock(tmp_path, _config(tmp_path, port=port), env=ENV) as server:
        assert _api(server.url, "GET", "/events").status_code == 404
        own = f"http://127.0.0.1:{port}"
        wait_until(lambda: _reachable(own))
        listed = _api(own, "GET", "/events")
        assert (listed.status_code, listed.json()["items"]) == (200, [])
        assert _api(own, "GET", "/events", headers={}).status_code == 401
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{own}/admin/api/openapi.json", trust_env=False, timeout=2)


def _reachable(base: str) -> bool:
    try:
        httpx.get(f"{base}/admin/api/openapi.json", trust_env=False, timeout=2)
    except httpx.TransportError:
        return False
    return True


def test_events_tail_follows_new_events_live(tmp_path: Path) -> None:
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        assert server.config_path is not None
        first = _webhook(server, str(uuid.uuid4()))
        wait_until(lambda: _delivered_attempts(server.url, f"{first}-0") == ["delivered"])
        out = tmp_path / "tail.out"
        argv = [sys.executable, "-m", "receiver", "events", "tail", "--interval", "0.2"]
        with out.open("wb") as sink:
            tail = subprocess.Popen(
                [*argv, "--config", str(server.config_path)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **ENV},
            )
        try:
            wait_until(lambda: f"{first}-0" in out.read_text(), message=lambda: out.read_text())
            second = _webhook(server, str(uuid.uuid4()), name="second.pdf")
            wait_until(lambda: f"{second}-0" in out.read_text(), message=lambda: out.read_text())
        finally:
            tail.send_signal(signal.SIGINT)
            code = tail.wait(10)
        lines = out.read_text().splitlines()
        assert code == 0, lines
        assert lines[0].startswith("RECEIVED (UTC)")
        [new] = [line for line in lines if f"{second}-0" in line]
        assert "second.pdf" in new


def test_bulk_replay_by_filter_as_a_job(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        base = server.url
        ids = [_webhook(server, task, name=f"doc {n}.pdf") for n in range(3)]
        _webhook(server, str(uuid.uuid4()))
        for delivery_id in ids:
            wait_until(partial(_attempts_are, base, f"{delivery_id}-0", ["delivered"]))
        dry = _api(base, "POST", "/replays", json={"filter": {"taskId": task}, "dryRun": True})
        assert dry.status_code == 200, dry.text
        assert (dry.json()["state"], dry.json()["matched"]) == ("dry-run", 3)
        started = _api(base, "POST", "/replays", json={"filter": {"taskId": task}})
        job = started.json()["jobId"]

        def finished() -> dict[str, Any] | None:
            state: dict[str, Any] = _api(base, "GET", f"/replays/{job}").json()
            return state if state["state"] == "done" else None

        done = wait_until(finished)
        assert done is not None
        assert (done["matched"], done["replayed"], done["requeued"]) == (3, 3, 3)
        for delivery_id in ids:
            twice = ["delivered", "delivered"]
            wait_until(partial(_attempts_are, base, f"{delivery_id}-0", twice))
        [action] = _api(base, "GET", f"/events/{ids[0]}").json()["actions"]
        assert (action["action"], action["detail"]["bulk"], action["detail"]["task_id"]) == (
            "replay",
            job,
            task,
        )
        assert _api(base, "DELETE", f"/replays/{job}").json()["state"] == "done"
        assert _api(base, "GET", "/replays/replay_nope").status_code == 404
        bad = _api(base, "POST", "/replays", json={"filter": {"taskid": "x"}})
        assert (bad.status_code, bad.json()["error"]) == (400, "taskid: unknown parameter")


def test_a_bulk_replay_from_the_cli_is_a_job_the_server_shows(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    with run_hookdock(tmp_path, _config(tmp_path), env=ENV) as server:
        ids = [_webhook(server, task, name=f"doc {n}.pdf") for n in range(2)]
        for delivery_id in ids:
            wait_until(partial(_attempts_are, server.url, f"{delivery_id}-0", ["delivered"]))
        assert server.config_path is not None
        done = run_cli(
            "events", "replay", "--all", "--task", task, config=server.config_path, env=ENV
        )
        assert done.returncode == 0, done.stderr
        [line] = done.stdout.splitlines()
        assert line.startswith("bulk replay replay_") and " done: replayed 2 of 2 events" in line
        job_id = line.split()[2]
        assert done.stderr.startswith(f"bulk replay {job_id}: 2 events match\n")
        assert "[" + "#" * 30 + "] 2 of 2 events" in done.stderr
        [job] = _api(server.url, "GET", "/replays").json()
        assert (job["jobId"], job["state"], job["replayed"], job["filter"]) == (
            job_id,
            "done",
            2,
            {"task_id": task},
        )
        assert job["actor"].endswith("(cli)")
        for delivery_id in ids:
            twice = ["delivered", "delivered"]
            wait_until(partial(_attempts_are, server.url, f"{delivery_id}-0", twice))
        # The CLI beat while it ran, and is gone from the processes since.
        processes = json.loads(run_cli("status", config=server.config_path, env=ENV).stdout)
        assert [p["role"] for p in processes["processes"]] == ["serve"]


def _attempts_are(base: str, event_id: str, outcomes: list[str]) -> bool:
    return _delivered_attempts(base, event_id) == outcomes


def test_deliveries_without_events_are_found_by_task_and_purged(
    tmp_path: Path, journal: dict[str, Any]
) -> None:
    """One delivery of the task routed, one whose every event the rules dropped, one not
    routed yet (the dispatcher is off): all three are listed by task id, and purge erases the
    three and says so."""
    task, other = str(uuid.uuid4()), str(uuid.uuid4())
    dropping = route(
        "sd-drops",
        {"type": "url-token", "token": CREDS.url_token},
        rules=[{"workspace_id": "drop-me", "drop": True}],
    )

    def config(enabled: bool) -> str:
        return make_config(
            tmp_path,
            admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"]},
            journal=journal,
            extra_routes=[dropping],
            dispatcher={"enabled": enabled},
        )

    with run_hookdock(tmp_path, config(True), env=ENV) as server:
        sent = _webhook(server, task)
        dropped = _webhook(server, task, "dropped.pdf", path="sd-drops", workspace="drop-me")
        kept = _webhook(server, other)
        wait_until(lambda: _delivered_attempts(server.url, f"{sent}-0") == ["delivered"])
        wait_until(lambda: _api(server.url, "GET", f"/events/{dropped}").json()["state"] == "done")
    with run_hookdock(tmp_path, config(False), env=ENV) as server:
        waiting = _webhook(server, task, "waiting.pdf")
        listed = _api(server.url, "GET", "/events", params={"taskId": task}).json()
        assert [(i["eventId"], i["deliveryId"], i["state"]) for i in listed["items"]] == [
            (None, waiting, "pending"),
            (None, dropped, "dropped"),
            (f"{sent}-0", sent, "delivered"),
        ]
        assert listed["totalCount"] == 3
        assert [i["taskId"] for i in listed["items"]] == [task] * 3
        only = _api(server.url, "GET", "/events", params={"state": "dropped"}).json()
        assert [i["deliveryId"] for i in only["items"]] == [dropped]
        assert server.config_path is not None

        shown = run_cli("events", "list", "--task", task, config=server.config_path, env=ENV)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == [
            "RECEIVED",
            "(UTC)",
            "EVENT",
            "STATE",
            "ROUTE",
            "KIND",
            "TASK",
            "NAME",
            "SENDS",
        ]
        assert f"{waiting} (no event)  pending" in lines[1]
        assert f"{dropped} (no event)  dropped    sd-drops" in lines[2]
        assert f"{sent}-0" in lines[3] and "exports:delivered" in lines[3]
        assert lines[4] == "page 1: 3 of 3 events"

        purged = run_cli("purge", "--task", task, "--json", config=server.config_path, env=ENV)
        assert purged.returncode == 0, purged.stderr
        report = json.loads(purged.stdout)
        assert sorted(report["deliveries"]) == sorted([sent, dropped, waiting])
        assert (report["unrouted"], report["events"], report["sends"]) == (2, 1, 1)
        # Routing of the two routed, and the one send's attempt.
        assert report["attempts"] == 3
        assert report["deliveredTo"] == {"exports": 1}
        assert report["message"].startswith(
            f"erased 3 deliveries of task {task} from the journal (1 routed, 2 never routed),"
            " 1 events, 1 sends, 3 attempts and "
        )
        assert _api(server.url, "GET", "/events", params={"taskId": task}).json()["items"] == []
        for gone in (sent, dropped, waiting):
            assert _api(server.url, "GET", f"/events/{gone}").status_code == 404
        assert _api(server.url, "GET", f"/events/{kept}").status_code == 200


def _job(base: str, job_id: str) -> dict[str, Any]:
    response = _api(base, "GET", f"/replays/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_bulk_replays_live_in_the_journal_across_replicas(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """Two replicas on one PostgreSQL journal: a job started on one is shown and cancelled
    by the other; a job whose replica is killed is taken over by the other from where it
    was, and ends with every event replayed once."""
    config = make_config(
        tmp_path,
        admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"], "replay_chunk": 1},
        journal={"path": None, **pg_journal_table(pg_dsn, pg_schema)},
    )
    events = 150
    with (
        run_hookdock(tmp_path / "a", config, env=ENV) as a,
        run_hookdock(tmp_path / "b", config, env=ENV) as b,
    ):
        for n in range(events):
            _webhook(a if n % 2 else b, str(uuid.uuid4()), name=f"doc {n}.pdf")

        def delivered() -> bool:
            page = _api(b.url, "GET", "/events", params={"state": "delivered", "pageSize": 1})
            return bool(page.json()["totalCount"] == events)

        wait_until(delivered, 60)
        wanted = {"filter": {"state": ["delivered"]}}

        # Started on a, cancelled from b: a stops at its next chunk.
        first = _api(a.url, "POST", "/replays", json=wanted).json()
        assert a.proc is not None
        assert (first["state"], first["matched"]) == ("running", events)
        assert first["runningOn"].split("/")[1] == str(a.proc.pid)
        wait_until(lambda: _job(b.url, first["jobId"])["replayed"] >= 1)
        asked = _api(b.url, "DELETE", f"/replays/{first['jobId']}").json()
        assert asked["cancelRequested"] is True
        cancelled = wait_until(
            lambda: (j := _job(a.url, first["jobId"]))["state"] == "cancelled" and j
        )
        assert cancelled is not False
        assert 1 <= cancelled["replayed"] < events

        # The filter is read as the job walks: an event the first job made pending again is
        # not "delivered" until it is sent, so the second job starts once all are again.
        wait_until(delivered, 60)
        # Started on a, a is killed: b goes on with it from its cursor.
        second = _api(a.url, "POST", "/replays", json=wanted).json()
        wait_until(lambda: _job(b.url, second["jobId"])["replayed"] >= 1)
        a.proc.kill()
        a.proc.wait(10)
        at_kill = _job(b.url, second["jobId"])
        assert at_kill["state"] == "running" and at_kill["replayed"] < events, at_kill
        done = wait_until(lambda: (j := _job(b.url, second["jobId"]))["state"] == "done" and j, 60)
        assert done is not False
        assert (done["replayed"], done["takeovers"], done["runningOn"]) == (events, 1, None)
        assert "going on with it here" in b.stderr_text()
        listed = _api(b.url, "GET", "/replays").json()
        assert [(j["jobId"], j["state"]) for j in listed] == [
            (second["jobId"], "done"),
            (first["jobId"], "cancelled"),
        ]
