"""A client for SmartDocumentor's external API: tokens, task status, export data, batches.

Every call carries a client-credentials token (``POST /connect/token``, ``scope=WebAPI``),
cached until ``token_margin_seconds`` before its ``expires_in`` and fetched again once when the
API answers 401 (a token revoked or expired early); a second 401 is a refusal.  Requests go
through the SSRF guard like every URL hookdock calls: a loopback or private API host (the
emulator) must be opted in with ``allow_networks``.  The client secret and the token are
``SecretStr``/private and never logged; messages name the path, never the query string.

What an answer means, as the pollers' errors (``handlers.poller``)::

    VendorUnavailable   5xx, 408, a timeout, a connection error
    RateLimited         429, with its Retry-After
    PollRejected        any other 4xx (a second 401 included), or a refused address

Task status lists are paged to the end as an async iterator of pages, so a caller holds one
page at a time whatever the task count.  The vendor's totals are not trusted to stop paging
(they change while tasks are created): ``hasNextPage`` and an empty page are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from handlers.netguard import AllowedNetwork, HostPattern
from handlers.poller import VendorUnavailable
from handlers.vendor_http import Answer, VendorApi, VendorHttp, raise_for

__all__ = ["ApiSettings", "SmartDocumentorClient", "iso"]

_API = "/api/v1.0/external/"


class ApiSettings(BaseModel):
    """How to reach SmartDocumentor's API (the ``api`` table of its pollers' settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    base_url: Annotated[str, Field(pattern=r"^https?://[^/?#]+$")] = (
        "https://cloud.smartdocumentor.net"
    )
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr
    scope: str = "WebAPI"
    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Opt-in for a private or loopback API host (the emulator: ``["127.0.0.1/32"]``)."""
    allow_hosts: tuple[HostPattern, ...] = ()
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    page_size: Annotated[int, Field(ge=1, le=1000)] = 100
    token_margin_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """A cached token is replaced this long before it expires."""


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class SmartDocumentorClient:
    """One per poller (or CLI command); ``await aclose()`` when done."""

    def __init__(
        self, settings: ApiSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        api = VendorApi(
            base_url=settings.base_url,
            allow_networks=settings.allow_networks,
            allow_hosts=settings.allow_hosts,
            timeout_seconds=settings.timeout_seconds,
        )
        self.http = VendorHttp("SmartDocumentor", api)
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SmartDocumentorClient(base_url={self.settings.base_url!r})"

    @property
    def calls(self) -> int:
        """Requests made, token requests included."""
        return self.http.calls

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ transport

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
        data: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Answer:
        headers = {"accept": "application/json", "user-agent": "hookdock"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        body = None if json is None else orjson.dumps(json)
        if body is not None:
            headers["content-type"] = "application/json"
        return await self.http.send(method, path, headers=headers, params=params, data=body or data)

    async def _token_value(self, *, renew: bool) -> str:
        async with self._token_lock:
            if not renew and self._token is not None and self._clock() < self._token_until:
                return self._token
            s = self.settings
            answer = await self._send(
                "POST",
                "/connect/token",
                data={
                    "grant_type": "client_credentials",
                    "scope": s.scope,
                    "client_id": s.client_id,
                    "client_secret": s.client_secret.get_secret_value(),
                },
            )
            raise_for(answer, "SmartDocumentor POST /connect/token")
            got = answer.json("SmartDocumentor POST /connect/token")
            token = got.get("access_token") if isinstance(got, dict) else None
            if not isinstance(token, str) or not token:
                raise VendorUnavailable("SmartDocumentor POST /connect/token: no access_token")
            expires = got.get("expires_in", 3600)
            lifetime = float(expires) if isinstance(expires, int | float) else 3600.0
            self._token = token
            self._token_until = self._clock() + max(0.0, lifetime - s.token_margin_seconds)
            return token

    async def _call(
        self, method: str, endpoint: str, params: Sequence[tuple[str, str]], json: Any
    ) -> Answer:
        path = _API + endpoint
        token = await self._token_value(renew=False)
        answer = await self._send(method, path, params=params, json=json, token=token)
        if answer.status == 401:
            # Expired early or revoked: one new token, one more try.
            token = await self._token_value(renew=True)
            answer = await self._send(method, path, params=params, json=json, token=token)
        raise_for(answer, f"SmartDocumentor {method} {path}")
        return answer

    async def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
    ) -> bytes:
        """The body of a successful call to ``/api/v1.0/external/<endpoint>``."""
        return (await self._call(method, endpoint, params, json)).body

    async def call_json(
        self,
        method: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
    ) -> Any:
        answer = await self._call(method, endpoint, params, json)
        return answer.json(f"SmartDocumentor {method} {_API}{endpoint}")

    # ------------------------------------------------------------------ tasks

    async def status_pages(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        task_status: Sequence[int] = (),
        integration_status: Sequence[int] = (),
        workspace_ids: Sequence[int] = (),
        page_size: int | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``sdtask/statuslistpaginated`` page by page, to the last page."""
        params = _status_filters(start, end, task_status, integration_status, workspace_ids)
        size = str(page_size or self.settings.page_size)
        page = 1
        while True:
            answer = await self.call_json(
                "GET",
                "sdtask/statuslistpaginated",
                params=[*params, ("pageNumber", str(page)), ("pageSize", size)],
            )
            if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                raise VendorUnavailable("SmartDocumentor statuslistpaginated: not a page")
            items = [item for item in answer["items"] if isinstance(item, dict)]
            if items:
                yield items
            if not items or not answer.get("hasNextPage"):
                return
            page += 1

    async def status_list(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        task_status: Sequence[int] = (),
        integration_status: Sequence[int] = (),
        workspace_ids: Sequence[int] = (),
    ) -> list[dict[str, Any]]:
        """``sdtask/statuslist``: everything at once (the vendor calls it a heavy request)."""
        params = _status_filters(start, end, task_status, integration_status, workspace_ids)
        answer = await self.call_json("GET", "sdtask/statuslist", params=params)
        if not isinstance(answer, list):
            raise VendorUnavailable("SmartDocumentor statuslist: not a list")
        return [item for item in answer if isinstance(item, dict)]

    async def status(
        self, *, task_id: int | str | None = None, external_id: str | None = None
    ) -> dict[str, Any]:
        if (task_id is None) == (external_id is None):
            raise ValueError("give task_id or external_id")
        key, value = ("taskId", task_id) if task_id is not None else ("externalId", external_id)
        answer = await self.call_json("GET", "sdtask/status", params=[(key, str(value))])
        return _object(answer, "sdtask/status")

    async def export_data(self, task_id: int | str) -> bytes:
        """``sdtask/GetExportData/{taskId}``: a text document's export, the webhook's bytes."""
        return await self.call("GET", f"sdtask/GetExportData/{task_id}")

    async def create_task(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST sdtask/process``: one task (``displayName``, ``fileUrl``, ``batchId``, ...)."""
        return _object(await self.call_json("POST", "sdtask/process", json=request), "process")

    async def restart_processing(self, task_id: int | str) -> None:
        """``PATCH sdtask/restartprocessing``: reprocess a task.  Destructive at the vendor and
        it costs credits: only ever called when a setting asks for it."""
        await self.call("PATCH", "sdtask/restartprocessing", params=[("taskId", str(task_id))])

    # ------------------------------------------------------------------ batches

    async def create_batch(
        self, display_name: str, description: str | None = None, workspace_id: int | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"displayName": display_name}
        if description is not None:
            request["description"] = description
        if workspace_id is not None:
            request["workspaceId"] = workspace_id
        return _object(await self.call_json("POST", "sdbatch", json=request), "sdbatch")

    async def get_batch(self, batch_id: int | str) -> dict[str, Any]:
        answer = await self.call_json("GET", "sdbatch", params=[("batchId", str(batch_id))])
        return _object(answer, "sdbatch")

    async def batch_pages(
        self, page_size: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        size = str(page_size or self.settings.page_size)
        page = 1
        while True:
            answer = await self.call_json(
                "GET", "sdbatch/paginated", params=[("pageNumber", str(page)), ("pageSize", size)]
            )
            if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                raise VendorUnavailable("SmartDocumentor sdbatch/paginated: not a page")
            items = [item for item in answer["items"] if isinstance(item, dict)]
            if items:
                yield items
            if not items or not answer.get("hasNextPage"):
                return
            page += 1


def _status_filters(
    start: datetime | None,
    end: datetime | None,
    task_status: Sequence[int],
    integration_status: Sequence[int],
    workspace_ids: Sequence[int],
) -> list[tuple[str, str]]:
    if start is None and end is None:
        raise ValueError("SmartDocumentor's status lists need a start or an end date")
    params: list[tuple[str, str]] = []
    if start is not None:
        params.append(("startDate", iso(start)))
    if end is not None:
        params.append(("endDate", iso(end)))
    params += [("taskStatus", str(s)) for s in task_status]
    params += [("integrationStatus", str(s)) for s in integration_status]
    params += [("workspaceId", str(w)) for w in workspace_ids]
    return params


def _object(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise VendorUnavailable(f"SmartDocumentor {what}: the answer is not an object")
    return answer
