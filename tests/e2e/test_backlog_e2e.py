"""A sink falling behind is seen in ``hookdock status`` and ``/metrics`` of a real server: its
backlog (pending, due, the oldest's age since receipt) grows while it cannot deliver, and
receipt-to-delivery figures show once it catches up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    HookdockProcess,
    make_config,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.sd_payloads import load
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _post(server: HookdockProcess, task_id: str) -> None:
    body: dict[str, Any] = json.loads(load("text_document", "baseline"))
    body["taskId"] = task_id
    response = httpx.post(
        f"{server.url}/hooks/behind",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=10.0,
        trust_env=False,
    )
    assert response.status_code == 200, response.text


def _sinks(server: HookdockProcess) -> dict[str, Any]:
    assert server.config_path is not None
    result = run_cli("status", config=server.config_path)
    assert result.returncode == 0, result.stderr
    sinks: dict[str, Any] = json.loads(result.stdout)["sinks"]
    return sinks


def _gauges(server: HookdockProcess) -> dict[tuple[str, str], float]:
    response = httpx.get(f"{server.url}/metrics", trust_env=False, timeout=10)
    assert response.status_code == 200
    return {
        (s.name, s.labels.get("sink", "")): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name in {"hookdock_sink_oldest_pending_seconds", "hookdock_sink_due_sends"}
    }


def test_a_stopped_sinks_backlog_shows_and_drains(tmp_path: Path) -> None:
    with WebhookReceiver(secret=SECRET) as rx:
        rx.script("/hook", [410])  # stops the sink; 204 once resumed
        config = make_config(
            tmp_path,
            extra_routes=[route("behind", {"type": "none"}, sinks=["exports", "hook"])],
            sinks={
                "hook": {
                    "type": "http",
                    "url": f"{rx.url}/hook",
                    "secret": SECRET,
                    "allow_networks": ["127.0.0.1/32"],
                }
            },
        )
        with run_hookdock(tmp_path, config) as server:
            _post(server, "backlog-0")
            wait_until(
                lambda: "sink hook STOPPED" in server.stderr_text(), 15, message=server.describe
            )
            _post(server, "backlog-1")
            _post(server, "backlog-2")

            def exported() -> dict[str, Any] | None:
                sinks = _sinks(server)
                return sinks if sinks["exports"]["delivered"] == 3 else None

            sinks = wait_until(exported, 15, message=server.describe)
            assert sinks is not None
            assert sinks["exports"]["backlog"]["pending"] == 0
            assert sinks["exports"]["backlog"]["oldest_seconds"] == 0
            lag = sinks["exports"]["receipt_to_delivery"]
            assert lag["last"] == 3
            assert 0 < lag["p50_seconds"] <= lag["p99_seconds"] <= lag["max_seconds"] < 15
            held = sinks["hook"]["backlog"]
            assert (held["pending"], held["due"]) == (3, 0), "stopped: none of them is due"
            assert held["oldest_seconds"] > 0
            assert sinks["hook"]["receipt_to_delivery"] is None
            gauges = _gauges(server)
            assert gauges[("hookdock_sink_due_sends", "hook")] == 0
            assert gauges[("hookdock_sink_oldest_pending_seconds", "hook")] > 0
            assert gauges[("hookdock_sink_oldest_pending_seconds", "exports")] == 0
            # It keeps growing while the sink is stopped.
            wait_until(
                lambda: (
                    _sinks(server)["hook"]["backlog"]["oldest_seconds"] > held["oldest_seconds"]
                ),
                10,
            )

            resumed = run_cli("sinks", "resume", "hook", config=server.config_path)
            assert resumed.returncode == 0, resumed.stderr

            def caught_up() -> dict[str, Any] | None:
                sinks = _sinks(server)
                return sinks if sinks["hook"]["delivered"] == 3 else None

            sinks = wait_until(caught_up, 15, message=server.describe)
            assert sinks is not None
            assert sinks["hook"]["backlog"] == {"pending": 0, "due": 0, "oldest_seconds": 0}
            caught = sinks["hook"]["receipt_to_delivery"]
            assert caught["last"] == 3
            assert caught["max_seconds"] >= held["oldest_seconds"], "waited while stopped"
            assert _gauges(server)[("hookdock_sink_oldest_pending_seconds", "hook")] == 0
