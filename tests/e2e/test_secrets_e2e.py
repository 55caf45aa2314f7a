"""No secret hookdock holds or derives shows up anywhere hookdock writes, whoever wrote the text.

One real ``hookdock serve`` at debug level with every auth scheme and every sink that takes
credentials: an HTTP sink whose URL has user info (aiohttp sends it as ``Authorization:
Basic ...``), a signing secret and an API-key header, posting to an endpoint that fails with
the request's headers echoed in its answer; S3 sinks on moto with keys and a session token in
the config, and from the environment, one writing and one failing (no such bucket).  After
deliveries through every scheme, refusals, retries and dead letters, ``check``, ``status``,
``sinks`` and ``deliveries`` are run at debug level too; then every output, the journal's
files and the exports are searched for every secret value and its derived forms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from handlers.redact import basic_credentials
from tests.conftest import (
    CREDS,
    ROUTE_BASIC,
    ROUTE_HEADER,
    ROUTE_HMAC,
    ROUTE_STANDARD,
    SD_ROUTES,
    delivery_id_from,
    make_config,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.s3server import S3_ENV, boto3_s3, moto_server
from tests.webhook_receiver import Reply, WebhookReceiver

pytestmark = pytest.mark.e2e

HTTP_USER = "hook-user"
HTTP_PASSWORD = "pw-" + secrets.token_hex(12)
SIGNING = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
API_KEY = "key-" + secrets.token_hex(16)
S3_SECRET = "s3-" + secrets.token_hex(20)
S3_TOKEN = "tok-" + secrets.token_hex(40)
ENV_SECRET = "env-" + secrets.token_hex(20)
ENV_TOKEN = "envtok-" + secrets.token_hex(40)
BUCKET = "secrets-e2e"
FANOUT = "secrets-fanout"


def all_secrets() -> list[str]:
    return [
        *CREDS.all(),
        basic_credentials(CREDS.basic_user, CREDS.basic_password),
        HTTP_PASSWORD,
        basic_credentials(HTTP_USER, HTTP_PASSWORD),
        SIGNING,
        SIGNING.removeprefix("whsec_"),
        API_KEY,
        S3_SECRET,
        S3_TOKEN,
        ENV_SECRET,
        ENV_TOKEN,
    ]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("secrets")
    env = {**S3_ENV, "AWS_SECRET_ACCESS_KEY": ENV_SECRET, "AWS_SESSION_TOKEN": ENV_TOKEN}
    echo = Reply(500, body=b"upstream failed; you sent:\n", echo=True)
    with moto_server(folder, env=env) as s3, WebhookReceiver(SIGNING, default=echo) as rx:
        boto3_s3(s3.url).create_bucket(Bucket=BUCKET)
        s3_keys = {
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": S3_SECRET,
            "session_token": S3_TOKEN,
        }
        url = f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{rx.port}/echo"
        config = make_config(
            folder,
            dispatcher={"retry": {"schedule": [0.2], "max_attempts": 3}},
            extra_routes=[
                route(
                    FANOUT,
                    {"type": "url-token", "token": CREDS.url_token},
                    sinks=["exports", "echo", "bucket", "envbucket", "nobucket"],
                )
            ],
            sinks={
                "echo": {
                    "type": "http",
                    "url": url,
                    "secret": SIGNING,
                    "headers": {"X-Api-Key": API_KEY},
                    "allow_networks": ["127.0.0.1/32"],
                },
                "bucket": {"type": "s3", "bucket": BUCKET, "endpoint_url": s3.url, **s3_keys},
                "envbucket": {"type": "s3", "bucket": BUCKET, "endpoint_url": s3.url},
                "nobucket": {
                    "type": "s3",
                    "bucket": "no-such-bucket",
                    "endpoint_url": s3.url,
                    "client_attempts": 1,
                    **s3_keys,
                },
            },
        )
        with run_hookdock(folder, config, env=env) as process:
            client = httpx.Client(base_url=process.url, timeout=10.0, trust_env=False)
            with client:
                delivery = exercise(client)
                # The echo sink's send is dead once its attempts are spent: the failures,
                # with the echoed headers, are all written by then.
                reason = wait_until(lambda: dead_error(folder, delivery, "echo"), 30.0)
                assert reason is not None
                wait_until(lambda: dead_error(folder, delivery, "nobucket"), 30.0)
            config_path = str(folder / "hookdock.toml")
            found = {
                "serve stderr": process.stderr_text(),
                "serve stdout": process.stdout_text(),
                "echo reason": reason,
            }
            for command in (
                ["check"],
                ["status"],
                ["sinks"],
                ["deliveries", "--sends"],
                ["deliveries", "--state", "dead", "--sends"],
            ):
                result = run_cli("--log-level", "debug", *command, "--config", config_path, env=env)
                found[" ".join(command)] = result.stdout + result.stderr
        found["journal"] = journal_bytes(folder)
        found["exports"] = "".join(
            p.read_text(errors="replace") for p in (folder / "exports").rglob("*") if p.is_file()
        )
        found["moto objects"] = "".join(
            boto3_s3(s3.url).get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().decode()
            for o in boto3_s3(s3.url).list_objects_v2(Bucket=BUCKET).get("Contents", [])
        )
        yield found


def exercise(client: httpx.Client) -> str:
    """Deliveries through every auth scheme, and refusals; the fan-out delivery's id."""
    json_type = {"content-type": "application/json"}

    def body() -> bytes:
        return json.dumps({"taskId": f"sec-{uuid.uuid4().hex[:10]}", "workspaceId": 7}).encode()

    sd = SD_ROUTES["text_document"]
    assert client.post(f"/hooks/{sd}/{CREDS.url_token}", content=body(), headers=json_type)
    assert client.post(
        f"/hooks/{sd}", params={"token": CREDS.url_token}, content=body(), headers=json_type
    )
    client.post(f"/hooks/{sd}/{CREDS.url_token}x", content=body(), headers=json_type)  # 401
    client.post(
        f"/hooks/{ROUTE_BASIC}",
        content=body(),
        headers=json_type,
        auth=(CREDS.basic_user, CREDS.basic_password),
    )
    client.post(f"/hooks/{ROUTE_BASIC}", content=body(), headers=json_type, auth=("x", "y"))
    bearer = {CREDS.header_name: CREDS.header_prefix + CREDS.header_token}
    client.post(f"/hooks/{ROUTE_HEADER}", content=body(), headers={**json_type, **bearer})
    signed = body()
    when = datetime.now(UTC)
    msg_id = f"msg_{uuid.uuid4().hex}"
    client.post(
        f"/hooks/{ROUTE_STANDARD}",
        content=signed,
        headers={
            **json_type,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(CREDS.whsec_new).sign(msg_id, when, signed.decode()),
        },
    )
    digest = hmac.new(CREDS.hmac_secret.encode(), signed, hashlib.sha256).digest()
    client.post(
        f"/hooks/{ROUTE_HMAC}",
        content=signed,
        headers={**json_type, CREDS.hmac_header: base64.b64encode(digest).decode()},
    )
    response = client.post(f"/hooks/{FANOUT}/{CREDS.url_token}", content=body(), headers=json_type)
    assert response.status_code == 200, response.text
    return delivery_id_from(response.text)


