"""Fan-out on real destinations: one POST to a real ``hookdock serve``, then a local folder,
moto's S3 server and a real HTTP receiver that verifies our signature with ``standardwebhooks``.

Each (event, sink) pair is its own delivery: a failing destination retries on its own schedule
and is dead-lettered without holding back, delaying or duplicating the others; a 410 stops its
sink until an operator resumes it, and nothing is lost.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    HookdockProcess,
    delivery_id_from,
    make_config,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.s3server import S3_ENV, MotoServer, boto3_s3, moto_server
from tests.sd_payloads import load
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

BUCKET = "fanout"
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
SCHEDULE = [1.0, 1.5]  # the failing sink's retry schedule, in seconds: 3 attempts in all


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        boto3_s3(server.url).create_bucket(Bucket=BUCKET)
        yield server


def fanout_config(tmp_path: Path, s3: MotoServer, hook_url: str) -> str:
    prefix = secrets.token_hex(4)
    return make_config(
        tmp_path,
        extra_routes=[route("fanout", {"type": "none"}, sinks=["exports", "bucket", "hook"])],
        sinks={
            "bucket": {
                "type": "s3",
                "bucket": BUCKET,
                "endpoint_url": s3.url,
                "addressing_style": "path",
                "region": "us-east-1",
                "key_template": prefix + "/{event_id}.json",
            },
            "hook": {
                "type": "http",
                "url": hook_url,
                "secret": SECRET,
                "allow_networks": ["127.0.0.1/32"],  # the test receiver; the guard refuses it else
                "retry": {"max_attempts": 3, "schedule": SCHEDULE, "jitter": 0},
            },
        },
    )


def document(task_id: str) -> bytes:
    body: dict[str, Any] = json.loads(load("text_document", "baseline"))
    body["taskId"] = task_id
    return json.dumps(body).encode()


def post(server: HookdockProcess, task_id: str) -> str:
    response = httpx.post(
        f"{server.url}/hooks/fanout",
        content=document(task_id),
        headers={"content-type": "application/json"},
        timeout=10.0,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return delivery_id_from(response.text)


def exported(root: Path, event_id: str) -> list[Path]:
    return sorted(root.rglob(f"*{event_id}.json"))


def objects(s3: MotoServer, event_id: str) -> list[dict[str, Any]]:
    listing = boto3_s3(s3.url).list_objects_v2(Bucket=BUCKET)
    return [o for o in listing.get("Contents", []) if o["Key"].endswith(f"/{event_id}.json")]


def healthy_delays(journal: Path) -> list[tuple[str, float]]:
    """(sink, seconds from receipt to delivered) of every delivered send of the healthy sinks,
    as the journal recorded them."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT s.sink, s.delivered_at, d.received_at FROM sends s"
            " JOIN deliveries d ON d.id = s.delivery_id"
            " WHERE s.sink != 'hook' AND s.state = 'delivered'"
        ).fetchall()
    finally:
        conn.close()
    delays = [
        (sink, at - datetime.fromisoformat(received).timestamp()) for sink, at, received in rows
    ]
    assert len(delays) == 6, delays
    return delays


def status(server: HookdockProcess) -> dict[str, Any]:
    assert server.config_path is not None
    result = run_cli("status", config=server.config_path, env=S3_ENV)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_one_post_reaches_the_folder_the_bucket_and_the_http_receiver(
    tmp_path: Path, s3: MotoServer
) -> None:
    with WebhookReceiver(secret=SECRET) as rx:
        config = fanout_config(tmp_path, s3, f"{rx.url}/hook")
        with run_hookdock(tmp_path, config, env=S3_ENV) as server:
            delivery_id = post(server, "fan-1")
            event_id = f"{delivery_id}-0"
            rx.wait_for(lambda: event_id in rx.stored("/hook"), timeout=15)
            wait_until(lambda: exported(tmp_path / "exports", event_id), 15)
            wait_until(lambda: objects(s3, event_id), 15)
            [request] = rx.requests("/hook")
            assert request.verified is True and request.webhook_id == event_id
            assert rx.stored("/hook")[event_id]["task_id"] == "fan-1"
            [obj] = objects(s3, event_id)
            head = boto3_s3(s3.url).head_object(Bucket=BUCKET, Key=obj["Key"])
            assert head["Metadata"]["event-id"] == event_id
            [path] = exported(tmp_path / "exports", event_id)
            assert json.loads(path.read_bytes())["event_id"] == event_id
            wait_until(lambda: status(server)["done"] == 1, 15)
            sinks = status(server)["sinks"]
            for name in ("exports", "bucket", "hook"):
                assert sinks[name]["delivered"] == 1, sinks


