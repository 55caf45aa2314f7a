"""Documill Dynamo end to end: the emulator as a real server, a real ``hookdock serve`` polling it.

A batch of 50 tasks is submitted with ``hookdock documill submit`` as multipart (an embedded
template and a ``param.customer`` part that five tasks map in with ``partParams``); two of its
tasks fail.  Each finished task must come out once, its result file in the local folder and
in S3 (moto) byte for byte as the emulator made it (two tasks make two documents each), with
the SHA-256 recorded in its event;
the two failures as ``task.failed``; ``batch.completed`` once, with the counts.  A 503 and a
429 from Dynamo are waited out.  Then a JSON batch whose result links are dead before anyone
can fetch them: its files are reported as ``link_expired`` and not asked for again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.documill.emulator import DocumillEmulator, EmulatorSettings, result_bytes
from handlers.emulation import serve_in_thread
from tests.conftest import make_config, run_cli, run_hookdock, wait_until
from tests.s3server import S3_ENV, MotoServer, moto_server

pytestmark = pytest.mark.e2e

BUCKET = "documill-e2e"
POLLER = "dynamo"
TASKS = 50
FAILING = {"rec-7", "rec-31"}


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path) as server:
        server.boto3_client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def dynamo() -> Iterator[tuple[DocumillEmulator, str]]:
    emu = DocumillEmulator(EmulatorSettings(task_seconds=0.02))
    with serve_in_thread(emu.app, "documill") as url:
        emu.settings = emu.settings.model_copy(update={"public_url": url})
        yield emu, url


def poller_config(api_url: str, sinks: list[str], **settings: Any) -> dict[str, Any]:
    return {
        "name": POLLER,
        "type": "documill.batches",
        "interval_seconds": 0.3,
        "jitter": 0,
        "max_backoff_seconds": 1,
        "sinks": sinks,
        "files": {"fetch": ["exported"], "allow_networks": ["127.0.0.1/32"]},
        "settings": {
            "api": {
                "base_url": api_url,
                "tenant_id": "emulator-tenant",
                "api_key": "${DYNAMO_KEY}",
                "allow_networks": ["127.0.0.1/32"],
            },
            **settings,
        },
    }


def s3_sink(moto: MotoServer) -> dict[str, Any]:
    return {
        "type": "s3",
        "bucket": BUCKET,
        "endpoint_url": moto.url,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }


ENV = {**S3_ENV, "DYNAMO_KEY": "emulator-key"}


def events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in root.rglob("*.json")]


def kinds(found: list[dict[str, Any]], batch: str) -> Counter[str]:
    return Counter(e["kind"] for e in found if e["batch_id"] == batch)


def write_batch(folder: Path) -> list[str]:
    """The 50-task batch, its template and part; the arguments of ``documill submit``."""
    tasks: list[dict[str, Any]] = []
    for n in range(1, TASKS + 1):
        task: dict[str, Any] = {"params": {"id": f"rec-{n}", "n": n}}
        if n in (10, 20):
            task["params"]["copies"] = 2  # two documents: roles exported and exported-2
        if n <= 5:
            task["partParams"] = [{"partName": "customer", "paramName": "customer"}]
        tasks.append(task)
    (folder / "batch.json").write_text(json.dumps({"tasks": tasks}))
    (folder / "offer.dap").write_bytes(b"PK\x03\x04 an embedded template")
    (folder / "customer.json").write_text(json.dumps({"name": "Åsa Öberg", "tier": "gold"}))
    return [
        "--batch",
        str(folder / "batch.json"),
        "--template-file",
        str(folder / "offer.dap"),
        "--part",
        f"customer={folder / 'customer.json'}",
    ]


def test_a_batch_comes_out_once_with_its_files_and_expired_links_are_reported(
    tmp_path: Path, dynamo: tuple[DocumillEmulator, str], moto: MotoServer
) -> None:
    emu, api_url = dynamo
    emu.set_faults(fail_records=FAILING)
    config = make_config(
        tmp_path,
        sinks={"bucket": s3_sink(moto)},
        pollers=[poller_config(api_url, ["exports", "bucket"])],
    )
    exports = tmp_path / "exports"
    with run_hookdock(tmp_path / "run", config, env=ENV) as server:
        args = write_batch(tmp_path)
        emu.set_faults(fail_5xx=1, rate_limit=1, retry_after=1)
        # The CLI's own post meets the 429 first, then the 503: it says so and posts nothing.
        for expected in ("HTTP 429", "HTTP 503"):
            done = run_cli("documill", "submit", *args, config=server.config_path, env=ENV)
            assert done.returncode == 1 and expected in done.stderr, done.stderr
        assert emu.batches == {}
        done = run_cli("documill", "submit", *args, config=server.config_path, env=ENV)
        assert done.returncode == 0, done.stderr
        # And the poller meets a 503 and a 429 of its own: it backs off and goes on.
        emu.set_faults(fail_5xx=1, rate_limit=1, retry_after=1)
        answer = json.loads(done.stdout)
        batch_id = answer["batch_id"]
        assert len(answer["tasks"]) == TASKS and list(emu.batches) == [batch_id]
        batch = emu.batches[batch_id]
        assert batch.multipart and batch.tasks[0].params["customer"]["tier"] == "gold"
        assert "customer" not in batch.tasks[5].params

        everything = Counter(
            {"task.completed": 48, "task.failed": 2, "batch.completed": 1, "batch.submitted": 1}
        )
        # Files go first, so a task's event is written once its file is stored.
        wait_until(lambda: kinds(events(exports), batch_id) == everything, 60, 0.2, server.describe)
        found = [e for e in events(exports) if e["batch_id"] == batch_id]
        assert emu.faults.fail_5xx == emu.faults.rate_limit == 0
        polled = json.loads(run_cli("pollers", "--json", config=server.config_path, env=ENV).stdout)
        assert polled[POLLER]["polls"] > polled[POLLER]["failures"] >= 0
        failed = {e["external_id"] for e in found if e["kind"] == "task.failed"}
        assert failed == FAILING
        summary = next(e for e in found if e["kind"] == "batch.completed")["payload"]
        assert (summary["succeeded"], summary["failed"], summary["tasks"]) == (48, 2, 50)

        params = {t.task_id: t.params for t in batch.tasks}
        s3 = moto.boto3_client()
        objects = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        for event in (e for e in found if e["kind"] == "task.completed"):
            task = params[event["task_id"]]
            roles = ["exported", "exported-2"][: task.get("copies", 1)]
            assert [f["role"] for f in event["files"]] == roles
            for n, info in enumerate(event["files"]):
                document = result_bytes(batch_id, event["task_id"], task, n)
                assert info["sha256"] == hashlib.sha256(document).hexdigest()
                assert info["size"] == len(document)
                assert info["filename"] == f"{task['id']}{'-2' if n else ''}.pdf"
                ending = f"{event['event_id']}.{info['role']}.pdf"
                (local,) = list(exports.rglob(f"*{ending}"))
                assert local.read_bytes() == document
                (key,) = [k for k in objects if k.endswith(ending)]
                assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == document

        # Links that are dead before anyone fetches them: reported, not retried forever.
        emu.settings = emu.settings.model_copy(update={"link_seconds": -1})
        (tmp_path / "small.json").write_text(
            json.dumps(
                {"template": "tpl-1", "tasks": [{"params": {"id": f"late-{n}"}} for n in range(3)]}
            )
        )
        done = run_cli(
            "documill", "submit", "--batch", str(tmp_path / "small.json"),
            config=server.config_path, env=ENV,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        late = json.loads(done.stdout)["batch_id"]

        def expired_reported() -> bool:
            status = json.loads(run_cli("status", config=server.config_path).stdout)
            return bool(status["failures"].get("link_expired") == 6)

        wait_until(expired_reported, 60, 0.3, server.describe)
        assert kinds(events(exports), late)["batch.completed"] == 1
        asked = {k: v for k, v in emu.file_gets.items() if k.startswith(late)}
        assert len(asked) == 3 and all(v <= 2 for v in asked.values()), asked
        assert "emulator-key" not in server.stderr_text()
