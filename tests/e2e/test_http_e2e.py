"""The HTTP sink end to end: a real ``hookdock serve`` posting to a real receiver.

SmartDocumentor bodies go in over HTTP (httpx); the ``http`` sinks post the events on to a
``WebhookReceiver`` on 127.0.0.1, which verifies every signature with the ``standardwebhooks``
package.  One server for the module; every test posts a body no other test posts.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    make_config,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.sd_payloads import load
from tests.webhook_receiver import Reply, WebhookReceiver

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
API_KEY = "key-" + secrets.token_hex(20)
# The receiver runs on 127.0.0.1, which the HTTP sink's SSRF guard refuses unless opted in.
LOCAL = ["127.0.0.1/32"]
URL_TOKEN = {"type": "url-token", "token": CREDS.url_token}
FLAKY_ROUTE = "sd-flaky"
TIMEOUT = 20.0


@dataclass
class Setup:
    process: HookdockProcess
    rx: WebhookReceiver
    client: httpx.Client

    def post(self, route_name: str, body: bytes) -> str:
        """POST ``body`` to the route; the id of the (first) event it becomes."""
        response = self.client.post(
            f"/hooks/{route_name}/{CREDS.url_token}",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        return f"{delivery_id_from(response.text)}-0"

    def wait_stored(self, path: str, event_id: str) -> Any:
        """The body the receiver stored for ``event_id``; fails early on a dead letter."""
        delivery_id = event_id.rsplit("-", 1)[0]

        def stored() -> Any:
            reason = self.process.dead_lettered(delivery_id)
            if reason is not None:
                pytest.fail(f"delivery {delivery_id} was dead-lettered: {reason}")
            return self.rx.stored(path).get(event_id)

        return self.rx.wait_for(stored, TIMEOUT)


def unique(kind: str) -> tuple[bytes, dict[str, Any]]:
    """A recorded body of ``kind`` with a fresh taskId, so no other test's dedupe joins it."""
    doc = json.loads(load(kind, "baseline"))
    doc["taskId"] = f"e2e-http-{secrets.token_hex(8)}"
    body = json.dumps(doc).encode()
    return body, doc


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("http-sink")
    with WebhookReceiver(secret=SECRET) as rx:
        sinks = {
            "downstream": {
                "type": "http",
                "url": f"{rx.url}/events",
                "secret": SECRET,
                "allow_networks": LOCAL,
            },
            "downstream-payload": {
                "type": "http",
                "url": f"{rx.url}/payloads",
                "secret": SECRET,
                "allow_networks": LOCAL,
                "body": "payload",
                "headers": {"X-Api-Key": API_KEY},
                "retry": {"schedule": [0.2], "max_attempts": 5, "jitter": 0},
            },
            "flaky": {
                "type": "http",
                "url": f"{rx.url}/flaky",
                "secret": SECRET,
                "allow_networks": LOCAL,
                "retry": {"schedule": [0.2], "max_attempts": 5, "jitter": 0},
            },
        }
        routes = [
            route(SD_ROUTES["text_document"], URL_TOKEN, sinks=["downstream", "exports"]),
            route(
                SD_ROUTES["transcript"],
                URL_TOKEN,
                source="smartdocumentor.transcript",
                sinks=["downstream-payload"],
            ),
            route(FLAKY_ROUTE, URL_TOKEN, sinks=["flaky"]),
        ]
        config = make_config(folder, sinks=sinks, routes=routes)
        with (
            run_hookdock(folder, config) as process,
            httpx.Client(base_url=process.url, timeout=10.0, trust_env=False) as client,
        ):
            yield Setup(process, rx, client)


def only_requests(rx: WebhookReceiver, path: str, event_id: str) -> list[Any]:
    return [r for r in rx.requests(path) if r.webhook_id == event_id]


def test_event_body_arrives_signed_with_the_event_id(setup: Setup) -> None:
    body, doc = unique("text_document")
    event_id = setup.post(SD_ROUTES["text_document"], body)
    stored = setup.wait_stored("/events", event_id)
    assert stored["event_id"] == event_id
    assert stored["kind"] == "text_document"
    assert stored["route"] == SD_ROUTES["text_document"]
    assert stored["task_id"] == doc["taskId"]
    assert stored["payload"] == doc
    [request] = only_requests(setup.rx, "/events", event_id)
    assert request.verified is True
    assert request.headers["webhook-id"] == event_id
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)


def test_payload_body_is_what_the_vendor_sent(setup: Setup) -> None:
    body, doc = unique("transcript")
    event_id = setup.post(SD_ROUTES["transcript"], body)
    assert setup.wait_stored("/payloads", event_id) == doc
    [request] = only_requests(setup.rx, "/payloads", event_id)
    assert request.verified is True
    assert request.headers["x-api-key"] == API_KEY
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)


def test_retries_until_the_receiver_takes_it(setup: Setup) -> None:
    setup.rx.script("/flaky", [503, Reply(429, headers={"Retry-After": "1"}), 200])
    body, _ = unique("text_document")
    started = time.monotonic()
    event_id = setup.post(FLAKY_ROUTE, body)
    assert setup.wait_stored("/flaky", event_id)["event_id"] == event_id
    requests = only_requests(setup.rx, "/flaky", event_id)
    assert [r.status for r in requests] == [503, 429, 200]
    assert all(r.verified for r in requests)
    # The 429's Retry-After (1 s) outweighs the 0.2 s schedule.
    assert time.monotonic() - started >= 1.0


def test_status_counts_a_sink_that_answered_4xx_by_its_code(setup: Setup) -> None:
    setup.rx.script("/flaky", [404])
    body, _ = unique("text_document")
    event_id = setup.post(FLAKY_ROUTE, body)
    delivery_id = event_id.rsplit("-", 1)[0]
    reason = wait_until(lambda: setup.process.dead_lettered(delivery_id), TIMEOUT)
    assert reason is not None and "404" in reason
    assert setup.process.config_path is not None
    status = run_cli("status", config=setup.process.config_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["failures"]["http_404"] == 1


def test_no_secret_in_the_server_output(setup: Setup) -> None:
    # An answer that echoes the request's headers, logged as a retry reason at debug level.
    echo = f"got X-Api-Key {API_KEY}".encode()
    setup.rx.script("/payloads", [Reply(500, body=echo), 200])
    body, doc = unique("transcript")
    event_id = setup.post(SD_ROUTES["transcript"], body)
    assert setup.wait_stored("/payloads", event_id) == doc
    assert [r.status for r in only_requests(setup.rx, "/payloads", event_id)] == [500, 200]
    output = setup.process.stdout_text() + setup.process.stderr_text()
    assert "answered 500" in output, "the retry reason was not logged, so nothing was checked"
    for secret in (SECRET, SECRET.removeprefix("whsec_"), API_KEY):
        assert secret not in output
