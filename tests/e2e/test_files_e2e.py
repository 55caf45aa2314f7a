"""Files behind expiring links, end to end: a real ``hookdock serve``, a real Azure-like file
server on 127.0.0.1 (tests/file_server.py), a real folder and moto's S3 server.

The route opts in to loopback (``allow_networks = ["127.0.0.1/32"]``): without it the SSRF
guard refuses the file server, which one test shows.  Every server runs with debug logs, and
no test ends without checking that no link's signature reached them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
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
from tests.file_server import Fault, FileServer
from tests.s3server import S3_ENV, MotoServer, boto3_s3, moto_server
from tests.sd_payloads import load
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

BUCKET = "files"
MiB = 1024 * 1024
ENV = {**S3_ENV, "HOOKDOCK_LOG_LEVEL": "debug"}
LOOPBACK = ["127.0.0.1/32"]
HOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        boto3_s3(server.url).create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


def config(
    tmp_path: Path,
    s3: MotoServer | None,
    *,
    prefix: str = "",
    retry: dict[str, Any] | None = None,
    hook_url: str | None = None,
    **file_options: Any,
) -> str:
    options: dict[str, Any] = {"fetch": ["exported", "original"], "allow_networks": LOOPBACK}
    options.update(file_options)
    sinks: dict[str, Any] = {}
    names = ["exports"]
    if hook_url is not None:
        names.append("hook")
        sinks["hook"] = {
            "type": "http",
            "url": hook_url,
            "secret": HOOK_SECRET,
            "allow_networks": LOOPBACK,
        }
    if s3 is not None:
        names.append("bucket")
        sinks["bucket"] = {
            "type": "s3",
            "bucket": BUCKET,
            "endpoint_url": s3.url,
            "addressing_style": "path",
            "region": "us-east-1",
            "key_template": (prefix or secrets.token_hex(4)) + "/{event_id}.json",
            "part_size_mb": 5,
        }
    return make_config(
        tmp_path,
        extra_routes=[
            route(
                "files",
                {"type": "none"},
                source="smartdocumentor.transcript_file",
                sinks=names,
                files=options,
            )
        ],
        sinks=sinks,
        dispatcher={
            "poll_seconds": 0.1,
            "retry": retry or {"max_attempts": 3, "schedule": [0.5], "jitter": 0},
        },
    )


def post(server: HookdockProcess, exported: str, original: str | None = None) -> str:
    body: dict[str, Any] = json.loads(load("transcript_file", "with_original"))
    body["taskId"] = f"task-{secrets.token_hex(4)}"
    body["exportedFileUrl"] = exported
    body["originalFileUrl"] = original
    response = httpx.post(
        f"{server.url}/hooks/files",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        timeout=10.0,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return delivery_id_from(response.text)


def event_json(root: Path, event_id: str) -> Any:
    found = sorted(root.rglob(f"*{event_id}.json"))
    return json.loads(found[0].read_text()) if found else None


def stored(root: Path, event_id: str, role: str) -> Path:
    [path] = [p for p in root.rglob(f"*{event_id}.{role}*") if not p.name.startswith(".")]
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def big_file(path: Path, size: int) -> Path:
    block = os.urandom(MiB)
    with path.open("wb") as handle:
        for n in range(size // MiB):
            handle.write(n.to_bytes(8, "big") + block[8:])
    return path


def sigs(*urls: str) -> list[str]:
    """The signatures of ``urls``, percent-encoded as they travel and decoded."""
    found = []
    for url in urls:
        sig = url.split("sig=", 1)[1].split("&", 1)[0]
        found += [sig, httpx.URL(url).params["sig"]]
    return found


def assert_no_secret(texts: list[str], secrets_: list[str]) -> None:
    for text in texts:
        for secret in secrets_:
            assert secret not in text, "a link's signature leaked into output"


def dead_reason(server: HookdockProcess, delivery_id: str, timeout: float = 20.0) -> str:
    """The dispatcher's logged dead-letter reason for ``delivery_id``, waited for."""
    reason = wait_until(lambda: server.dead_lettered(delivery_id), timeout, message=server.describe)
    assert reason is not None
    return reason


