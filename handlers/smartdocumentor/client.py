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

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from handlers.netguard import (
    AddressRefused,
    AllowedNetwork,
    HostPattern,
    NetPolicy,
    check_url,
    guarded_connector,
)
from handlers.poller import PollRejected, RateLimited, VendorUnavailable
from handlers.retry_after import parse_retry_after

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
        self.calls = 0
        """Requests made, token requests included."""
        self._clock = clock
        self._policy = NetPolicy(
            allow_networks=settings.allow_networks, allow_hosts=settings.allow_hosts
        )
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SmartDocumentorClient(base_url={self.settings.base_url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self._policy, limit=8),
                timeout=timeout,
                raise_for_status=False,
                trust_env=False,  # a proxy would defeat the guard
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
    ) -> tuple[int, bytes, str | None]:
        url = self.settings.base_url + path
        try:
            check_url(url, self._policy)
        except AddressRefused as exc:
            raise PollRejected(f"SmartDocumentor API: {exc}") from exc
        headers = {"accept": "application/json", "user-agent": "hookdock"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        body = None if json is None else orjson.dumps(json)
        if body is not None:
            headers["content-type"] = "application/json"
        self.calls += 1
        try:
            async with self._client().request(
                method, url, params=list(params), data=body or data, headers=headers
            ) as response:
                return response.status, await response.read(), response.headers.get("retry-after")
        except AddressRefused as exc:
            raise PollRejected(f"SmartDocumentor API: {exc}") from exc
        except TimeoutError as exc:
            raise VendorUnavailable(f"SmartDocumentor {method} {path}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise VendorUnavailable(
                f"SmartDocumentor {method} {path}: {type(exc).__name__}"
            ) from exc

    async def _token_value(self, *, renew: bool) -> str:
        async with self._token_lock:
            if not renew and self._token is not None and self._clock() < self._token_until:
                return self._token
            s = self.settings
            status, body, retry_after = await self._send(
                "POST",
                "/connect/token",
                data={
                    "grant_type": "client_credentials",
                    "scope": s.scope,
                    "client_id": s.client_id,
                    "client_secret": s.client_secret.get_secret_value(),
                },
            )
            _raise_for(status, retry_after, "POST /connect/token")
            answer = _json(body, "POST /connect/token")
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                raise VendorUnavailable("SmartDocumentor POST /connect/token: no access_token")
            expires = answer.get("expires_in", 3600)
            lifetime = float(expires) if isinstance(expires, int | float) else 3600.0
            self._token = token
            self._token_until = self._clock() + max(0.0, lifetime - s.token_margin_seconds)
            return token

    async def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
    ) -> bytes:
        """The body of a successful call to ``/api/v1.0/external/<endpoint>``."""
        path = _API + endpoint
        what = f"{method} {path}"
        token = await self._token_value(renew=False)
        status, body, retry_after = await self._send(
            method, path, params=params, json=json, token=token
        )
        if status == 401:
            # Expired early or revoked: one new token, one more try.
            token = await self._token_value(renew=True)
            status, body, retry_after = await self._send(
                method, path, params=params, json=json, token=token
            )
        _raise_for(status, retry_after, what)
        return body

    async def call_json(
        self,
        method: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
    ) -> Any:
        body = await self.call(method, endpoint, params=params, json=json)
        return _json(body, f"{method} {_API}{endpoint}")

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


def _raise_for(status: int, retry_after: str | None, what: str) -> None:
    if 200 <= status < 300:
        return
    message = f"SmartDocumentor {what}: HTTP {status}"
    if status == 429:
        raise RateLimited(message, parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        raise VendorUnavailable(message)
    raise PollRejected(message)


def _json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise VendorUnavailable(f"SmartDocumentor {what}: the answer is not JSON") from exc


def _object(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise VendorUnavailable(f"SmartDocumentor {what}: the answer is not an object")
    return answer