def dead_error(folder: Path, delivery: str, sink: str) -> str | None:
    conn = sqlite3.connect(f"file:{folder / 'hookdock.db'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT last_error FROM sends WHERE delivery_id = ? AND sink = ? AND state = 'dead'",
            (delivery, sink),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def journal_bytes(folder: Path) -> str:
    """The journal's files as text (the WAL too), error columns and all."""
    return "".join(
        p.read_bytes().decode("latin-1") for p in folder.glob("hookdock.db*") if p.is_file()
    )


def test_the_echoed_credentials_were_there_to_leak(outputs: dict[str, str]) -> None:
    # The destination did echo aiohttp's Authorization header; what hookdock kept of it:
    reason = outputs["echo reason"]
    assert reason.startswith("gave up after 3 attempts: http sink: http://REDACTED@127.0.0.1:")
    assert (
        "answered 500 Internal Server Error: upstream failed; you sent:"
        " authorization: Basic REDACTED x-api-key: REDACTED "
    ) in reason


def test_every_output_was_looked_at(outputs: dict[str, str]) -> None:
    assert "delivered event" in outputs["serve stderr"], "debug logging is on"
    assert "DEBUG" in outputs["serve stderr"]
    # botocore prints signed canonical requests and session tokens at debug: held at INFO.
    assert "DEBUG botocore" not in outputs["serve stderr"]
    assert "DEBUG aiobotocore" not in outputs["serve stderr"]
    assert "sinks.nobucket: s3 sink: bucket no-such-bucket does not exist" in outputs["check"]
    assert '"dead"' in outputs["status"]
    assert "-> echo" in outputs["deliveries --state dead --sends"]
    assert "-> nobucket" in outputs["deliveries --state dead --sends"]
    assert outputs["journal"] and outputs["exports"] and outputs["moto objects"]


@pytest.mark.parametrize(
    "where",
    [
        "serve stderr",
        "serve stdout",
        "echo reason",
        "check",
        "status",
        "sinks",
        "deliveries --sends",
        "deliveries --state dead --sends",
        "journal",
        "exports",
        "moto objects",
    ],
)
def test_no_secret_anywhere(outputs: dict[str, str], where: str) -> None:
    text = outputs[where]
    leaked = [secret[:8] + "..." for secret in all_secrets() if secret in text]
    assert not leaked, f"{where} holds secrets: {leaked}"
