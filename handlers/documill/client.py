"""A client for the Documill Dynamo batch API: post a batch, read a batch and a task.

Every call carries ``x-dynamo-tenant-id`` and ``x-dynamo-api-key`` (a ``SecretStr``, never
logged or shown).  Errors are the pollers' (``handlers.vendor_http``), plus one of its own::

    PollRejected
     └── BatchGone    404 for a batch: Dynamo keeps a batch's status 24 hours, then forgets it
"""

from __future__ import annotations

from typing import Annotated, Any

import aiohttp
import orjson
from pydantic import Field, SecretStr

from handlers.poller import PollRejected, VendorUnavailable
from handlers.vendor_http import Answer, VendorApi, VendorHttp, raise_for

__all__ = ["BatchGone", "DynamoClient", "DynamoSettings"]

VENDOR = "Documill"


class DynamoSettings(VendorApi):
    """The ``api`` table of the ``documill.batches`` poller's settings."""

    base_url: Annotated[str, Field(pattern=r"^https?://[^/?#]+(/[^?#]*[^/?#])?$")] = (
        "https://dynamo-api.documill.com"
    )
    tenant_id: Annotated[str, Field(min_length=1)]
    api_key: SecretStr


class BatchGone(PollRejected):
    """Dynamo no longer knows the batch (its status is kept 24 hours)."""


class DynamoClient:
    def __init__(self, settings: DynamoSettings) -> None:
        self.settings = settings
        self._http = VendorHttp(VENDOR, settings)

    def __repr__(self) -> str:
        return f"DynamoClient(base_url={self.settings.base_url!r})"

    @property
    def calls(self) -> int:
        return self._http.calls

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {
            "accept": "application/json",
            "user-agent": "hookdock",
            "x-dynamo-tenant-id": self.settings.tenant_id,
            "x-dynamo-api-key": self.settings.api_key.get_secret_value(),
        }
        if content_type is not None:
            headers["content-type"] = content_type
        return headers

    async def _get(self, path: str) -> Answer:
        return await self._http.send("GET", path, headers=self._headers())

    async def post_batch(
        self,
        data: dict[str, Any],
        *,
        template: tuple[str, bytes] | None = None,
        parts: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/batch``: JSON, or multipart when there is a ``template`` file (name,
        bytes) or JSON ``parts`` (``param.<name>``); the 202 answer."""
        body: bytes | aiohttp.FormData
        if template is None and not parts:
            body, headers = orjson.dumps(data), self._headers("application/json")
        else:
            form = aiohttp.FormData(quote_fields=False)
            if template is not None:
                name, content = template
                form.add_field(
                    "template", content, filename=name, content_type="application/octet-stream"
                )
            form.add_field("data", orjson.dumps(data).decode(), content_type="application/json")
            for name, value in (parts or {}).items():
                form.add_field(
                    f"param.{name}", orjson.dumps(value).decode(), content_type="application/json"
                )
            body, headers = form, self._headers()
        what = f"{VENDOR} POST /v1/batch"
        answer = await self._http.send("POST", "/v1/batch", headers=headers, data=body)
        if answer.status == 400:
            raise PollRejected(f"{what}: HTTP 400 {_short(answer.body)}")
        raise_for(answer, what)
        return _object(answer.json(what), what)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/batch/{id}``: ``completed``, ``postDateTime``, ``tasks[]``, ``errors``..."""
        path = f"/v1/batch/{batch_id}"
        what = f"{VENDOR} GET {path}"
        answer = await self._get(path)
        if answer.status == 404:
            raise BatchGone(f"{what}: HTTP 404 (Dynamo keeps a batch's status 24 hours)")
        raise_for(answer, what)
        return _object(answer.json(what), what)

    async def task(self, batch_id: str, task_id: str) -> dict[str, Any]:
        """``GET /v1/batch/{id}/{taskId}``: ``completed``, ``errors``, ``resultList[]``..."""
        path = f"/v1/batch/{batch_id}/{task_id}"
        what = f"{VENDOR} GET {path}"
        answer = await self._get(path)
        raise_for(answer, what)
        return _object(answer.json(what), what)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VendorUnavailable(f"{what}: the answer is not an object")
    return value


def _short(body: bytes) -> str:
    """The first line of a refusal, printable only: it says what Dynamo did not like."""
    text = body.decode("utf-8", errors="replace").strip().splitlines()
    line = text[0] if text else ""
    return "".join(c for c in line if c.isprintable())[:200]
