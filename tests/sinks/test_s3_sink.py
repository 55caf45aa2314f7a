"""The S3 sink against a real S3 endpoint: moto in server mode on 127.0.0.1.

Objects are read back with boto3.  A second moto server runs with authentication on (an IAM
user and its key made at start), so the credential tests see a store that checks them.
Every AWS setting comes from ``S3_ENV`` or the test itself, with instance metadata switched
off: nothing here reaches a real AWS endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import re
import secrets
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, HTTPClientError
from pydantic import ValidationError

from handlers.errors import PermanentSinkError, RetryableSinkError
from handlers.event import Event
from handlers.files import IncomingFile
from handlers.sinks import s3 as s3_module
from handlers.sinks.s3 import MAX_PARTS, MIB, PROBE_PREFIX, S3Sink, S3SinkConfig, classify
from handlers.testing import SinkContract, make_event
from tests.conftest import free_port
from tests.s3server import S3_ENV, MotoServer, boto3_s3, moto_server

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SECRET = "sEcReT-" + secrets.token_hex(12)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def s3(moto: MotoServer) -> Any:
    return moto.boto3_client()


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"hookdock-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


def options(moto: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "endpoint_url": moto.url,
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        **extra,
    }


@pytest.fixture
async def make_sink(moto: MotoServer, bucket: str) -> AsyncIterator[Any]:
    made: list[S3Sink] = []

    def make(**extra: Any) -> S3Sink:
        values = options(moto, bucket, **extra)
        sink = S3Sink(S3SinkConfig.model_validate(values))
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()


def objects(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def read(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], Any]:
    answer = s3.get_object(Bucket=bucket, Key=key)
    return answer, json.loads(answer["Body"].read())


def holds_event(s3: Any, bucket: str, key: str, event: Event) -> bool:
    try:
        return bool(read(s3, bucket, key)[1]["event_id"] == event.event_id)
    except (ValueError, KeyError, TypeError):  # one of the event's files, not JSON
        return False


def stored_files(s3: Any, sink: S3Sink, event: Event, role: str) -> list[str]:
    """Keys of ``event``'s stored ``role`` file: ``<stem>.<role>`` and an optional extension."""
    prefix = f"{sink.key_for(event).removesuffix('.json')}.{role}"
    pattern = re.compile(re.escape(prefix) + r"(\.[a-z0-9]+)?")
    return [k for k in objects(s3, sink.config.bucket, prefix) if pattern.fullmatch(k)]


class TestS3SinkContract(SinkContract):
    @pytest.fixture
    async def sink(self, moto: MotoServer, bucket: str) -> AsyncIterator[S3Sink]:
        sink = S3Sink(S3SinkConfig.model_validate(options(moto, bucket)))
        yield sink
        await sink.aclose()

    async def copies(self, sink: S3Sink, event: Event) -> int:
        s3 = boto3_s3(str(sink.config.endpoint_url))
        keys = [k for k in objects(s3, sink.config.bucket) if event.event_id in k]
        # Count only objects that really hold this event.
        return sum(holds_event(s3, sink.config.bucket, k, event) for k in keys)

    async def stored_file(self, sink: S3Sink, event: Event, role: str) -> bytes | None:
        s3 = boto3_s3(str(sink.config.endpoint_url))
        keys = stored_files(s3, sink, event, role)
        assert len(keys) <= 1, keys
        if not keys:
            return None
        data: bytes = s3.get_object(Bucket=sink.config.bucket, Key=keys[0])["Body"].read()
        return data


# ---------------------------------------------------------------- keys, body, metadata


async def test_key_template_renders_event_fields(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(key_template="{route}/{received_date}/{task_id}/{event_id}.json")
    event = make_event(route="sd-text", task_id="T-9")
    await sink.deliver(event)
    expected = f"sd-text/{event.received_at:%Y-%m-%d}/T-9/{event.event_id}.json"
    assert sink.key_for(event) == expected
    assert objects(s3, bucket) == [expected]


async def test_missing_values_render_as_none(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(key_template="{batch_id}/{event_id}")
    event = make_event(batch_id=None)
    await sink.deliver(event)
    assert objects(s3, bucket) == [f"none/{event.event_id}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", ".."),
        ("task_id", "../../other"),
        ("workspace_id", "a/b"),
        ("workspace_id", "a\\b"),
        ("task_id", "nul\x00"),
        ("task_id", "line\nbreak"),
        ("task_id", ""),
    ],
)
async def test_values_that_would_move_the_key_are_refused(
    make_sink: Any, s3: Any, bucket: str, field: str, value: str
) -> None:
    sink = make_sink()
    with pytest.raises(PermanentSinkError, match=f"event field {field} is not usable in a key"):
        await sink.deliver(make_event(**{field: value}))
    assert objects(s3, bucket) == []


