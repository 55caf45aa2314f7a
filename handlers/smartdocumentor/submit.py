"""Starting work at SmartDocumentor: a batch, and one task per document URL in it.

What ``hookdock smartdocumentor create-batch`` and ``submit`` do.  The ``sdtask/process``
request body is not in the published pages hookdock was built from; the fields used here
(``displayName``, ``externalId``, ``batchId``, ``workspaceId``, ``fileUrl``, ``metadata``) are
the names the rest of the API uses for the same things.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from handlers.smartdocumentor.client import SmartDocumentorClient

__all__ = ["Document", "create_batch", "submit"]


@dataclass(frozen=True, slots=True)
class Document:
    url: str
    display_name: str | None = None
    external_id: str | None = None


async def create_batch(
    client: SmartDocumentorClient,
    display_name: str,
    description: str | None = None,
    workspace_id: int | None = None,
) -> dict[str, Any]:
    return await client.create_batch(display_name, description, workspace_id)


async def submit(
    client: SmartDocumentorClient,
    documents: Sequence[Document],
    *,
    batch_id: int | None = None,
    batch_name: str | None = None,
    description: str | None = None,
    workspace_id: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Use batch ``batch_id`` or create one named ``batch_name``; then one task per document.

    Returns ``{"batch": ..., "tasks": [...]}`` with what SmartDocumentor answered.
    """
    if (batch_id is None) == (batch_name is None):
        raise ValueError("give a batch id or a name for a new batch")
    if batch_id is None:
        assert batch_name is not None
        batch = await client.create_batch(batch_name, description, workspace_id)
    else:
        batch = await client.get_batch(batch_id)
    tasks = []
    for document in documents:
        request: dict[str, Any] = {
            "displayName": document.display_name or _name_of(document.url),
            "batchId": batch["batchId"],
            "fileUrl": document.url,
        }
        if document.external_id is not None:
            request["externalId"] = document.external_id
        if workspace_id is not None:
            request["workspaceId"] = workspace_id
        if metadata:
            request["metadata"] = dict(metadata)
        tasks.append(await client.create_task(request))
    return {"batch": batch, "tasks": tasks}


def _name_of(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    return unquote(path.rsplit("/", 1)[-1]) or "document"
