"""Wrong URL, wrong kind: a SmartDocumentor body of one export kind posted to another's route
is refused at the door with a line the reviewer can act on."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from handlers.errors import PayloadRejected
from handlers.event import RawDelivery
from handlers.sources.smartdocumentor import SOURCES, shape_of
from tests.sd_payloads import KINDS, all_cases

WHAT = {
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
    assert shape_of(orjson.loads(body)) == kind


@pytest.mark.parametrize(("kind", "variant", "body"), CASES)
def test_a_body_of_another_kind_is_refused_naming_both(
    kind: str, variant: str, body: bytes
) -> None:
    for route_kind in KINDS:
        source = SOURCES[f"smartdocumentor.{route_kind}"]()
        if route_kind == kind:
            continue
        with pytest.raises(PayloadRejected) as caught:
            source.admit(delivery(body))
        assert caught.value.status == 422
        assert caught.value.message == f"this is {WHAT[kind]}; this URL takes {TAKES[route_kind]}"


def test_the_issues_example_line() -> None:
    body = next(b for k, v, b in all_cases() if (k, v) == ("transcript", "baseline"))
    with pytest.raises(PayloadRejected) as caught:
        SOURCES["smartdocumentor.text_document"]().admit(delivery(body))
    assert caught.value.message == "this is a transcript export; this URL takes text documents"


def test_a_delivery_journaled_before_the_check_still_normalizes() -> None:
    body = next(b for k, v, b in all_cases() if (k, v) == ("transcript", "baseline"))
    [event] = SOURCES["smartdocumentor.text_document"]().normalize(delivery(body))
    assert event.kind == "text_document"
