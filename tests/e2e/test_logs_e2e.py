"""``[log] format = "json"`` on a real server: every line is one JSON object, the request id
of an ingest is echoed and found on the lines about it with the delivery and event ids, and
``[log] activity = false`` turns the lines about what went right down."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    make_config,
    run_hookdock,
    wait_until,
)

pytestmark = pytest.mark.e2e

URL = f"/hooks/{SD_ROUTES['text_document']}/{CREDS.url_token}"


def _post(server: HookdockProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"taskId": str(uuid.uuid4()), "displayName": "x.pdf", "chunks": []}
    return httpx.post(
        f"{server.url}{URL}",
        content=json.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
        trust_env=False,
    )


def _lines(server: HookdockProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.stderr_text().splitlines() if line.strip()]


def test_json_lines_carry_the_request_delivery_and_event_ids(tmp_path: Path) -> None:
    with run_hookdock(tmp_path, make_config(tmp_path, log={"format": "json"})) as server:
        answer = _post(server, {"X-Request-Id": "req-7f3a"})
        assert answer.headers["x-request-id"] == "req-7f3a"
        delivery_id = delivery_id_from(answer.text)
        made = _post(server, {"X-Request-Id": "not a token; <script>"}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{26}", made)
        refused = httpx.post(
            f"{server.url}/hooks/{SD_ROUTES['text_document']}/wrong-0123456789", trust_env=False
        )
        assert refused.status_code == 415
        assert re.fullmatch(r"[0-9a-f]{26}", refused.headers["x-request-id"])

        def delivered() -> dict[str, Any] | None:
            for line in _lines(server):
                if line.get("event_id") == f"{delivery_id}-0" and line["message"].startswith(
                    "delivered"
                ):
                    return line
            return None

        sent = wait_until(delivered, message=server.describe)
        assert sent is not None
        lines = _lines(server)  # every line parses: no plain text among them
    assert sent["logger"] == "hookdock.activity" and sent["level"] == "info"
    assert (sent["delivery_id"], sent["sink"]) == (delivery_id, "exports")
    assert sent["time"].endswith("+00:00")
    [accepted] = [line for line in lines if line.get("request_id") == "req-7f3a"]
    assert accepted["delivery_id"] == delivery_id
    assert accepted["message"].startswith(f"accepted delivery {delivery_id} (route ")
    assert CREDS.url_token not in json.dumps(lines)


def test_activity_lines_can_be_turned_down(tmp_path: Path) -> None:
    config = make_config(tmp_path, log={"format": "json", "activity": False})
    with run_hookdock(tmp_path, config) as server:
        delivery_id = delivery_id_from(_post(server).text)
        exports = tmp_path / "exports"
        wait_until(lambda: any(exports.rglob(f"*{delivery_id}-0.json")))
        lines = _lines(server)
    assert not [line for line in lines if line["logger"] == "hookdock.activity"]
