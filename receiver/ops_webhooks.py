"""Operational webhooks (``[alerts]``): hookdock tells someone when a send is dead-lettered,
a sink stops, or a sink keeps failing longer than ``failing_seconds``, as Svix's operational
webhooks do.  (Not the alerts vendors send about themselves, which are events.)

Each alert is a JSON POST to every configured URL, signed with Standard Webhooks headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) under ``[alerts] secret``::

    {"type": "send.dead", "timestamp": "...", "data": {"sink": ..., "event_id": ..., ...}}
    {"type": "sink.stopped", "timestamp": "...", "data": {"sink": ..., "reason": ...}}
    {"type": "sink.failing", "timestamp": "...", "data": {"sink": ..., "failing_seconds": ...}}

Alerts go out in the background and never hold up a delivery: each URL gets up to three
tries (1 s, then 5 s apart); at most ``max_pending`` wait at once, and beyond that they are
dropped and counted.  ``hookdock_alerts_total{type,outcome}`` counts sent, failed and
dropped ones.  The URLs are the operator's own, so they are not put through the SSRF guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from handlers.netguard import (
    AddressRefused,
    AllowedNetwork,
    HostPattern,
    NetPolicy,
    check_url,
    guarded_connector,
)
from handlers.redact import redact_text, redact_url
from handlers.signing import decode_whsec, sign_standard_webhook
from receiver.ids import new_id
from receiver.metrics import Metrics

__all__ = ["OpsWebhooks", "OpsWebhooksConfig"]

log = logging.getLogger("hookdock.alerts")

_DELAYS = (1.0, 5.0)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _signing_secret(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    try:
        key = decode_whsec(secret)
    except ValueError:
        raise ValueError("is not a valid secret: expected 'whsec_<base64>'") from None
    if not secret.startswith("whsec_") or len(key) < 24:
        raise ValueError("is too weak: 'whsec_' and 24+ random bytes (`hookdock secret`)")
    return value


class OpsWebhooksConfig(BaseModel):
    """``[alerts]``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    urls: tuple[Annotated[str, AfterValidator(_http_url)], ...] = ()
    secret: Annotated[SecretStr, AfterValidator(_signing_secret)] | None = None
    """``whsec_...``: every alert is signed with it (Standard Webhooks)."""
    failing_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 1800.0
    """``sink.failing`` once a sink's sends have failed (and are retried) this long with none
    delivered in between; 0: never.  Each process judges by the attempts it makes."""
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_pending: Annotated[int, Field(ge=1, le=10_000)] = 100
    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Opt-in, as for the HTTP sink: private or loopback networks alerts may reach (a receiver
    on this machine: ``["127.0.0.1/32"]``).  Cloud metadata addresses are refused always."""
    allow_hosts: tuple[HostPattern, ...] = ()

    @model_validator(mode="after")
    def _signed(self) -> OpsWebhooksConfig:
        if self.urls and self.secret is None:
            raise ValueError("secret: required with urls (make one: hookdock secret)")
        return self


class OpsWebhooks:
    """Sends alerts in the background; ``aclose`` waits a moment for those under way."""

    def __init__(
        self,
        config: OpsWebhooksConfig,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._policy = NetPolicy(
            allow_networks=config.allow_networks, allow_hosts=config.allow_hosts
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._failing_since: dict[str, float] = {}
        self._failing_said: set[str] = set()

    def outcome(
        self,
        *,
        sink: str,
        kind: str,
        delivery_id: str,
        event_id: str,
        code: str | None,
        error: str | None,
    ) -> None:
        """What one attempt at a send ended with: alerts for a dead send, a stopped sink, and
        a sink that has been failing for ``failing_seconds`` (said once, until it delivers)."""
        if kind == "delivered":
            self._failing_since.pop(sink, None)
            self._failing_said.discard(sink)
        elif kind == "dead":
            self.send_dead(
                sink=sink, delivery_id=delivery_id, event_id=event_id, code=code, error=error
            )
        elif kind == "gone":
            self.sink_stopped(sink=sink, reason=error)
        elif kind == "retry" and self.config.failing_seconds > 0:
            now = self.clock()
            since = self._failing_since.setdefault(sink, now)
            if now - since >= self.config.failing_seconds and sink not in self._failing_said:
                self._failing_said.add(sink)
                self._emit(
                    "sink.failing",
                    {
                        "sink": sink,
                        "failing_seconds": round(now - since, 1),
                        "error": None if error is None else redact_text(error),
                    },
                )

    @property
    def enabled(self) -> bool:
        return bool(self.config.urls)

    def send_dead(
        self, *, sink: str, delivery_id: str, event_id: str, code: str | None, error: str | None
    ) -> None:
        self._emit(
            "send.dead",
            {
                "sink": sink,
                "delivery_id": delivery_id,
                "event_id": event_id,
                "code": code,
                "error": None if error is None else redact_text(error),
            },
        )

    def sink_stopped(self, *, sink: str, reason: str | None) -> None:
        self._emit("sink.stopped", {"sink": sink, "reason": redact_text(reason or "")})

    def _emit(self, kind: str, data: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        if len(self._tasks) >= self.config.max_pending:
            self._count(kind, "dropped")
            log.warning("alert %s dropped: %d alerts already waiting", kind, len(self._tasks))
            return
        body = orjson.dumps(
            {"type": kind, "timestamp": datetime.now(UTC).isoformat(), "data": dict(data)}
        )
        for url in self.config.urls:
            task = asyncio.create_task(self._deliver(kind, url, body), name=f"hookdock-{kind}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, kind: str, url: str, body: bytes) -> None:
        assert self.config.secret is not None  # checked by the config
        msg_id = f"alert_{new_id()}"
        problem = ""
        for attempt in range(len(_DELAYS) + 1):
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign_standard_webhook(
                    self.config.secret.get_secret_value(), msg_id, stamp, body
                ),
            }
            try:
                # The same SSRF guard as every other URL hookdock posts to: the host is checked
                # here (IP literals) and address by address when it connects.
                check_url(url, self._policy)
                async with self._client().post(url, data=body, headers=headers) as answer:
                    if 200 <= answer.status < 300:
                        self._count(kind, "sent")
                        return
                    problem = f"answered {answer.status}"
            except AddressRefused as exc:
                problem = redact_text(str(exc))
                break  # a refused address stays refused: no point in trying again
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = redact_text(str(exc)) or type(exc).__name__
            if attempt < len(_DELAYS):
                await asyncio.sleep(_DELAYS[attempt])
        self._count(kind, "failed")
        log.warning("alert %s to %s not delivered: %s", kind, redact_url(url), problem)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=guarded_connector(self._policy), trust_env=False
            )
        return self._session

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts.labels(kind, outcome).inc()

    async def aclose(self, grace_seconds: float = 2.0) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()
            self._session = None