def status(server: HookdockProcess) -> dict[str, Any]:
    assert server.config_path is not None
    result = run_cli("status", config=server.config_path, env=ENV)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_small_and_large_files_reach_the_folder_and_s3_byte_identical(
    tmp_path: Path, s3: MotoServer, files: FileServer
) -> None:
    large = big_file(tmp_path / "recording.bin", 24 * MiB)
    small = os.urandom(150_000)
    files.add("meeting.docx", large, content_type="application/vnd.openxmlformats")
    files.add(
        "orig.mp3",
        small,
        content_type="audio/mpeg",
        disposition="attachment; filename*=UTF-8''m%C3%B6te%20ett.mp3",
    )
    exported, original = files.sas_url("meeting.docx"), files.sas_url("orig.mp3")
    prefix = secrets.token_hex(4)
    root = tmp_path / "exports"
    with run_hookdock(tmp_path, config(tmp_path, s3, prefix=prefix), env=ENV) as server:
        event_id = f"{post(server, exported, original)}-0"
        event = wait_until(lambda: event_json(root, event_id), 60, message=server.describe)
        client = boto3_s3(s3.url)
        key = f"{prefix}/{event_id}.json"

        def in_bucket() -> bool:
            listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            return any(o["Key"] == key for o in listing.get("Contents", []))

        wait_until(in_bucket, 60, message=server.describe)
        stderr = server.stderr_text()

    by_role = {f["role"]: f for f in event["files"]}
    assert by_role["exported"]["size"] == large.stat().st_size
    assert by_role["exported"]["sha256"] == sha256_of(large)
    assert by_role["exported"]["content_type"] == "application/vnd.openxmlformats"
    assert by_role["exported"]["filename"] == "meeting.docx"
    assert by_role["original"]["sha256"] == hashlib.sha256(small).hexdigest()
    assert by_role["original"]["filename"] == "m\u00f6te ett.mp3"
    assert by_role["original"]["content_type"] == "audio/mpeg"

    # The folder: byte-identical files beside the event.
    assert sha256_of(stored(root, event_id, "exported")) == sha256_of(large)
    assert stored(root, event_id, "original").read_bytes() == small
    assert stored(root, event_id, "exported").name.endswith(".exported.docx")

    # S3: the same bytes, with the checksum in the object's metadata.
    client = boto3_s3(s3.url)
    head = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{event_id}.exported.docx")
    assert head["Metadata"]["sha256"] == sha256_of(large)
    assert head["ContentLength"] == large.stat().st_size
    assert head["ContentType"] == "application/vnd.openxmlformats"
    body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/{event_id}.exported.docx")["Body"]
    digest = hashlib.sha256()
    for chunk in body.iter_chunks(MiB):
        digest.update(chunk)
    assert digest.hexdigest() == sha256_of(large)
    original_key = f"{prefix}/{event_id}.original.mp3"
    got = client.get_object(Bucket=BUCKET, Key=original_key)
    assert got["Body"].read() == small
    assert got["Metadata"]["sha256"] == hashlib.sha256(small).hexdigest()
    s3_event = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert s3_event["files"] == event["files"]

    # Each sink fetched each file once; the stored events keep no signature.
    assert len(files.requests("meeting.docx")) == 2
    assert len(files.requests("orig.mp3")) == 2
    everything = [json.dumps(event), json.dumps(s3_event), stderr]
    assert_no_secret(everything, sigs(exported, original))
    assert "sig=REDACTED" in by_role["exported"]["url"]


def test_links_that_cannot_be_fetched_are_dead_with_reasons_and_counted(
    tmp_path: Path, files: FileServer
) -> None:
    files.add("gone.pdf", b"x" * 100)
    files.add("expired.pdf", b"x" * 100)
    files.add("huge.pdf", b"x" * 5000)
    expired = files.sas_url("expired.pdf", expires_in=-120)
    deleted = files.sas_url("gone.pdf")
    files.remove("gone.pdf")
    huge = files.sas_url("huge.pdf")
    with run_hookdock(tmp_path, config(tmp_path, None, max_bytes=1000), env=ENV) as server:
        ids = {
            name: post(server, url)
            for name, url in (("expired", expired), ("deleted", deleted), ("huge", huge))
        }
        reasons = {name: dead_reason(server, d) for name, d in ids.items()}
        counts = status(server)
        listing = run_cli(
            "deliveries", "--state", "dead", "--sends", config=server.config_path, env=ENV
        )
        stderr = server.stderr_text()

    assert "expired at" in reasons["expired"] and "ask the vendor" in reasons["expired"]
    assert "HTTP 403 AuthenticationFailed" in reasons["expired"]
    assert "deleted at the vendor" in reasons["deleted"]
    assert "HTTP 404 BlobNotFound" in reasons["deleted"]
    assert "over the route's cap of 1000 bytes" in reasons["huge"]
    assert counts["failures"] == {"link_expired": 1, "file_deleted": 1, "file_too_large": 1}
    assert counts["dead"] == 3
    assert "[link_expired]" in listing.stdout
    # Permanent: each link was tried once, and nothing was stored.
    assert [len(files.requests(n)) for n in ("expired.pdf", "gone.pdf", "huge.pdf")] == [1, 1, 1]
    assert not [p for p in (tmp_path / "exports").rglob("*") if p.is_file()]
    assert_no_secret([stderr, listing.stdout, listing.stderr], sigs(expired, deleted, huge))


