"""SmartDocumentor export webhooks: one source per export kind.

SmartDocumentor sends a JSON ``POST`` when a document is reviewed, with no signature and no
delivery id.  Any non-2xx reply puts the document back to "To Review" and shows the reply body
to the reviewer, so rejections are short plain sentences.  They never echo the body: its
``exportedFileUrl`` and ``originalFileUrl`` are SAS URLs whose query string is a credential.

The same ``taskId`` can be exported again after a re-review, so the dedupe key combines the
task with a hash of the exact body: a resent body is a duplicate, a re-export is new.

Each export kind has its own URL, and the four are easy to mix up when pasting them into
SmartDocumentor's export settings.  Their bodies have distinct shapes (OCR ``chunks``,
transcript ``paragraphs``, an ``exportedFileUrl``: to a ``.docx`` for transcripts, with
``totalPages`` for anonymized documents), so a body that is plainly of another kind is
refused at the first document, with a line the reviewer can act on; a body that shows no
kind clearly is taken (``shape_of``).

Event attributes: ``task_id``, ``task_number``, ``workspace_id``, ``batch_id``, ``external_id``
(the same values as the event's fields of those names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from hashlib import sha256
from typing import Any, ClassVar
from urllib.parse import urlsplit

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Event, FileRef, RawDelivery
from handlers.redact import sas_expiry
from handlers.source import SourceBase, event_of
from handlers.sources.jsonbody import parse_object

__all__ = [
    "FILE_EXPORT",
    "SOURCES",
    "AnonymizationFileSource",
    "SmartDocumentorSource",
    "TextDocumentSource",
    "TranscriptFileSource",
    "TranscriptSource",
    "shape_of",
    "task_subject",
]


class SmartDocumentorSource(SourceBase):
    """What the four export kinds share; a subclass only names its ``kind``.

    ``has_exported_file`` marks the "URL to file" kinds, whose body must carry an
    ``exportedFileUrl``; the other kinds never read that field.
    """

    vendor: ClassVar[str] = "smartdocumentor"
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    kind: ClassVar[str]
    has_exported_file: ClassVar[bool] = False

    def admit(self, delivery: RawDelivery) -> str:
        body = parse_object(delivery.body)
        task_id = _check_common(body)
        # Only at the door: a delivery journaled before this check existed still normalizes.
        seen = shape_of(body)
        if not (seen in (None, self.kind) or (seen == FILE_EXPORT and self.has_exported_file)):
            raise PayloadRejected(
                f"this is {_KIND_NAMES[seen][0]}; this URL takes {_KIND_NAMES[self.kind][1]}",
                status=422,
            )
        self._check_exported(body)
        digest = sha256(delivery.body).hexdigest()
        return f"{delivery.route}:{self.kind}:{task_id}:{digest}"

    def subject(self, dedupe_key: str) -> str | None:
        """``smartdocumentor:task:<taskId>``: what reconciliation asks the journal about."""
        _route, _kind, rest = dedupe_key.split(":", 2)
        return task_subject(rest.rsplit(":", 1)[0])

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        try:
            body = parse_object(delivery.body)
            task_id = self._check(body)
        except PayloadRejected as exc:
            # Reachable when a delivery was journaled before this source grew stricter; the
            # message is ours and holds no body content, so it is safe for the operator's log.
            raise NormalizeError(
                f"SmartDocumentor {self.kind} delivery {delivery.delivery_id}: {exc.message}"
            ) from exc

        files: list[FileRef] = []
        if self.has_exported_file:
            files.append(_file_ref("exported", body["exportedFileUrl"]))
        if body.get("originalFileUrl") is not None:
            files.append(_file_ref("original", body["originalFileUrl"]))

        ids: dict[str, str | int | None] = {
            "task_id": task_id,
            "task_number": _task_number(body.get("taskNumber")),
            "workspace_id": _opt_id(body.get("workspaceId")),
            "batch_id": _opt_id(body.get("batchId")),
            "external_id": _opt_id(body.get("externalId")),
        }
        event = event_of(
            delivery,
            f"SmartDocumentor {self.kind} ",
            vendor=self.vendor,
            kind=self.kind,
            task_id=task_id,
            task_number=_task_number(body.get("taskNumber")),
            workspace_id=_opt_id(body.get("workspaceId")),
            batch_id=_opt_id(body.get("batchId")),
            external_id=_opt_id(body.get("externalId")),
            display_name=_opt_str(body.get("displayName")),
            files=tuple(files),
            attributes=ids,
            payload=body,
        )
        return [event]

    def _check(self, body: Mapping[str, Any]) -> str:
        """Validate the fields routing and dedupe depend on; return the task id as text."""
        task_id = _check_common(body)
        self._check_exported(body)
        return task_id

    def _check_exported(self, body: Mapping[str, Any]) -> None:
        if self.has_exported_file:
            exported = body.get("exportedFileUrl")
            if exported is None:
                raise PayloadRejected("exportedFileUrl missing", status=422)
            if not _is_http_url(exported):
                raise PayloadRejected("exportedFileUrl is not an http(s) URL", status=422)


class TextDocumentSource(SmartDocumentorSource):
    """Reviewed OCR data and metadata (Invoices, Receipts, Custom and Layout workspaces)."""

    kind = "text_document"


class TranscriptSource(SmartDocumentorSource):
    """A reviewed transcript, full or "Simplified Export"."""

    kind = "transcript"


class TranscriptFileSource(SmartDocumentorSource):
    """The "URL to file" export for transcripts: a generated ``.docx`` at ``exportedFileUrl``."""

    kind = "transcript_file"
    has_exported_file = True


class AnonymizationFileSource(SmartDocumentorSource):
    """The "URL to file" export for anonymization: the anonymized PDF, JPEG or PNG."""

    kind = "anonymization_file"
    has_exported_file = True


def task_subject(task_id: str) -> str:
    return f"smartdocumentor:task:{task_id}"


SOURCES: dict[str, type[SmartDocumentorSource]] = {
    f"smartdocumentor.{cls.kind}": cls
    for cls in (TextDocumentSource, TranscriptSource, TranscriptFileSource, AnonymizationFileSource)
}


FILE_EXPORT = "file"
"""What ``shape_of`` says of a "URL to file" export that does not tell which of the two."""

_KIND_NAMES = {
    "text_document": ("a text document export", "text documents"),
    "transcript": ("a transcript export", "transcripts"),
    "transcript_file": (
        "a transcript file export (URL to file)",
        "transcript files (URL to file)",
    ),
    "anonymization_file": (
        "an anonymization file export (URL to file)",
        "anonymized files (URL to file)",
    ),
    FILE_EXPORT: ("a URL to file export", "URL to file exports"),
}
"""Per kind: what a body of that kind is, and what its URL takes, for the reviewer."""


def shape_of(body: Mapping[str, Any]) -> str | None:
    """The export kind ``body`` plainly is; ``FILE_EXPORT`` for a "URL to file" export that
    does not tell which; None when it shows no kind, or several.

    A refused document goes back to a reviewer, so only documented marks count: OCR
    ``chunks``, transcript ``paragraphs``, an ``exportedFileUrl``; between the two file kinds,
    a ``.docx`` without ``totalPages`` (a transcript file), or ``totalPages`` without a
    ``.docx`` (an anonymized document).  A file's other extensions decide nothing.
    """
    seen: set[str] = set()
    if isinstance(body.get("chunks"), list):
        seen.add("text_document")
    if isinstance(body.get("paragraphs"), list):
        seen.add("transcript")
    exported = body.get("exportedFileUrl")
    if _is_http_url(exported):
        docx = urlsplit(str(exported)).path.lower().endswith(".docx")
        pages = "totalPages" in body
        if docx and not pages:
            seen.add("transcript_file")
        elif pages and not docx:
            seen.add("anonymization_file")
        else:
            seen.add(FILE_EXPORT)
    return seen.pop() if len(seen) == 1 else None


def _check_common(body: Mapping[str, Any]) -> str:
    """The fields every kind has (the task id, returned as text, and the original's link)."""
    task_id = _task_id(body.get("taskId"))
    original = body.get("originalFileUrl")
    if original is not None and not _is_http_url(original):
        raise PayloadRejected("originalFileUrl is not an http(s) URL", status=422)
    return task_id


def _task_id(value: object) -> str:
    if value is None:
        raise PayloadRejected("taskId missing", status=422)
    # bool is an int subclass, and a float id (orjson's fallback beyond 64 bits) cannot be
    # turned back into the vendor's exact id.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadRejected("taskId is not a string or number", status=422)
    text = str(value)
    if not text.strip():
        raise PayloadRejected("taskId missing", status=422)
    return text


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    # urlsplit silently drops tabs and newlines, which would let a mangled URL through.
    if _CONTROL_OR_SPACE.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _file_ref(role: str, url: str) -> FileRef:
    return FileRef(role=role, url=url, expires_at=sas_expiry(url))


def _task_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isascii() keeps out digits int() would reject or misread, such as "²" or "٣".
    if isinstance(value, str) and value.isascii() and value.isdigit():
        try:
            return int(value)
        except ValueError:  # beyond Python's int-from-string digit limit
            return None
    return None


def _opt_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return _opt_str(value)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
