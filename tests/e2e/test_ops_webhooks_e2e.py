"""Operational webhooks on a real server: a dead-lettered send and a stopped sink each reach
the configured URL, signed (verified with ``standardwebhooks``), and are counted in /metrics."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HookdockProcess, make_config, route, run_hookdock, wait_until
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

OPS_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
SINK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _post(server: HookdockProcess, path: str, name: str) -> None:
    body = {"taskId": str(uuid.uuid4()), "displayName": name, "chunks": []}
    answer = httpx.post(
        f"{server.url}{path}",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text


def test_dead_letters_and_stopped_sinks_are_signed_alerts(tmp_path: Path) -> None:
    with WebhookReceiver(secret=OPS_SECRET) as ops, WebhookReceiver(secret=SINK_SECRET) as dest:
        dest.script("/in", [410])
        config = make_config(
            tmp_path,
            alerts={
                "urls": [f"{ops.url}/ops"],
                "secret": OPS_SECRET,
                "allow_networks": ["127.0.0.1/32"],
            },
            extra_routes=[
                route("escape", {"type": "none"}, sinks=["escaping"]),
                route("gone", {"type": "none"}, sinks=["destination"]),
            ],
            sinks={
                "escaping": {
                    "type": "local",
                    "root": str(tmp_path / "esc"),
                    "path_template": "{display_name}/{event_id}.json",
                },
                "destination": {
                    "type": "http",
                    "url": f"{dest.url}/in",
                    "secret": SINK_SECRET,
                    "allow_networks": ["127.0.0.1/32"],
                },
            },
        )
        with run_hookdock(tmp_path, config) as server:
            _post(server, "/hooks/escape", "..")
            _post(server, "/hooks/gone", "x.pdf")
            ops.wait_for(lambda: len(ops.stored("/ops")) == 2)
            # Counted once hookdock has read the answer, a moment after the receiver stored it.
            sent = wait_until(lambda: _sent(server) if len(_sent(server)) == 2 else None)
        alerts = {body["type"]: body for body in ops.stored("/ops").values()}
        assert all(r.verified for r in ops.requests("/ops"))
        dead = alerts["send.dead"]["data"]
        assert (dead["sink"], dead["code"]) == ("escaping", None)
        assert dead["event_id"].startswith(dead["delivery_id"])
        stopped = alerts["sink.stopped"]["data"]
        assert stopped["sink"] == "destination" and "410" in stopped["reason"]
        assert sent == {"send.dead": 1.0, "sink.stopped": 1.0}


def _sent(server: HookdockProcess) -> dict[str, float]:
    metrics = httpx.get(f"{server.url}/metrics", trust_env=False).text
    return {
        s.labels["type"]: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "hookdock_alerts_total" and s.labels["outcome"] == "sent"
    }
