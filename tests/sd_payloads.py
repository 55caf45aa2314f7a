"""SmartDocumentor webhook bodies for tests: recorded-style files plus a generated large one.

Files live in ``payloads/smartdocumentor/`` as ``<kind>__<variant>.json`` and are read as raw
bytes, exactly as a route would receive them (the hash in the dedupe key depends on them).
The near-1 MiB OCR body is generated on demand rather than committed.

``EXPECTED`` holds, for every case ``all_cases()`` yields, the fields the matching source
must produce; ``file_count`` is ``len(event.files)``, every other key is an ``Event`` field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import orjson

__all__ = [
    "EXPECTED",
    "KINDS",
    "PAYLOAD_DIR",
    "ExpectedEvent",
    "all_cases",
    "large_text_document",
    "load",
]

PAYLOAD_DIR = Path(__file__).parent / "payloads" / "smartdocumentor"

KINDS = ("text_document", "transcript", "transcript_file", "anonymization_file")


class ExpectedEvent(TypedDict):
    task_id: str
    task_number: int | None
    workspace_id: str | None
    batch_id: str | None
    external_id: str | None
    display_name: str | None
    file_count: int


def load(kind: str, variant: str) -> bytes:
    """The raw body of one case, generated ones included."""
    generate = _GENERATED.get((kind, variant))
    if generate is not None:
        return generate()
    return (PAYLOAD_DIR / f"{kind}__{variant}.json").read_bytes()


def all_cases() -> list[tuple[str, str, bytes]]:
    """Every ``(kind, variant, body)``: the files sorted by name, then the generated cases."""
    cases: list[tuple[str, str, bytes]] = []
    for path in sorted(PAYLOAD_DIR.glob("*__*.json")):
        kind, variant = path.stem.split("__", 1)
        cases.append((kind, variant, path.read_bytes()))
    for (kind, variant), generate in _GENERATED.items():
        cases.append((kind, variant, generate()))
    return cases


_LARGE_TASK_ID = "4c5d6e7f-8091-4a2b-9c3d-4e5f60718293"
_WS_INVOICES = "a1c9e2f4-3b7d-4c8e-9f10-2d4b6a8c0e12"
_WS_TRANSCRIPTS = "6f0b2d84-1c3e-4a5f-8b7d-9e0a1c2b3d4e"
_WS_ANONYMIZATION = "c4d5e6f7-0a1b-4c2d-8e3f-5a6b7c8d9e0f"
_BATCH_INVOICES = "5e8d7c6b-4a39-4281-9f0e-1d2c3b4a5968"


def large_text_document(target_bytes: int = 1_000_000) -> bytes:
    """A text-document body of exactly ``target_bytes``: a long OCR scan, one chunk per page.

    The default stays below 1 MiB, the size a route usually allows; ask for more to test the
    limit itself.  The output is deterministic, so its dedupe key is stable across runs.
    """
    doc: dict[str, Any] = {
        "taskId": _LARGE_TASK_ID,
        "originalFileUrl": (
            "https://sdstorage.blob.core.windows.net/originals/"
            f"{_WS_INVOICES}/{_LARGE_TASK_ID}/ledger-scan-2024-Q1.pdf"
            "?sv=2022-11-02&se=2026-09-30T23%3A59%3A59Z&sr=b&sp=r&sig=L4rG3oCr%2BbOdY%3D"
        ),
        "workspaceId": _WS_INVOICES,
        "batchId": _BATCH_INVOICES,
        "taskNumber": 5120,
        "externalId": "ARCH-2024-Q1-0001",
        "displayName": "ledger-scan-2024-Q1.pdf",
        "description": "",
        # Widest plausible value while measuring, so the real one can only free up bytes.
        "totalPages": 999_999,
        "lastCheckoutByUserName": "maria.santos@example.com",
        "lastCheckedOutBy": "0d9e8f7a-6b5c-4d3e-a2f1-0b9c8d7e6f5a",
        "lastCheckedOutUntil": "2026-03-14T09:42:10.517Z",
        "chunks": [],
    }
    # Chunks are appended while they fit and ``description`` (ASCII, so one byte per
    # character) takes up the rest, which makes the size exact without re-serializing.
    budget = target_bytes - len(orjson.dumps(doc))
    chunks: list[dict[str, Any]] = []
    pages = 0
    while True:
        chunk = _ocr_page(pages + 1)
        size = len(orjson.dumps(chunk)) + (1 if chunks else 0)
        if size > budget:
            break
        chunks.append(chunk)
        budget -= size
        pages += 1
    doc["chunks"] = chunks
    doc["totalPages"] = pages
    budget = target_bytes - len(orjson.dumps(doc))
    if budget < 0:
        raise ValueError(f"target_bytes={target_bytes} is too small for a text document")
    filler = "Archived ledger scan, reviewed page by page. "
    doc["description"] = (filler * (budget // len(filler) + 1))[:budget]
    body = orjson.dumps(doc)
    assert len(body) == target_bytes
    return body


def _ocr_page(page: int) -> dict[str, Any]:
    entities: list[dict[str, Any]] = [
        _entity("PageHeader", "Header", f"Livro de registo — página {page}", page, 0, 60),
    ]
    for line in range(1, 5):
        group = f"Line {(page - 1) * 4 + line}"
        top = 300 + line * 90
        amount = (page * 37 + line * 113) % 10_000 / 100
        entities += [
            _entity(
                "Description",
                "LineItem",
                f"Artigo {page}-{line}: café, açúcar",
                page,
                top,
                900,
                group,
            ),
            _entity("Quantity", "LineItem", str(line * 3), page, top, 80, group),
            _entity("Amount", "LineItem", f"{amount:.2f} €", page, top, 160, group),
        ]
    return {"chunkNumber": page, "pageNumber": page, "entities": entities}


def _entity(
    kind: str, category: str, value: str, page: int, top: int, width: int, group: str | None = None
) -> dict[str, Any]:
    return {
        "type": kind,
        "category": category,
        "groupName": group,
        "pageNumber": page,
        "chunkNumber": page,
        "value": value,
        "confidence": round(0.9 + (page * 7 + top) % 10 / 100, 2),
        "boundingBox": {"x": 180, "y": top, "width": width, "height": 48},
        "customFormValues": [],
        "qrCode": None,
    }


_GENERATED: dict[tuple[str, str], Callable[[], bytes]] = {
    ("text_document", "large_ocr"): large_text_document,
}


def _expect(
    task_id: str,
    task_number: int | None = None,
    workspace_id: str | None = None,
    batch_id: str | None = None,
    display_name: str | None = None,
    file_count: int = 0,
    external_id: str | None = None,
) -> ExpectedEvent:
    return ExpectedEvent(
        task_id=task_id,
        task_number=task_number,
        workspace_id=workspace_id,
        batch_id=batch_id,
        external_id=external_id,
        display_name=display_name,
        file_count=file_count,
    )


_INVOICE = "invoice-2024-0117.pdf"
_MEETING = "board-meeting-2024-03-12.mp3"
_CONTRACT = "contrato-arrendamento.pdf"
_ERP = "ERP-INV-2024-0117"

EXPECTED: dict[tuple[str, str], ExpectedEvent] = {
    # text_document
    ("text_document", "baseline"): _expect(
        "3f2b8c1e-9a4d-4e6b-8f21-6c0d5a7e9b14",
        1042,
        _WS_INVOICES,
        _BATCH_INVOICES,
        _INVOICE,
        1,
        _ERP,
    ),
    ("text_document", "original_null"): _expect(
        "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f",
        1043,
        _WS_INVOICES,
        _BATCH_INVOICES,
        "receipt-fuel-0311.jpg",
        0,
    ),
    ("text_document", "optional_missing"): _expect("e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6b"),
    ("text_document", "extra_fields"): _expect(
        "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        1050,
        _WS_INVOICES,
        _BATCH_INVOICES,
        _INVOICE,
        1,
        _ERP,
    ),
    ("text_document", "split_part"): _expect(
        "d41f0a2b-8c3e-4d5f-a6b7-c8d9e0f1a2b3",
        2207,
        _WS_INVOICES,
        _BATCH_INVOICES,
        "scan_2024-03 (part 2 of 3)",
        1,
    ),
    ("text_document", "non_ascii"): _expect(
        "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
        1061,
        _WS_INVOICES,
        _BATCH_INVOICES,
        "Fatura nº 123 — São João.pdf",
        1,
        "FAT-nº123/2024",
    ),
    ("text_document", "numeric_ids"): _expect("884213", 1070, "17", None, _INVOICE, 0, "55012"),
    ("text_document", "large_ocr"): _expect(
        _LARGE_TASK_ID,
        5120,
        _WS_INVOICES,
        _BATCH_INVOICES,
        "ledger-scan-2024-Q1.pdf",
        1,
        "ARCH-2024-Q1-0001",
    ),
    # transcript: the docs list no workspaceId or batchId for this kind
    ("transcript", "baseline"): _expect(
        "b7e1c2d3-4f5a-4b6c-9d8e-7f0a1b2c3d4e", 311, display_name=_MEETING, file_count=1
    ),
    ("transcript", "simplified"): _expect(
        "c8d9e0f1-a2b3-4c4d-9e5f-6a7b8c9d0e1f",
        312,
        display_name="support-call-8812.wav",
        file_count=1,
    ),
    ("transcript", "original_null"): _expect(
        "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a4b", 313, display_name="interview-07.m4a"
    ),
    ("transcript", "optional_missing"): _expect("f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c"),
    ("transcript", "extra_fields"): _expect(
        "a3b4c5d6-e7f8-4a9b-8c0d-1e2f3a4b5c6d", 320, _WS_TRANSCRIPTS, None, _MEETING, 1
    ),
    ("transcript", "non_ascii"): _expect(
        "0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d",
        330,
        display_name="Entrevista — São João 🎙️.m4a",
        file_count=1,
    ),
    # transcript_file
    ("transcript_file", "baseline"): _expect(
        "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f", 311, _WS_TRANSCRIPTS, None, _MEETING, 1
    ),
    ("transcript_file", "original_null"): _expect(
        "6e7f8091-a2b3-4c4d-9e5f-6a7b8c9d0e10", 314, _WS_TRANSCRIPTS, None, _MEETING, 1
    ),
    ("transcript_file", "with_original"): _expect(
        "7f8091a2-b3c4-4d5e-8f6a-7b8c9d0e1f20", 315, _WS_TRANSCRIPTS, None, _MEETING, 2
    ),
    ("transcript_file", "optional_missing"): _expect(
        "8091a2b3-c4d5-4e6f-9a7b-8c9d0e1f2a30", file_count=1
    ),
    ("transcript_file", "extra_fields"): _expect(
        "91a2b3c4-d5e6-4f7a-8b8c-9d0e1f2a3b40",
        316,
        _WS_TRANSCRIPTS,
        "2b3c4d5e-6f70-4182-9a3b-4c5d6e7f8091",
        _MEETING,
        1,
    ),
    ("transcript_file", "non_ascii"): _expect(
        "a2b3c4d5-e6f7-4a8b-9c9d-0e1f2a3b4c50", 317, _WS_TRANSCRIPTS, None, "Übersicht 📄.docx", 1
    ),
    # anonymization_file
    ("anonymization_file", "baseline"): _expect(
        "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d60", 88, _WS_ANONYMIZATION, None, _CONTRACT, 1
    ),
    ("anonymization_file", "image_png"): _expect(
        "c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e70", 89, _WS_ANONYMIZATION, None, "id-card-scan.png", 1
    ),
    ("anonymization_file", "original_null"): _expect(
        "d5e6f7a8-b9c0-4d1e-8f2a-3b4c5d6e7f80", 90, _WS_ANONYMIZATION, None, _CONTRACT, 1
    ),
    ("anonymization_file", "with_original"): _expect(
        "e6f7a8b9-c0d1-4e2f-9a3b-4c5d6e7f8090", 91, _WS_ANONYMIZATION, None, _CONTRACT, 2
    ),
    ("anonymization_file", "optional_missing"): _expect(
        "f7a8b9c0-d1e2-4f3a-8b4c-5d6e7f809010", file_count=1
    ),
    ("anonymization_file", "extra_fields"): _expect(
        "08b9c0d1-e2f3-4a4b-9c5d-6e7f80901a20",
        92,
        _WS_ANONYMIZATION,
        "3c4d5e6f-7081-4293-8a4b-5c6d7e8f90a1",
        _CONTRACT,
        1,
    ),
    ("anonymization_file", "non_ascii"): _expect(
        "19c0d1e2-f3a4-4b5c-8d6e-7f80901a2b30",
        93,
        _WS_ANONYMIZATION,
        None,
        "Contrato — Ærøskøbing 契約書.pdf",
        1,
    ),
    # taskNumber "n/a", workspaceId 42, displayName null: tolerated, not rejected
    ("anonymization_file", "wrong_types"): _expect(
        "2ad1e2f3-a4b5-4c6d-9e7f-80901a2b3c40", None, "42", None, None, 1
    ),
}