def test_a_failing_sink_retries_on_schedule_and_the_others_get_each_event_once(
    tmp_path: Path, s3: MotoServer
) -> None:
    with WebhookReceiver(secret=SECRET) as rx:
        rx.script("/hook", [503] * 9)  # 3 events x 3 attempts, then the default 204
        config = fanout_config(tmp_path, s3, f"{rx.url}/hook")
        with run_hookdock(tmp_path, config, env=S3_ENV) as server:
            assert server.config_path is not None
            event_ids = [f"{post(server, f'fail-{i}')}-0" for i in range(3)]
            # The healthy sinks get every event at once, while the failing one still retries.
            for event_id in event_ids:
                wait_until(partial(exported, tmp_path / "exports", event_id), 10)
                wait_until(partial(objects, s3, event_id), 10)
            for sink, waited in healthy_delays(tmp_path / "hookdock.db"):
                assert waited < SCHEDULE[0], f"{sink} got an event {waited:.2f}s after it came"

            # Each event is tried 3 times at the failing sink, spaced by its schedule...
            rx.wait_for(lambda: len(rx.requests("/hook")) == 9, timeout=20)
            for event_id in event_ids:
                times = [r.received_at for r in rx.requests("/hook") if r.webhook_id == event_id]
                assert len(times) == 3
                gaps = [b - a for a, b in itertools.pairwise(times)]
                for gap, planned in zip(gaps, SCHEDULE, strict=True):
                    assert gap >= planned * 0.95, f"retried after {gap:.2f}s, planned {planned}s"
            # ...then dead-lettered, the event kept; the healthy sinks are untouched.
            wait_until(lambda: status(server)["dead"] == 3, 15, message=server.describe)
            sinks = status(server)["sinks"]
            assert sinks["hook"]["dead"] == 3 and sinks["hook"]["delivered"] == 0
            assert sinks["exports"]["delivered"] == 3 and sinks["bucket"]["delivered"] == 3
            listing = run_cli(
                "deliveries", "--state", "dead", "--sends", config=server.config_path, env=S3_ENV
            )
            assert listing.returncode == 0, listing.stderr
            assert listing.stdout.count("-> hook") == 3
            assert listing.stdout.count("gave up after 3 attempts") >= 3
            assert "503" in listing.stdout
            assert rx.stored("/hook") == {}

            # After a fix, only what failed at that sink goes out again.
            mtimes = {e: exported(tmp_path / "exports", e)[0].stat().st_mtime_ns for e in event_ids}
            retry = run_cli(
                "retry", "--all-dead", "--sink", "hook", config=server.config_path, env=S3_ENV
            )
            assert retry.returncode == 0, retry.stderr
            assert retry.stdout.strip() == "requeued 3 dead-lettered deliveries"
            rx.wait_for(lambda: set(rx.stored("/hook")) == set(event_ids), timeout=15)
            wait_until(lambda: status(server)["done"] == 3, 15)
            for event_id in event_ids:
                [path] = exported(tmp_path / "exports", event_id)
                assert path.stat().st_mtime_ns == mtimes[event_id], "written once"
                assert len(objects(s3, event_id)) == 1
            assert len(rx.requests("/hook")) == 12


def test_410_stops_the_http_sink_until_resumed_and_loses_nothing(
    tmp_path: Path, s3: MotoServer
) -> None:
    with WebhookReceiver(secret=SECRET) as rx:
        rx.script("/hook", [410])
        config = fanout_config(tmp_path, s3, f"{rx.url}/hook")
        with run_hookdock(tmp_path, config, env=S3_ENV) as server:
            assert server.config_path is not None
            first = f"{post(server, 'gone-1')}-0"
            wait_until(
                lambda: "sink hook STOPPED" in server.stderr_text(), 15, message=server.describe
            )
            stopped = status(server)["sinks"]["hook"]["stopped"]
            assert stopped is not None and "410" in stopped
            # The other sinks go on; the stopped one is not tried again.
            second = f"{post(server, 'gone-2')}-0"
            wait_until(lambda: exported(tmp_path / "exports", second), 10)
            wait_until(lambda: objects(s3, second), 10)
            assert len(rx.requests("/hook")) == 1
            listing = run_cli("sinks", config=server.config_path, env=S3_ENV)
            assert listing.returncode == 0, listing.stderr
            assert "STOPPED" in listing.stdout and "hook" in listing.stdout
            assert status(server)["pending"] == 2
            # The destination is fixed (its script is used up: 204 from now on).
            resumed = run_cli("sinks", "resume", "hook", config=server.config_path, env=S3_ENV)
            assert resumed.returncode == 0, resumed.stderr
            rx.wait_for(lambda: set(rx.stored("/hook")) == {first, second}, timeout=15)
            wait_until(lambda: status(server)["done"] == 2, 15)
            again = run_cli("sinks", "resume", "hook", config=server.config_path, env=S3_ENV)
            assert again.returncode == 1 and "not stopped" in again.stderr


def test_check_reports_every_sinks_problem_against_the_real_destinations(
    tmp_path: Path, s3: MotoServer
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be\n")
    with WebhookReceiver(secret=SECRET) as rx:
        config = fanout_config(tmp_path, s3, f"{rx.url}/hook")
        path = tmp_path / "hookdock.toml"
        path.write_text(config, encoding="utf-8")
        fine = run_cli("check", config=path, env=S3_ENV)
        assert fine.returncode == 0, fine.stderr
        assert "configuration is valid" in fine.stdout
        assert rx.requests() == [], "check never POSTs"
    broken = make_config(
        tmp_path,
        extra_routes=[route("fanout", {"type": "none"}, sinks=["exports", "bucket", "hook"])],
        sinks={
            "exports": {"root": str(blocker)},
            "bucket": {
                "type": "s3",
                "bucket": "no-such-bucket",
                "endpoint_url": s3.url,
                "addressing_style": "path",
                "region": "us-east-1",
            },
            "hook": {"type": "http", "url": "https://hooks.example.invalid/in", "secret": SECRET},
        },
    )
    path.write_text(broken, encoding="utf-8")
    result = run_cli("check", config=path, env=S3_ENV)
    assert result.returncode == 1, result.stderr
    problems = result.stderr
    assert "configuration is valid, but:" in problems
    assert "sinks.exports:" in problems and "not writable" in problems
    assert "sinks.bucket:" in problems and "no-such-bucket" in problems
    assert "sinks.hook:" in problems and "does not resolve" in problems
    assert SECRET.removeprefix("whsec_") not in problems
