"""Wrong URL, wrong kind: a SmartDocumentor body of one export kind posted to another's route
is refused at the door with a line the reviewer can act on."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from handlers.errors import PayloadRejected
from handlers.event import RawDelivery
from handlers.sources.smartdocumentor import FILE_EXPORT, SOURCES, shape_of
from tests.sd_payloads import KINDS, all_cases

FILE_KINDS = ("transcript_file", "anonymization_file")
# A body without its optional fields may not tell which "URL to file" kind it is.
SHOWN = {("anonymization_file", "optional_missing"): FILE_EXPORT}
WHAT = {
    FILE_EXPORT: "a URL to file export",
    "text_document": "a text document export",
    "transcript": "a transcript export",
    "transcript_file": "a transcript file export (URL to file)",
    "anonymization_file": "an anonymization file export (URL to file)",
}
TAKES = {
    "text_document": "text documents",
    "transcript": "transcripts",
    "transcript_file": "transcript files (URL to file)",
    "anonymization_file": "anonymized files (URL to file)",
}


def delivery(body: bytes) -> RawDelivery:
    return RawDelivery(
        delivery_id="d-1",
        route="r",
        source="smartdocumentor.x",
        received_at=datetime(2026, 3, 14, tzinfo=UTC),
        content_type="application/json",
        body=body,
    )


CASES = [
    pytest.param(kind, variant, body, id=f"{kind}__{variant}")
    for kind, variant, body in all_cases()
]


@pytest.mark.parametrize(("kind", "variant", "body"), CASES)
def test_every_recorded_body_shows_its_own_kind(kind: str, variant: str, body: bytes) -> None:
    assert shape_of(orjson.loads(body)) == SHOWN.get((kind, variant), kind)


@pytest.mark.parametrize(("kind", "variant", "body"), CASES)
def test_a_body_of_another_kind_is_refused_naming_both(
    kind: str, variant: str, body: bytes
) -> None:
    shown = SHOWN.get((kind, variant), kind)
    for route_kind in KINDS:
        source = SOURCES[f"smartdocumentor.{route_kind}"]()
        if route_kind == kind or (shown == FILE_EXPORT and route_kind in FILE_KINDS):
            source.admit(delivery(body))
            continue
        with pytest.raises(PayloadRejected) as caught:
            source.admit(delivery(body))
        assert caught.value.status == 422
        assert caught.value.message == f"this is {WHAT[shown]}; this URL takes {TAKES[route_kind]}"


def test_the_issues_example_line() -> None:
    body = next(b for k, v, b in all_cases() if (k, v) == ("transcript", "baseline"))
    with pytest.raises(PayloadRejected) as caught:
        SOURCES["smartdocumentor.text_document"]().admit(delivery(body))
    assert caught.value.message == "this is a transcript export; this URL takes text documents"


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"exportedFileUrl": "https://h.example/x.docx"}, "transcript_file"),
        ({"exportedFileUrl": "https://h.example/x.pdf", "totalPages": 2}, "anonymization_file"),
        # Only the documented marks decide: an extension alone is no anonymized document.
        ({"exportedFileUrl": "https://h.example/x.pdf"}, FILE_EXPORT),
        ({"exportedFileUrl": "https://h.example/x.docx", "totalPages": 2}, FILE_EXPORT),
        ({"exportedFileUrl": "not a url"}, None),
        ({"chunks": [], "paragraphs": []}, None),
        ({}, None),
    ],
)
def test_only_documented_marks_decide(fields: dict[str, object], shown: str | None) -> None:
    assert shape_of({"taskId": "t1", **fields}) == shown


def test_a_delivery_journaled_before_the_check_still_normalizes() -> None:
    body = next(b for k, v, b in all_cases() if (k, v) == ("transcript", "baseline"))
    [event] = SOURCES["smartdocumentor.text_document"]().normalize(delivery(body))
    assert event.kind == "text_document"
