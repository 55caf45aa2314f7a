"""Any sender through a real ``hookdock serve``: the official ``standardwebhooks`` package as a
sender to the generic JSON source, and a GitHub-style HMAC checked with GitHub's own vector."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import (
    HookdockProcess,
    delivery_id_from,
    make_config,
    read_json,
    run_hookdock,
    wait_until,
)

pytestmark = pytest.mark.e2e

WHSEC = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
# GitHub's published known-answer vector ("Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
TEMPLATE = "{route}/{kind}/{attributes.subject_id}-{event_id}.json"
JSON = {"content-type": "application/json"}


@dataclass
class Server:
    process: HookdockProcess
    folder: Path
    client: httpx.Client

    def deliveries(self) -> int:
        with contextlib.closing(sqlite3.connect(self.folder / "hookdock.db", timeout=10)) as db:
            count: int = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
            return count

    def export(self, delivery_id: str) -> Any:
        def probe() -> Any:
            for path in (self.folder / "out").rglob(f"*{delivery_id}-0.json"):
                return read_json(path)
            return None

        return wait_until(probe, 15.0, message=lambda: f"no export\n{self.process.describe()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("generic")
    routes = [
        {
            "name": "std",
            "source": "generic.json",
            "auth": {"type": "standard-webhooks", "secrets": [WHSEC]},
            "settings": {"kind_path": "type", "subject_path": "data.id"},
            "sinks": ["out"],
        },
        {
            "name": "github",
            "source": "generic.json",
            "auth": {
                "type": "hmac",
                "header": "X-Hub-Signature-256",
                "prefix": "sha256=",
                "encoding": "hex",
                "secret": GITHUB_SECRET,
            },
            "settings": {
                "kind_path": "action",
                # Not full_name: "acme/hookdock" would not be usable in the export's path.
                "subject_path": "repository.id",
                "attributes": {"repository": "repository.full_name"},
                "dedupe_header": "X-GitHub-Delivery",
            },
            "sinks": ["out"],
        },
    ]
    sinks = {"out": {"type": "local", "root": str(folder / "out"), "path_template": TEMPLATE}}
    config = make_config(folder, routes=routes, sinks=sinks)
    with (
        run_hookdock(folder, config) as process,
        httpx.Client(base_url=process.url, timeout=15.0, trust_env=False) as client,
    ):
        yield Server(process, folder, client)


def standard(body: bytes, msg_id: str, when: datetime | None = None) -> dict[str, str]:
    """Headers as the official ``standardwebhooks`` package signs them."""
    when = when or datetime.now(UTC)
    signature = Webhook(WHSEC).sign(msg_id, when, body.decode("utf-8"))
    return {
        **JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def test_a_standard_webhooks_sender_is_one_event_per_message_id(server: Server) -> None:
    body = orjson.dumps({"type": "invoice.paid", "data": {"id": "in_42", "total": 1250}})
    msg_id = f"msg_{uuid.uuid4().hex}"
    first = server.client.post("/hooks/std", content=body, headers=standard(body, msg_id))
    assert first.status_code == 200, first.text
    delivery_id = delivery_id_from(first.text)
    event = server.export(delivery_id)
    assert (event["vendor"], event["kind"], event["attributes"]) == (
        "generic",
        "invoice.paid",
        {"subject_id": "in_42", "message_id": msg_id},
    )
    assert event["payload"] == orjson.loads(body)
    # The sender retries the same message a minute later, signed anew: the same delivery.
    later = datetime.now(UTC) + timedelta(seconds=60)
    again = server.client.post("/hooks/std", content=body, headers=standard(body, msg_id, later))
    assert (again.status_code, again.text) == (
        200,
        f"hookdock: already accepted as {delivery_id}\n",
    )


def test_standard_webhooks_refusals_are_exact_and_not_journaled(server: Server) -> None:
    body = orjson.dumps({"type": "invoice.paid", "data": {"id": "in_43"}})
    good = standard(body, f"msg_{uuid.uuid4().hex}")
    other = "whsec_" + base64.b64encode(b"x" * 24).decode()
    forged = {**good, "webhook-signature": Webhook(other).sign("m", datetime.now(UTC), "{}")}
    stale = standard(body, "msg_old", datetime.now(UTC) - timedelta(minutes=10))
    cases = [
        ({**JSON}, body, 401, "hookdock: webhook signature headers missing\n"),
        (forged, body, 401, "hookdock: signature does not match\n"),
        (stale, body, 401, "hookdock: webhook timestamp outside tolerance\n"),
        (good, body + b" ", 401, "hookdock: signature does not match\n"),
    ]
    no_kind = orjson.dumps({"data": {"id": "x"}})
    cases.append((standard(no_kind, "msg_nokind"), no_kind, 422, "hookdock: type missing\n"))
    before = server.deliveries()
    for headers, payload, status, text in cases:
        response = server.client.post("/hooks/std", content=payload, headers=headers)
        assert (response.status_code, response.text) == (status, text)
    assert server.deliveries() == before


def test_githubs_known_answer_vector_passes_the_signature_check(server: Server) -> None:
    # GitHub's vector signs "Hello, World!", which is no JSON object: past the signature
    # check, the source refuses it (400), where a wrong signature is refused first (401).
    headers = {**JSON, "X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "kav"}
    before = server.deliveries()
    good = server.client.post("/hooks/github", content=GITHUB_PAYLOAD, headers=headers)
    assert (good.status_code, good.text) == (400, "hookdock: body is not JSON\n")
    bad_sig = {**headers, "X-Hub-Signature-256": GITHUB_SIGNATURE[:-1] + "0"}
    bad = server.client.post("/hooks/github", content=GITHUB_PAYLOAD, headers=bad_sig)
    assert (bad.status_code, bad.text) == (401, "hookdock: signature does not match\n")
    assert server.deliveries() == before


def test_a_github_style_delivery_is_accepted_and_deduped_on_its_delivery_header(
    server: Server,
) -> None:
    body = orjson.dumps(
        {"action": "opened", "repository": {"id": 1296269, "full_name": "acme/hookdock"}}
    )
    mac = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    guid = str(uuid.uuid4())
    headers = {**JSON, "X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": guid}
    first = server.client.post("/hooks/github", content=body, headers=headers)
    assert first.status_code == 200, first.text
    delivery_id = delivery_id_from(first.text)
    event = server.export(delivery_id)
    assert (event["kind"], event["attributes"]) == (
        "opened",
        {"repository": "acme/hookdock", "subject_id": "1296269", "message_id": guid},
    )
    redelivered = server.client.post("/hooks/github", content=body, headers=headers)
    assert redelivered.text == f"hookdock: already accepted as {delivery_id}\n"
    missing = {k: v for k, v in headers.items() if k != "X-GitHub-Delivery"}
    before = server.deliveries()
    refused = server.client.post("/hooks/github", content=body, headers=missing)
    assert (refused.status_code, refused.text) == (
        422,
        "hookdock: header X-GitHub-Delivery missing\n",
    )
    assert server.deliveries() == before