async def test_body_metadata_and_content_type(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink()
    event = make_event(task_id="tâche-1", display_name="Fatura nº 1.pdf", workspace_id="7")
    await sink.deliver(event)
    answer, body = read(s3, bucket, sink.key_for(event))
    assert body == json.loads(event.model_dump_json())
    assert answer["ContentType"] == "application/json"
    meta = answer["Metadata"]
    assert meta["event-id"] == event.event_id
    assert meta["vendor"] == "smartdocumentor"
    assert meta["kind"] == "text_document"
    # Not ASCII: sent as an RFC 2047 encoded word, which decodes back to the value.
    encoded = meta["task-id"]
    assert encoded.startswith("=?UTF-8?B?") and encoded.endswith("?=")
    assert base64.b64decode(encoded[10:-2]).decode() == "tâche-1"


async def test_content_type_is_configurable(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(content_type="application/vnd.hookdock.event+json")
    event = make_event(task_id=None)
    await sink.deliver(event)
    answer, _ = read(s3, bucket, sink.key_for(event))
    assert answer["ContentType"] == "application/vnd.hookdock.event+json"
    assert "task-id" not in answer["Metadata"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"sse": "AES256"}, {"ServerSideEncryption": "AES256"}),
        (
            {"sse": "aws:kms", "sse_kms_key_id": "alias/hookdock"},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/hookdock"},
        ),
        ({"storage_class": "STANDARD_IA"}, {"StorageClass": "STANDARD_IA"}),
    ],
)
async def test_encryption_and_storage_class(
    make_sink: Any, s3: Any, bucket: str, extra: dict[str, str], expected: dict[str, str]
) -> None:
    sink = make_sink(**extra)
    event = make_event()
    await sink.deliver(event)
    head = s3.head_object(Bucket=bucket, Key=sink.key_for(event))
    assert {k: head.get(k) for k in expected} == expected


# ---------------------------------------------------------------- files


