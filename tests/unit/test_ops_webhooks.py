"""Which outcomes become alerts: a dead send, a stopped sink, and a sink failing longer than
``failing_seconds`` (said once, until it delivers again); and the config's refusals."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from pydantic import ValidationError

from receiver.metrics import Metrics
from receiver.ops_webhooks import OpsWebhooks, OpsWebhooksConfig

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class _Recorded(OpsWebhooks):
    def __init__(self, config: OpsWebhooksConfig, now: list[float]) -> None:
        super().__init__(config, clock=lambda: now[0])
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def _emit(self, kind: str, data: Any) -> None:
        self.sent.append((kind, dict(data)))


def _outcome(alerts: OpsWebhooks, kind: str, sink: str = "erp", error: str | None = "503") -> None:
    alerts.outcome(sink=sink, kind=kind, delivery_id="d", event_id="d-0", code=None, error=error)


def test_a_sink_failing_for_long_is_said_once_until_it_delivers() -> None:
    now = [0.0]
    alerts = _Recorded(
        OpsWebhooksConfig(urls=("http://x/ops",), secret=SECRET, failing_seconds=60), now
    )
    _outcome(alerts, "retry")
    now[0] = 59.0
    _outcome(alerts, "retry")
    _outcome(alerts, "retry", sink="other")
    assert alerts.sent == []
    now[0] = 61.0
    _outcome(alerts, "retry", error="timeout, sig=abc")
    _outcome(alerts, "retry")
    assert alerts.sent == [
        ("sink.failing", {"sink": "erp", "failing_seconds": 61.0, "error": "timeout, sig=REDACTED"})
    ]
    _outcome(alerts, "delivered")
    now[0] = 100.0
    _outcome(alerts, "retry")
    now[0] = 161.0
    _outcome(alerts, "retry")
    assert [kind for kind, _ in alerts.sent] == ["sink.failing", "sink.failing"]


def test_dead_and_gone_are_said_each_time() -> None:
    alerts = _Recorded(OpsWebhooksConfig(urls=("http://x/ops",), secret=SECRET), [0.0])
    _outcome(alerts, "dead")
    _outcome(alerts, "gone", error="410 Gone")
    assert [kind for kind, _ in alerts.sent] == ["send.dead", "sink.stopped"]


def test_alert_urls_need_a_strong_secret() -> None:
    with pytest.raises(ValidationError, match="secret: required with urls"):
        OpsWebhooksConfig(urls=("http://x/ops",))
    with pytest.raises(ValidationError, match="too weak"):
        OpsWebhooksConfig(urls=("http://x/ops",), secret="hunter2")
    with pytest.raises(ValidationError, match="http:// or https://"):
        OpsWebhooksConfig(urls=("ftp://x/ops",), secret=SECRET)


@pytest.mark.anyio
async def test_an_alert_url_on_a_private_network_is_refused_without_the_opt_in() -> None:
    """Alerts go through the same SSRF guard as the HTTP sink: no request leaves for a
    loopback address unless ``allow_networks`` names it."""
    metrics = Metrics()
    alerts = OpsWebhooks(
        OpsWebhooksConfig(urls=("http://127.0.0.1:9/ops",), secret=SECRET), metrics
    )
    try:
        await alerts._deliver("send.dead", "http://127.0.0.1:9/ops", b"{}")
    finally:
        await alerts.aclose()
    failed = metrics.registry.get_sample_value(
        "hookdock_alerts_total", {"type": "send.dead", "outcome": "failed"}
    )
    assert failed == 1