def test_a_stalled_download_times_out_and_the_retry_completes(
    tmp_path: Path, files: FileServer
) -> None:
    data = os.urandom(300_000)
    files.add("slow.pdf", data)
    files.script("slow.pdf", [Fault(stall_after=1000), Fault(delay=3.0)])
    link = files.sas_url("slow.pdf")
    cfg = config(
        tmp_path,
        None,
        read_seconds=0.5,
        total_seconds=1.5,
        retry={"max_attempts": 4, "schedule": [0.3], "jitter": 0},
    )
    root = tmp_path / "exports"
    with run_hookdock(tmp_path, cfg, env=ENV) as server:
        event_id = f"{post(server, link)}-0"
        event = wait_until(lambda: event_json(root, event_id), 30, message=server.describe)
        stderr = server.stderr_text()
    assert event["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(root, event_id, "exported").read_bytes() == data
    assert len(files.requests("slow.pdf")) == 3
    retries = [line for line in stderr.splitlines() if "attempt" in line and "retrying" in line]
    assert len(retries) == 2, retries
    assert all("timed out" in line for line in retries), retries
    assert_no_secret([stderr], sigs(link))


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/container/x.pdf", "10.0.0.1 is a private address"),
        ("http://127.0.0.2:9/container/x.pdf", "127.0.0.2"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ],
)
def test_a_redirect_to_a_private_address_is_refused(
    tmp_path: Path, files: FileServer, target: str, reason: str
) -> None:
    files.add("moved.pdf", b"x" * 10)
    files.script("moved.pdf", [Fault(redirect=target)])
    link = files.sas_url("moved.pdf")
    with run_hookdock(tmp_path, config(tmp_path, None), env=ENV) as server:
        delivery_id = post(server, link)
        dead = dead_reason(server, delivery_id)
        counts = status(server)
    assert reason in dead, dead
    assert counts["failures"] == {"address_refused": 1}
    assert len(files.requests("moved.pdf")) == 1
    assert_no_secret([dead], sigs(link))


def test_without_the_opt_in_a_loopback_link_is_refused_unfetched(
    tmp_path: Path, files: FileServer
) -> None:
    files.add("local.pdf", b"x" * 10)
    link = files.sas_url("local.pdf")
    with run_hookdock(tmp_path, config(tmp_path, None, allow_networks=[]), env=ENV) as server:
        delivery_id = post(server, link)
        dead = dead_reason(server, delivery_id)
    assert "127.0.0.1 is a loopback address" in dead, dead
    assert "allow_networks" in dead
    assert files.requests("local.pdf") == []


def test_the_http_sink_gets_each_file_as_its_own_signed_request_before_the_event(
    tmp_path: Path, files: FileServer
) -> None:
    data = os.urandom(2 * MiB + 7)
    files.add("report.pdf", data, content_type="application/pdf")
    link = files.sas_url("report.pdf")
    with WebhookReceiver(secret=HOOK_SECRET) as rx:
        cfg = config(tmp_path, None, hook_url=f"{rx.url}/hook", fetch=["exported"])
        with run_hookdock(tmp_path, cfg, env=ENV) as server:
            event_id = f"{post(server, link)}-0"
            rx.wait_for(lambda: event_id in rx.stored("/hook"), timeout=30)
            stderr = server.stderr_text()
        requests = rx.requests("/hook")
    file_id = f"{event_id}.exported"
    assert rx.stored_files("/hook") == {file_id: data}
    [file_request] = [r for r in requests if r.headers.get("webhook-id") == file_id]
    [event_request] = [r for r in requests if r.headers.get("webhook-id") == event_id]
    assert file_request.verified and event_request.verified
    assert file_request.received_at <= event_request.received_at
    assert file_request.headers["content-type"] == "application/pdf"
    assert file_request.headers["hookdock-file-sha256"] == hashlib.sha256(data).hexdigest()
    assert 'filename="report.pdf"' in file_request.headers["content-disposition"]
    event = rx.stored("/hook")[event_id]
    assert event["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert_no_secret([json.dumps(event), stderr], sigs(link))
    assert os.listdir(tmp_path / "spool") == [], "a spool has no name on disk"