def decode(value: str) -> str:
    """S3 metadata that is not plain ASCII is stored as an RFC 2047 encoded word."""
    if value.startswith("=?UTF-8?B?") and value.endswith("?="):
        return base64.b64decode(value[10:-2]).decode()
    return value


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def generated(size: int, seed: int = 0, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``data_of(size, seed)``'s bytes, made chunk by chunk: never whole in memory."""
    rng = random.Random(seed)
    for start in range(0, size, chunk):
        yield rng.randbytes(min(chunk, size - start))


def streamed_sha256(s3: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for piece in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        digest.update(piece)
    return digest.hexdigest()


async def record_calls(sink: S3Sink) -> list[tuple[str, dict[str, Any]]]:
    """Every S3 call the sink makes from now on: operation and parameters (bodies left out)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def note(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, {k: v for k, v in params.items() if k != "Body"}))

    (await sink.client()).meta.events.register("before-parameter-build.s3", note)
    return calls


def names(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in calls]


def open_uploads(s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


async def test_a_small_file_is_one_put_with_its_metadata(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink()
    calls = await record_calls(sink)
    event = make_event(task_id="T-1")
    data = data_of(200_000)
    incoming = IncomingFile.from_bytes(
        "exported", data, filename="Scan 1.PDF", content_type="application/pdf"
    )
    await sink.deliver_file(event, incoming)
    assert names(calls) == ["PutObject"]
    key = sink.key_for(event).removesuffix(".json") + ".exported.pdf"
    assert sink.file_key_for(event, "exported", "Scan 1.PDF") == key
    answer = s3.get_object(Bucket=bucket, Key=key)
    assert answer["Body"].read() == data
    assert answer["ContentType"] == "application/pdf"
    assert answer["Metadata"] == {
        "event-id": event.event_id,
        "vendor": "smartdocumentor",
        "kind": "text_document",
        "task-id": "T-1",
        "file-role": "exported",
        "filename": "Scan 1.PDF",
        "size": "200000",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert incoming.info().sha256 == hashlib.sha256(data).hexdigest()


async def test_a_large_file_goes_up_in_parts(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(part_size_mb=5, sse="AES256", storage_class="STANDARD_IA")
    calls = await record_calls(sink)
    completed: list[str] = []
    (await sink.client()).meta.events.register(
        "after-call.s3.CompleteMultipartUpload",
        lambda parsed, **_: completed.append(parsed["ETag"]),
    )
    event = make_event()
    data = data_of(40_000_000, seed=40)
    incoming = IncomingFile.from_bytes(
        "exported", data, filename="scan.tiff", content_type="image/tiff", chunk_size=256 * 1024
    )
    await sink.deliver_file(event, incoming)

    parts = -(-len(data) // (5 * MIB))
    assert parts == 8
    assert names(calls) == [
        "CreateMultipartUpload",
        *["UploadPart"] * parts,
        "CompleteMultipartUpload",
        "CopyObject",
    ]
    assert len(completed) == 1 and completed[0].strip('"').endswith(f"-{parts}")
    sizes = {params["PartNumber"]: params for name, params in calls if name == "UploadPart"}
    assert sorted(sizes) == list(range(1, parts + 1))
    key = sink.file_key_for(event, "exported", "scan.tiff")
    answer = s3.get_object(Bucket=bucket, Key=key)
    assert answer["Body"].read() == data
    assert answer["ContentType"] == "image/tiff"
    assert answer["ServerSideEncryption"] == "AES256"
    assert answer["StorageClass"] == "STANDARD_IA"
    meta = answer["Metadata"]
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() == incoming.info().sha256
    assert meta["size"] == str(len(data))
    assert meta["file-role"] == "exported" and meta["filename"] == "scan.tiff"
    assert meta["event-id"] == event.event_id
    assert open_uploads(s3, bucket) == []


async def test_parts_declare_crc32_as_boto3_does(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(part_size_mb=5)
    calls = await record_calls(sink)
    await sink.deliver_file(make_event(), IncomingFile.from_bytes("exported", data_of(6 * MIB)))
    create, *uploads, complete, copy = (params for _, params in calls)
    assert create["ChecksumAlgorithm"] == "CRC32"
    assert [p["ChecksumAlgorithm"] for p in uploads] == ["CRC32", "CRC32"]
    assert all(p["ChecksumCRC32"] for p in complete["MultipartUpload"]["Parts"])
    # The copy makes it a CRC32 of the whole object, which readers check.
    assert copy["ChecksumAlgorithm"] == "CRC32"


async def test_when_required_checksums_are_left_out(
    make_sink: Any, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The standard setting for stores that refuse flexible checksums.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    sink = make_sink(part_size_mb=5)
    calls = await record_calls(sink)
    event = make_event()
    data = data_of(6 * MIB)
    await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    create, *_, complete, copy = (params for _, params in calls)
    assert "ChecksumAlgorithm" not in create and "ChecksumAlgorithm" not in copy
    assert not any("ChecksumCRC32" in p for p in complete["MultipartUpload"]["Parts"])
    key = sink.file_key_for(event, "exported", "file.bin")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["put", "multipart"])
async def test_a_name_that_is_not_ascii_round_trips(
    make_sink: Any, s3: Any, bucket: str, size: int
) -> None:
    sink = make_sink(part_size_mb=5)
    event = make_event()
    name = "Fatura nº 1, ação 請求書.pdf"
    await sink.deliver_file(
        event, IncomingFile.from_bytes("original", data_of(size), filename=name)
    )
    key = sink.file_key_for(event, "original", name)
    assert key.endswith(".original.pdf")
    meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    assert meta["filename"].startswith("=?UTF-8?B?")
    assert decode(meta["filename"]) == name
    assert meta["size"] == str(size)


async def test_memory_stays_bounded_by_the_parts(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(part_size_mb=5, upload_concurrency=2)
    # The client, its service model and its connections exist before the measuring starts.
    await sink.deliver_file(make_event(), IncomingFile.from_bytes("exported", data_of(6 * MIB)))
    event = make_event()
    size = 60_000_000
    incoming = IncomingFile("exported", generated(size, seed=60), filename="big.bin")
    tracemalloc.start()
    try:
        await sink.deliver_file(event, incoming)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # upload_concurrency parts of 5 MiB (the one being read takes a slot), and a part's worth
    # of slack for the slices botocore and aiohttp read (about 2.5 MiB here); never the file.
    assert peak < 3 * 5 * MIB, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.1f} MiB file"
    key = sink.file_key_for(event, "exported", "big.bin")
    assert streamed_sha256(s3, bucket, key) == incoming.info().sha256
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == size


async def test_parts_reuse_the_buffers_of_the_upload(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(part_size_mb=5, upload_concurrency=2)
    bodies: list[Any] = []
    (await sink.client()).meta.events.register(
        "before-parameter-build.s3.UploadPart", lambda params, **_: bodies.append(params["Body"])
    )
    event = make_event()
    data = data_of(5 * 5 * MIB + 12345, seed=5)  # a short last part, in a full part's buffer
    await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    assert len(bodies) == 6
    assert len({id(body) for body in bodies}) == 2, "one buffer per slot, reused part to part"
    key = sink.file_key_for(event, "exported", "file.bin")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


@pytest.mark.parametrize("sha256_metadata", [True, False])
async def test_sha256_metadata_decides_the_copy_after_a_multipart_upload(
    make_sink: Any, s3: Any, bucket: str, sha256_metadata: bool
) -> None:
    sink = make_sink(part_size_mb=5, sha256_metadata=sha256_metadata)
    calls = await record_calls(sink)
    event = make_event()
    large, small = data_of(11 * MIB, seed=6), data_of(3000, seed=7)
    await sink.deliver_file(event, IncomingFile.from_bytes("exported", large, filename="a.tif"))
    await sink.deliver_file(event, IncomingFile.from_bytes("original", small, filename="a.pdf"))
    copied = ["CopyObject"] if sha256_metadata else []
    assert names(calls) == [
        "CreateMultipartUpload",
        *["UploadPart"] * 3,
        "CompleteMultipartUpload",
        *copied,
        "PutObject",
    ]
    answer = s3.get_object(Bucket=bucket, Key=sink.file_key_for(event, "exported", "a.tif"))
    assert answer["Body"].read() == large  # with boto3's default checksum validation
    meta = answer["Metadata"]
    assert meta["file-role"] == "exported" and meta["event-id"] == event.event_id
    if sha256_metadata:
        assert meta["sha256"] == hashlib.sha256(large).hexdigest()
        assert meta["size"] == str(len(large))
    else:
        assert "sha256" not in meta and "size" not in meta
    # One put has them whatever the setting.
    head = s3.head_object(Bucket=bucket, Key=sink.file_key_for(event, "original", "a.pdf"))
    assert head["Metadata"]["sha256"] == hashlib.sha256(small).hexdigest()
    assert head["Metadata"]["size"] == "3000"


async def test_without_sha256_metadata_a_file_stored_twice_is_not_looked_at(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(part_size_mb=5, sha256_metadata=False)
    calls = await record_calls(sink)
    event = make_event()
    data = data_of(6 * MIB, seed=8)
    for _ in range(2):
        await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    assert names(calls)[-2:] == ["CompleteMultipartUpload", "AbortMultipartUpload"]
    assert "HeadObject" not in names(calls) and "CopyObject" not in names(calls)
    (key,) = stored_files(s3, sink, event, "exported")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert open_uploads(s3, bucket) == []


async def test_a_download_that_fails_after_three_parts_leaves_nothing(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(part_size_mb=5, upload_concurrency=1)
    event = make_event()
    part = 5 * MIB
    cut = RetryableSinkError("download cut")
    parts_seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        # One part at a time, each up before the next is read: once the fourth part's first
        # chunk is read, parts 1 to 3 are stored.
        async for chunk in generated(3 * part + 64 * 1024, chunk=256 * 1024):
            yield chunk
        (upload,) = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
        listing = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        parts_seen.extend(p["PartNumber"] for p in listing["Parts"])
        raise cut

    incoming = IncomingFile("exported", chunks(), filename="a.pdf")
    with pytest.raises(RetryableSinkError) as info:
        await sink.deliver_file(event, incoming)
    assert info.value is cut, "the download's own error, unchanged"
    assert incoming.failure is cut
    assert parts_seen == [1, 2, 3]
    assert stored_files(s3, sink, event, "exported") == []
    assert open_uploads(s3, bucket) == []


async def test_a_part_that_fails_aborts_and_is_a_sink_error(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(part_size_mb=5, upload_concurrency=2)

    def refuse_part_two(params: dict[str, Any], **_: Any) -> None:
        # The store refuses the second part, as a bucket policy would; the rest is real.
        if params["PartNumber"] == 2:
            raise _client_error("AccessDenied", 403, "UploadPart")

    (await sink.client()).meta.events.register(
        "before-parameter-build.s3.UploadPart", refuse_part_two
    )
    event = make_event()
    incoming = IncomingFile("exported", generated(4 * 5 * MIB), filename="a.pdf")
    with pytest.raises(PermanentSinkError, match="access denied") as info:
        await sink.deliver_file(event, incoming)
    assert sink.file_key_for(event, "exported", "a.pdf") in str(info.value)
    assert incoming.failure is None, "not the download's fault"
    assert not incoming.done, "reading stops once a part has failed"
    assert stored_files(s3, sink, event, "exported") == []
    assert open_uploads(s3, bucket) == []


async def test_a_cancelled_upload_is_aborted_even_if_cancelled_again(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(part_size_mb=5, upload_concurrency=2)
    reading = asyncio.Event()
    aborting = asyncio.Event()
    (await sink.client()).meta.events.register(
        "before-parameter-build.s3.AbortMultipartUpload", lambda **_: aborting.set()
    )

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in generated(2 * 5 * MIB + 1, chunk=256 * 1024):
            yield chunk
        reading.set()
        await asyncio.Event().wait()  # a download that hangs, until the delivery is cancelled
        yield b""

    event = make_event()
    incoming = IncomingFile("exported", chunks(), filename="a.bin")
    delivery = asyncio.create_task(sink.deliver_file(event, incoming))
    await reading.wait()
    assert open_uploads(s3, bucket) != []
    delivery.cancel()
    await aborting.wait()
    delivery.cancel()  # shutdown's second cancellation lands while the abort runs
    with pytest.raises(asyncio.CancelledError):
        await delivery
    await sink.aclose()  # waits for the abort that outlived the delivery
    assert open_uploads(s3, bucket) == []
    assert stored_files(s3, sink, event, "exported") == []


async def test_a_large_file_stored_twice_is_one_object(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(part_size_mb=5)
    calls = await record_calls(sink)
    event = make_event()
    data = data_of(11 * MIB, seed=2)
    for _ in range(2):
        await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    # The second completion is refused (If-None-Match): its parts are dropped, the first kept.
    assert names(calls)[-3:] == ["CompleteMultipartUpload", "AbortMultipartUpload", "HeadObject"]
    assert names(calls).count("CopyObject") == 1
    (key,) = stored_files(s3, sink, event, "exported")
    answer = s3.get_object(Bucket=bucket, Key=key)
    assert answer["Body"].read() == data
    assert answer["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert open_uploads(s3, bucket) == []


async def test_a_retry_adds_the_sums_an_interrupted_attempt_left_out(
    make_sink: Any, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = make_sink(part_size_mb=5)
    event = make_event()
    data = data_of(7 * MIB, seed=3)
    add_sums = sink._add_sums
    cut = RetryableSinkError("cut between the completion and the copy")

    async def cut_once(*args: Any) -> None:
        monkeypatch.setattr(sink, "_add_sums", add_sums)
        raise cut

    monkeypatch.setattr(sink, "_add_sums", cut_once)
    with pytest.raises(RetryableSinkError) as info:
        await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    assert info.value is cut
    key = sink.file_key_for(event, "exported", "file.bin")
    assert "sha256" not in s3.head_object(Bucket=bucket, Key=key)["Metadata"]

    await sink.deliver_file(event, IncomingFile.from_bytes("exported", data))
    answer = s3.get_object(Bucket=bucket, Key=key)
    assert answer["Body"].read() == data
    assert answer["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert answer["Metadata"]["size"] == str(len(data))
    assert open_uploads(s3, bucket) == []


async def test_files_beyond_the_copy_limit_keep_their_first_metadata(
    make_sink: Any,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 5 GiB is too much for a test: the limit is lowered instead.
    monkeypatch.setattr(s3_module, "COPY_LIMIT", 6 * MIB)
    sink = make_sink(part_size_mb=5)
    calls = await record_calls(sink)
    events = [make_event() for _ in range(2)]
    with caplog.at_level(logging.INFO, logger="handlers.sinks.s3"):
        for event in events:
            await sink.deliver_file(event, IncomingFile.from_bytes("exported", data_of(7 * MIB)))
    assert "CopyObject" not in names(calls)
    told = [r for r in caplog.records if "event JSON only" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    for event in events:
        meta = s3.head_object(Bucket=bucket, Key=sink.file_key_for(event, "exported", "x.bin"))
        assert meta["Metadata"]["file-role"] == "exported"
        assert "sha256" not in meta["Metadata"]


async def test_a_file_over_the_part_limit_is_refused_before_reading(make_sink: Any) -> None:
    sink = make_sink(part_size_mb=5)

    async def never() -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk
        raise AssertionError("the stream was read")

    too_big = MAX_PARTS * 5 * MIB + 1
    incoming = IncomingFile("exported", never(), filename="a.bin", declared_size=too_big)
    with pytest.raises(PermanentSinkError, match="raise part_size_mb"):
        await sink.deliver_file(make_event(), incoming)
    assert incoming.bytes_read == 0


# ---------------------------------------------------------------- idempotence


async def test_conditional_put_keeps_the_first_object(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink()
    first = make_event(display_name="first")
    await sink.deliver(first)
    again = first.model_copy(update={"display_name": "second"})
    await sink.deliver(again)  # 412 PreconditionFailed: counted as delivered
    _, body = read(s3, bucket, sink.key_for(first))
    assert body["display_name"] == "first"
    assert objects(s3, bucket) == [sink.key_for(first)]


async def test_without_conditional_put_a_redelivery_overwrites(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    # The counterpart of the test above: what the condition protects against.
    sink = make_sink(conditional_put=False)
    first = make_event(display_name="first")
    await sink.deliver(first)
    await sink.deliver(first.model_copy(update={"display_name": "second"}))
    _, body = read(s3, bucket, sink.key_for(first))
    assert body["display_name"] == "second"


# ---------------------------------------------------------------- failures


async def test_missing_bucket_is_permanent_and_check_names_it(moto: MotoServer, s3: Any) -> None:
    sink = S3Sink(S3SinkConfig.model_validate(options(moto, "hookdock-no-such-bucket")))
    try:
        with pytest.raises(PermanentSinkError, match="bucket hookdock-no-such-bucket does not"):
            await sink.deliver(make_event())
        problems = await sink.check()
    finally:
        await sink.aclose()
    assert len(problems) == 1
    assert "hookdock-no-such-bucket" in problems[0] and "does not exist" in problems[0]


async def test_a_closed_port_is_retryable(bucket: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = S3SinkConfig.model_validate(
        {
            "bucket": bucket,
            "endpoint_url": url,
            "region": "us-east-1",
            "client_attempts": 1,
            "connect_timeout_seconds": 2,
        }
    )
    sink = S3Sink(config)
    try:
        with pytest.raises(RetryableSinkError, match="cannot reach the store"):
            await sink.deliver(make_event())
        problems = await sink.check()
    finally:
        await sink.aclose()
    assert len(problems) == 1 and "cannot reach the store" in problems[0]


async def test_check_passes_and_leaves_no_probe(make_sink: Any, s3: Any, bucket: str) -> None:
    sink = make_sink(sse="AES256")
    assert await sink.check() == []
    assert objects(s3, bucket, PROBE_PREFIX) == []


def _client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} said the store"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("SlowDown", 503, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 400, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("ConditionalRequestConflict", 409, True),
        ("TooManyRequests", 429, True),
        ("NoSuchBucket", 404, False),
        ("AccessDenied", 403, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("InvalidStorageClass", 400, False),
        ("NotImplemented", 501, False),
    ],
)
def test_error_classification(code: str, status: int, retryable: bool) -> None:
    error = classify(_client_error(code, status), "my-bucket", "a/key.json")
    assert isinstance(error, RetryableSinkError if retryable else PermanentSinkError)
    assert "my-bucket" in str(error)


def test_retry_after_is_passed_on() -> None:
    exc = _client_error("SlowDown", 503)
    exc.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] = "7"
    error = classify(exc, "b", "k")
    assert isinstance(error, RetryableSinkError) and error.retry_after == 7.0


# ---------------------------------------------------------------- credentials


@pytest.fixture(scope="module")
def auth_moto(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A moto server that checks credentials: an IAM user with s3:* and its key, a second
    one allowed only to read (made by the six unauthenticated calls moto is told to allow
    before it starts checking), and a bucket made with the writer's key."""
    import boto3  # type: ignore[import-untyped]

    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "6"}
    with moto_server(tmp_path_factory.mktemp("moto-auth"), env=env, name="moto-auth") as server:
        iam = boto3.session.Session().client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        keys: dict[str, str] = {}
        for user, action in (("writer", "s3:*"), ("reader", "s3:GetObject")):
            iam.create_user(UserName=user)
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[f"{user}_id"], keys[f"{user}_secret"] = key["AccessKeyId"], key["SecretAccessKey"]
        server.boto3_client(
            aws_access_key_id=keys["writer_id"], aws_secret_access_key=keys["writer_secret"]
        ).create_bucket(Bucket="hookdock-auth")
        yield server, keys


def auth_sink(server: MotoServer, **extra: Any) -> S3Sink:
    values = {"bucket": "hookdock-auth", "endpoint_url": server.url, "region": "us-east-1"}
    return S3Sink(S3SinkConfig.model_validate({**values, **extra}))


async def deliver_and_close(sink: S3Sink, event: Event) -> None:
    try:
        await sink.deliver(event)
    finally:
        await sink.aclose()


async def test_explicit_credentials_are_used(auth_moto: Any) -> None:
    server, keys = auth_moto
    sink = auth_sink(
        server, access_key_id=keys["writer_id"], secret_access_key=keys["writer_secret"]
    )
    event = make_event()
    await deliver_and_close(sink, event)
    reader = server.boto3_client(
        aws_access_key_id=keys["writer_id"], aws_secret_access_key=keys["writer_secret"]
    )
    assert read(reader, "hookdock-auth", sink.key_for(event))[1]["event_id"] == event.event_id


async def test_the_env_chain_is_used_without_explicit_credentials(
    auth_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, keys = auth_moto
    # The dummy env credentials of S3_ENV are unknown to this server...
    with pytest.raises(PermanentSinkError, match="InvalidAccessKeyId"):
        await deliver_and_close(auth_sink(server), make_event())
    # ...and the writer's key in the env works.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["writer_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["writer_secret"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    await deliver_and_close(auth_sink(server), make_event())


async def test_a_profile_is_used(
    auth_moto: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, keys = auth_moto
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[hookdock-test]\naws_access_key_id = {keys['writer_id']}\n"
        f"aws_secret_access_key = {keys['writer_secret']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    await deliver_and_close(auth_sink(server, profile="hookdock-test"), make_event())


async def test_a_wrong_secret_is_permanent_and_never_shown(auth_moto: Any) -> None:
    server, keys = auth_moto
    sink = auth_sink(server, access_key_id=keys["writer_id"], secret_access_key=SECRET)
    with pytest.raises(PermanentSinkError, match="SignatureDoesNotMatch") as info:
        await deliver_and_close(sink, make_event())
    unknown = auth_sink(server, access_key_id="x", secret_access_key=SECRET)
    try:
        problems = await unknown.check()
    finally:
        await unknown.aclose()
    shown = [str(info.value), repr(info.value), repr(sink), repr(sink.config), *problems]
    assert "InvalidAccessKeyId" in problems[0]
    assert not [text for text in shown if SECRET in text]


async def test_access_denied_is_permanent_and_check_says_so(auth_moto: Any) -> None:
    server, keys = auth_moto
    creds = {"access_key_id": keys["reader_id"], "secret_access_key": keys["reader_secret"]}
    with pytest.raises(PermanentSinkError, match="access denied writing s3://hookdock-auth/"):
        await deliver_and_close(auth_sink(server, **creds), make_event())
    sink = auth_sink(server, **creds)
    try:
        problems = await sink.check()
    finally:
        await sink.aclose()
    assert len(problems) == 1 and "access denied" in problems[0]


# ---------------------------------------------------------------- addressing


async def test_path_addressing_puts_the_bucket_in_the_path(
    make_sink: Any, moto: MotoServer, bucket: str
) -> None:
    sink = make_sink(addressing_style="path")
    urls: list[str] = []
    (await sink.client()).meta.events.register(
        "before-send.s3", lambda request, **_: urls.append(request.url)
    )
    event = make_event()
    await sink.deliver(event)
    assert urls == [f"{moto.url}/{bucket}/{sink.key_for(event)}"]


async def test_virtual_addressing_puts_the_bucket_in_the_host(
    make_sink: Any, moto: MotoServer
) -> None:
    # moto answers virtual-hosted requests, but "<bucket>.localhost" does not resolve on every
    # machine, and botocore falls back to path style for an IP address endpoint.  So this
    # checks the URL botocore builds and accepts either outcome of sending it.
    port = int(moto.url.rsplit(":", 1)[1])
    sink = make_sink(
        addressing_style="virtual", endpoint_url=f"http://localhost:{port}", client_attempts=1
    )
    s3_options = (await sink.client()).meta.config.s3
    assert s3_options is not None and s3_options["addressing_style"] == "virtual"
    urls: list[str] = []
    (await sink.client()).meta.events.register(
        "before-send.s3", lambda request, **_: urls.append(request.url)
    )
    event = make_event()
    failure: RetryableSinkError | None = None
    try:
        await sink.deliver(event)
    except RetryableSinkError as exc:
        failure = exc
    assert failure is None or "cannot reach the store" in str(failure)
    assert urls
    assert urls[0] == f"http://{sink.config.bucket}.localhost:{port}/{sink.key_for(event)}"


async def test_virtual_addressing_on_an_ip_endpoint_still_delivers(
    make_sink: Any, s3: Any, bucket: str
) -> None:
    sink = make_sink(addressing_style="virtual")
    event = make_event()
    await sink.deliver(event)
    assert objects(s3, bucket) == [sink.key_for(event)]


# ---------------------------------------------------------------- the client


class CountingS3Sink(S3Sink):
    opened = 0

    def _open_client(self) -> Any:
        self.opened += 1
        return super()._open_client()


async def test_one_client_made_lazily_reused_and_closed(
    moto: MotoServer, s3: Any, bucket: str
) -> None:
    sink = CountingS3Sink(S3SinkConfig.model_validate(options(moto, bucket)))
    assert sink.opened == 0, "nothing is made before the first use"
    events = [make_event() for _ in range(16)]
    await asyncio.gather(*(sink.deliver(e) for e in events))
    assert sink.opened == 1
    client = await sink.client()
    assert await sink.client() is client
    assert len(objects(s3, bucket)) == 16
    await sink.aclose()
    await sink.aclose()
    with pytest.raises(HTTPClientError):
        await client.head_bucket(Bucket=bucket)  # its connection pool is closed
    with pytest.raises(RetryableSinkError, match="closed"):
        await sink.deliver(make_event())
    assert sink.opened == 1


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("values", "where", "message"),
    [
        ({"bukket": "x"}, "bukket", "Extra inputs are not permitted"),
        ({"sse_kms_key_id": "k"}, "sse_kms_key_id", 'needs sse = "aws:kms"'),
        ({"sse": "AES256", "sse_kms_key_id": "k"}, "sse_kms_key_id", "aws:kms"),
        ({"key_template": "{task_id}.json"}, "key_template", "must contain {event_id}"),
        ({"key_template": "{nope}/{event_id}"}, "key_template", "unknown field(s) nope"),
        ({"key_template": "/{event_id}"}, "key_template", "relative path"),
        ({"addressing_style": "dns"}, "addressing_style", "'auto', 'path' or 'virtual'"),
        ({"access_key_id": "AKIA"}, "", "access_key_id and secret_access_key"),
        ({"sse": "aws:kms2"}, "sse", "AES256"),
        ({"part_size_mb": 4}, "part_size_mb", "greater than or equal to 5"),
        ({"part_size_mb": 513}, "part_size_mb", "less than or equal to 512"),
        ({"upload_concurrency": 0}, "upload_concurrency", "greater than or equal to 1"),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        S3SinkConfig.model_validate({"bucket": "my-bucket", **values})
    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(p) for p in errors[0]["loc"]) == where
    assert message in errors[0]["msg"]


def test_config_errors_never_show_the_input() -> None:
    with pytest.raises(ValidationError) as info:
        S3SinkConfig.model_validate({"bucket": "my-bucket", "secret_access_key": [SECRET]})
    assert SECRET not in str(info.value)
    config = S3SinkConfig.model_validate(
        {"bucket": "my-bucket", "access_key_id": "AKIA", "secret_access_key": SECRET}
    )
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_import_without_aiobotocore_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['aiobotocore'] = None\n"
        "try:\n    import handlers.sinks.s3\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "pip install 'hookdock[s3]'" in done.stdout, done.stdout + done.stderr
