"""One vendor API over HTTP, for the clients of vendors that do not push (Documill, SuperOffice).

Every request goes through the SSRF guard like every URL hookdock calls: a loopback or private
API host (an emulator) must be opted in with ``allow_networks``.  No proxy from the
environment (it would defeat the guard).  Messages name the vendor, the method and the path,
never a query string or a header (they carry credentials).

What an answer means, as the pollers' errors (``handlers.poller``), decided here once::

    VendorUnavailable   5xx, 408, a timeout, a connection error, a body that does not parse
    RateLimited         429, with its Retry-After
    PollRejected        any other 4xx, or a refused address
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

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

__all__ = ["Answer", "VendorApi", "VendorHttp", "raise_for"]


class VendorApi(BaseModel):
    """Where a vendor's API is and how far the guard lets hookdock reach it."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    base_url: Annotated[str, Field(pattern=r"^https?://[^/?#]+(/[^?#]*[^/?#])?$")]
    """Scheme, host and an optional path prefix (SuperOffice's ``/Cust12345``), no slash after."""
    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Opt-in for a private or loopback API host (an emulator: ``["127.0.0.1/32"]``)."""
    allow_hosts: tuple[HostPattern, ...] = ()
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None

    def json(self, what: str) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise VendorUnavailable(f"{what}: the answer is not JSON") from exc


class VendorHttp:
    """A pooled, guarded session to one vendor's API; ``await aclose()`` when done."""

    def __init__(self, vendor: str, api: VendorApi) -> None:
        self.vendor = vendor
        self.api = api
        self.calls = 0
        self._policy = NetPolicy(allow_networks=api.allow_networks, allow_hosts=api.allow_hosts)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self._policy, limit=8),
                timeout=aiohttp.ClientTimeout(total=self.api.timeout_seconds),
                raise_for_status=False,
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Sequence[tuple[str, str]] = (),
        data: bytes | aiohttp.FormData | Mapping[str, str] | None = None,
    ) -> Answer:
        """One request; an ``Answer`` whatever its status (``raise_for`` judges it)."""
        url = self.api.base_url + path
        what = f"{self.vendor} {method} {path}"
        try:
            check_url(url, self._policy)
        except AddressRefused as exc:
            raise PollRejected(f"{self.vendor} API: {exc}") from exc
        self.calls += 1
        try:
            async with self._client().request(
                method, url, params=list(params), data=data, headers=dict(headers)
            ) as response:
                return Answer(
                    response.status,
                    await response.read(),
                    response.headers.get("content-type", ""),
                    response.headers.get("retry-after"),
                )
        except AddressRefused as exc:
            raise PollRejected(f"{self.vendor} API: {exc}") from exc
        except TimeoutError as exc:
            raise VendorUnavailable(f"{what}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise VendorUnavailable(f"{what}: {type(exc).__name__}") from exc


def raise_for(answer: Answer, what: str) -> None:
    """Nothing for a 2xx; the poll error the status means otherwise."""
    status = answer.status
    if 200 <= status < 300:
        return
    message = f"{what}: HTTP {status}"
    if status == 429:
        raise RateLimited(message, parse_retry_after(answer.retry_after))
    if status >= 500 or status == 408:
        raise VendorUnavailable(message)
    raise PollRejected(message)
