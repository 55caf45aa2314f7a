"""``/metrics`` scraped during a real run and read with Prometheus' own text parser: each
figure is checked against what the test did."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    make_config,
    route,
    run_hookdock,
    wait_until,
)

pytestmark = pytest.mark.e2e

SD = SD_ROUTES["text_document"]


def _post(server: HookdockProcess, path: str, display_name: str = "ok.pdf") -> int:
    body = {"taskId": str(uuid.uuid4()), "displayName": display_name, "chunks": []}
    return httpx.post(
        f"{server.url}{path}",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        trust_env=False,
    ).status_code


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(server: HookdockProcess) -> Samples:
    response = httpx.get(f"{server.url}/metrics", trust_env=False, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_what_happened(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        extra_routes=[route("escape", {"type": "none"}, sinks=["escaping"])],
        sinks={
            "escaping": {
                "type": "local",
                "root": str(tmp_path / "esc"),
                "path_template": "{display_name}/{event_id}.json",
            }
        },
    )
    with run_hookdock(tmp_path, config) as server:
        for _ in range(3):
            assert _post(server, f"/hooks/{SD}/{CREDS.url_token}") == 200
        assert _post(server, f"/hooks/{SD}/wrong-token-0123456789") == 401
        assert _post(server, "/hooks/no-such-route") == 404
        assert _post(server, "/hooks/escape", display_name="..") == 200

        def settled() -> Samples | None:
            samples = _samples(server)
            done = _value(samples, "hookdock_deliveries", state="done")
            dead = _value(samples, "hookdock_deliveries", state="dead")
            return samples if (done, dead) == (3, 1) else None

        found = wait_until(settled, message=server.describe)
    assert found is not None
    samples: Samples = found

    def value(name: str, **labels: str) -> float:
        return _value(samples, name, **labels)

    assert value("hookdock_ingest_requests_total", route=SD, status="200") == 3
    assert value("hookdock_ingest_requests_total", route=SD, status="401") == 1
    assert value("hookdock_ingest_requests_total", route="(none)", status="404") == 1
    assert value("hookdock_ingest_requests_total", route="escape", status="200") == 1
    assert value("hookdock_deliveries", state="pending") == 0
    assert value("hookdock_sends", sink="exports", state="delivered") == 3
    assert value("hookdock_sends", sink="escaping", state="dead") == 1
    assert value("hookdock_dead_letters", sink="escaping", code="none") == 1
    assert value("hookdock_sink_stopped", sink="exports") == 0
    assert value("hookdock_send_attempts_total", sink="exports", outcome="delivered") == 3
    assert value("hookdock_send_attempts_total", sink="escaping", outcome="dead") == 1
    assert value("hookdock_receipt_to_delivery_seconds_count", sink="exports") == 3
    assert 0 < value("hookdock_receipt_to_delivery_seconds_sum", sink="exports") < 30
    # Every append, route and outcome went through a commit: 4 appends, 4 routings, 4 outcomes
    # at the least (several may share one commit).
    assert value("hookdock_journal_commit_batch_size_sum") >= 12
    commits = value("hookdock_journal_commit_seconds_count")
    assert commits == value("hookdock_journal_commit_batch_size_count") > 0
