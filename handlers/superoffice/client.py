"""A client for SuperOffice's batch tasks: ``POST /api/v1/BatchTask`` and ``GET .../{id}``.

Authorization is ``Basic``, ``Bearer`` or ``SoTicket`` (by installation), with ``SO-AppToken``
when calling Online from a server; every credential is a ``SecretStr``, never logged or shown.
It asks for JSON; an answer in XML (what SuperOffice sends a client that does not ask for
JSON, or a proxy that dropped the ``Accept``) is read too.  Errors are the pollers'
(``handlers.vendor_http``), and one of its own::

    PollRejected
     └── BatchTaskGone    404: no batch task of that id
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from handlers.poller import PollRejected, VendorUnavailable
from handlers.vendor_http import Answer, VendorApi, VendorHttp, raise_for

__all__ = [
    "BasicAuth",
    "BatchTaskGone",
    "BearerAuth",
    "SoTicketAuth",
    "SuperOfficeApi",
    "SuperOfficeClient",
]

VENDOR = "SuperOffice"
_PATH = "/api/v1/BatchTask"
_INTS = frozenset({"Id", "AssociateId", "DetailsTable", "DetailsRecord", "StartCount"})


class _Auth(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class BasicAuth(_Auth):
    type: Literal["basic"]
    username: Annotated[str, Field(min_length=1)]
    password: SecretStr

    def header(self) -> str:
        pair = f"{self.username}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class BearerAuth(_Auth):
    type: Literal["bearer"]
    token: SecretStr

    def header(self) -> str:
        return "Bearer " + self.token.get_secret_value()


class SoTicketAuth(_Auth):
    type: Literal["soticket"]
    ticket: SecretStr

    def header(self) -> str:
        return "SOTicket " + self.ticket.get_secret_value()


class SuperOfficeApi(VendorApi):
    """The ``api`` table of the ``superoffice.batch_tasks`` poller's settings."""

    base_url: Annotated[str, Field(pattern=r"^https?://[^/?#]+(/[^?#]*[^/?#])?$")]
    """The tenant's web API root, e.g. ``https://online.superoffice.com/Cust12345``."""
    auth: Annotated[BasicAuth | BearerAuth | SoTicketAuth, Field(discriminator="type")]
    app_token: SecretStr | None = None
    """``SO-AppToken``: the partner application's token (Online, from a server)."""


class BatchTaskGone(PollRejected):
    """404: SuperOffice has no batch task of that id."""


class SuperOfficeClient:
    def __init__(self, settings: SuperOfficeApi) -> None:
        self.settings = settings
        self._http = VendorHttp(VENDOR, settings)

    def __repr__(self) -> str:
        return f"SuperOfficeClient(base_url={self.settings.base_url!r})"

    @property
    def calls(self) -> int:
        return self._http.calls

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self, body: bool = False) -> dict[str, str]:
        headers = {
            "accept": "application/json",
            "user-agent": "hookdock",
            "authorization": self.settings.auth.header(),
        }
        if self.settings.app_token is not None:
            headers["so-apptoken"] = self.settings.app_token.get_secret_value()
        if body:
            headers["content-type"] = "application/json"
        return headers

    async def create_batch_task(self, info: dict[str, Any]) -> int:
        """Start a batch task described by ``info`` (a ``BatchTaskInfo``); its id."""
        what = f"{VENDOR} POST {_PATH}"
        answer = await self._http.send(
            "POST", _PATH, headers=self._headers(body=True), data=orjson.dumps(info)
        )
        raise_for(answer, what)
        value = _read(answer, what)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise VendorUnavailable(f"{what}: the answer is not a batch task id")
        return value

    async def batch_task(self, task_id: int) -> dict[str, Any]:
        """The ``BatchTaskInfo`` of ``task_id``: ``State``, ``ProgressPercent``, ``Result``..."""
        path = f"{_PATH}/{task_id}"
        what = f"{VENDOR} GET {path}"
        answer = await self._http.send("GET", path, headers=self._headers())
        if answer.status == 404:
            raise BatchTaskGone(f"{what}: HTTP 404 (no such batch task)")
        raise_for(answer, what)
        value = _read(answer, what)
        if not isinstance(value, dict):
            raise VendorUnavailable(f"{what}: the answer is not a BatchTaskInfo")
        return value


def _read(answer: Answer, what: str) -> Any:
    if "xml" in answer.content_type.lower():
        return from_xml(answer.body, what)
    return answer.json(what)


def from_xml(body: bytes, what: str) -> Any:
    """A ``BatchTaskInfo`` (or an ``<int>``) in XML, as the JSON answer would have it."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        # No document type, no entities: nothing a BatchTaskInfo needs, everything a bomb does.
        raise VendorUnavailable(f"{what}: the XML answer declares a document type")
    try:
        root = ET.fromstring(body)  # noqa: S314 - no DTD (refused above)
    except ET.ParseError as exc:
        raise VendorUnavailable(f"{what}: the answer is not XML ({exc})") from exc
    if len(root) == 0:
        return (root.text or "").strip()
    out: dict[str, Any] = {}
    for child in root:
        name = child.tag.rsplit("}", 1)[-1]
        text = child.text.strip() if child.text else None
        nil = any(k.endswith("}nil") and v == "true" for k, v in child.attrib.items())
        if nil or text is None:
            out[name] = None
        elif name in _INTS or name == "ProgressPercent":
            out[name] = int(text) if text.lstrip("-").isdigit() else text
        elif text in ("true", "false"):
            out[name] = text == "true"
        else:
            out[name] = text
    return out
