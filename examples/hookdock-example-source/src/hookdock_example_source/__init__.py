"""An example hookdock source: an uptime monitor that POSTs when a check goes down or up.

The monitor sends JSON such as::

    {"id": "evt_01", "status": "down", "check": {"id": "chk-7", "name": "api"},
     "at": "2026-03-14T09:45:00Z"}

with ``X-Uptime-Token: <token>`` and ``X-Uptime-Attempt: <n>`` on its retries.  What it shows:

* a **settings model** (``UptimeSettings``: frozen, strict, no unknown keys), validated by
  hookdock at startup and passed to the constructor;
* a **default scheme** (``default_auth``): a route writes ``auth = { token = "..." }``;
* **declared headers** (``kept_headers``): kept with the raw delivery for ``normalize``;
* **dedupe** on the monitor's event id, so a retry is the same delivery;
* **attributes** (``check_id``, ``check_name``) for routing rules and path templates;
* refusals as one plain line (``PayloadRejected``), and ``NormalizeError`` for the rest.

It imports only ``handlers``, hookdock's plugin kit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from handlers import Event, NormalizeError, PayloadRejected, RawDelivery, SourceBase, SourceSettings

__all__ = ["UptimeSettings", "UptimeSource"]

_STATUSES = ("down", "up")


class UptimeSettings(SourceSettings):
    """A route's ``settings`` table for ``example.uptime``."""

    down_only: bool = False
    """Make no event of a check coming back up (it is still journaled)."""


class UptimeSource(SourceBase):
    vendor: ClassVar[str] = "uptime"
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    settings_model: ClassVar[type[BaseModel]] = UptimeSettings
    default_auth: ClassVar[Mapping[str, Any] | None] = {
        "type": "header-token",
        "header": "X-Uptime-Token",
    }
    kept_headers = frozenset({"x-uptime-attempt"})
    settings: UptimeSettings

    def __init__(self, settings: UptimeSettings | None = None) -> None:
        super().__init__(settings)

    def admit(self, delivery: RawDelivery) -> str:
        body = _parse(delivery.body)
        return f"{delivery.route}:uptime:{body['id']}"

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        try:
            body = _parse(delivery.body)
        except PayloadRejected as exc:
            raise NormalizeError(f"uptime delivery {delivery.delivery_id}: {exc.message}") from exc
        if body["status"] == "up" and self.settings.down_only:
            return []
        found = body.get("check")
        check: dict[str, Any] = found if isinstance(found, dict) else {}
        return [
            Event(
                event_id=delivery.event_id(0),
                delivery_id=delivery.delivery_id,
                vendor=self.vendor,
                kind=f"check.{body['status']}",
                route=delivery.route,
                received_at=delivery.received_at,
                display_name=_text(check.get("name")),
                attributes={
                    "check_id": _text(check.get("id")),
                    "check_name": _text(check.get("name")),
                    "attempt": _text(delivery.headers.get("x-uptime-attempt")),
                },
                payload=body,
            )
        ]


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PayloadRejected("body is not JSON", status=400) from None
    if not isinstance(body, dict):
        raise PayloadRejected("body is not a JSON object", status=422)
    if not isinstance(body.get("id"), str) or not body["id"]:
        raise PayloadRejected("id missing", status=422)
    if body.get("status") not in _STATUSES:
        raise PayloadRejected("status must be down or up", status=422)
    return body


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
