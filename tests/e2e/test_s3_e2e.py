"""A POST to a real ``hookdock serve`` ends up as an object in S3 (moto in server mode).

The route's sinks are the local folder and an ``s3`` sink, loaded through the
``hookdock.sinks`` entry point like any plugin.  The sink's secret comes from the environment
through ``${...}`` and must never show up in the server's output, debug logs included.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    CREDS,
    HookdockProcess,
    delivery_id_from,
    make_config,
    route,
    run_hookdock,
    wait_until,
)
from tests.s3server import S3_ENV, MotoServer, moto_server
from tests.sd_payloads import EXPECTED, load

pytestmark = pytest.mark.e2e

ROUTE = "sd-s3"
BUCKET = "hookdock-e2e"
SECRET = "s3-secret-" + secrets.token_hex(16)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        server.boto3_client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="module")
def server(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookdockProcess]:
    folder = tmp_path_factory.mktemp("s3-e2e")
    archive = {
        "type": "s3",
        "bucket": BUCKET,
        "endpoint_url": moto.url,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": "testing",
        "secret_access_key": "${HOOKDOCK_TEST_S3_SECRET}",
        "sse": "AES256",
        "retry": {"max_attempts": 3},
    }
    config = make_config(
        folder,
        sinks={"archive": archive},
        extra_routes=[
            route(
                ROUTE,
                {"type": "url-token", "token": CREDS.url_token},
                sinks=["exports", "archive"],
            )
        ],
    )
    env = {**S3_ENV, "HOOKDOCK_TEST_S3_SECRET": SECRET}
    with run_hookdock(folder, config, env=env) as process:
        yield process


def decode(value: str) -> str:
    """S3 metadata that is not plain ASCII is stored as an RFC 2047 encoded word."""
    if value.startswith("=?UTF-8?B?") and value.endswith("?="):
        return base64.b64decode(value[10:-2]).decode()
    return value


def stored(s3: Any, key: str) -> tuple[dict[str, Any], Any] | None:
    try:
        answer = s3.get_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise
    return answer, json.loads(answer["Body"].read())


@pytest.mark.parametrize("variant", ["baseline", "non_ascii"])
def test_a_posted_document_is_stored_in_s3(
    server: HookdockProcess, moto: MotoServer, variant: str
) -> None:
    body = load("text_document", variant)
    answer = httpx.post(
        f"{server.url}/hooks/{ROUTE}/{CREDS.url_token}", content=body, headers=JSON, trust_env=False
    )
    assert answer.status_code == 200, answer.text
    delivery_id = delivery_id_from(answer.text)
    expected = EXPECTED[("text_document", variant)]
    workspace = expected["workspace_id"] or "none"
    key = f"smartdocumentor/{workspace}/{expected['task_id']}/text_document-{delivery_id}-0.json"
    s3 = moto.boto3_client()

    def probe() -> tuple[dict[str, Any], Any] | None:
        found = stored(s3, key)
        if found is None:
            reason = server.dead_lettered(delivery_id)
            if reason is not None:
                pytest.fail(f"delivery {delivery_id} was dead-lettered: {reason}")
        return found

    found = wait_until(probe, 15.0, message=lambda: f"no object {key}\n{server.describe()}")
    assert found is not None
    obj, event = found
    assert event["event_id"] == f"{delivery_id}-0"
    assert event["delivery_id"] == delivery_id
    assert event["route"] == ROUTE
    assert event["kind"] == "text_document"
    for name in ("task_id", "task_number", "workspace_id", "batch_id", "display_name"):
        assert event[name] == expected[name], name
    assert len(event["files"]) == expected["file_count"]
    assert event["payload"] == json.loads(body)
    assert obj["ContentType"] == "application/json"
    assert obj["ServerSideEncryption"] == "AES256"
    meta = obj["Metadata"]
    assert meta["event-id"] == f"{delivery_id}-0"
    assert (meta["vendor"], meta["kind"]) == ("smartdocumentor", "text_document")
    assert decode(meta["task-id"]) == expected["task_id"]


def test_the_s3_secret_never_shows_in_the_output(server: HookdockProcess) -> None:
    output = server.stdout_text() + server.stderr_text()
    assert output.strip(), "the server wrote nothing at all (it logs at debug level)"
    assert SECRET not in output
    for secret in CREDS.all():
        assert secret not in output
