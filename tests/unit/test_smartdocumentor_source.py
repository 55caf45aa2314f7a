"""The SmartDocumentor sources, from recorded payloads to events and from bad bodies to replies."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Event, RawDelivery
from handlers.source import Source
from handlers.sources.smartdocumentor import (
    SOURCES,
    AnonymizationFileSource,
    SmartDocumentorSource,
    TextDocumentSource,
    TranscriptFileSource,
    TranscriptSource,
)
from tests.sd_payloads import EXPECTED, KINDS, PAYLOAD_DIR, all_cases, large_text_document, load

RECEIVED = datetime(2026, 3, 14, 9, 45, 0, tzinfo=UTC)
SIG = "AbCdEf%2Bsecret%3D"
SAS = (
    "https://sdstorage.blob.core.windows.net/exports/abc.pdf"
    f"?sv=2022-11-02&se=2026-12-01T10%3A00%3A00Z&sr=b&sp=r&sig={SIG}"
)
# The same link to a file whose name tells no export kind: a body with it and no chunks or
# paragraphs fits every kind's route (shape_of says None), so field checks can be tested alone.
NEUTRAL_SAS = SAS.replace("abc.pdf", "abc")
FILE_KINDS = ("transcript_file", "anonymization_file")
CASES = all_cases()


def source_for(kind: str) -> SmartDocumentorSource:
    return SOURCES[f"smartdocumentor.{kind}"]()


def delivery(
    body: bytes, *, route: str = "sd-invoices", delivery_id: str = "d-0001", kind: str = "x"
) -> RawDelivery:
    return RawDelivery(
        delivery_id=delivery_id,
        route=route,
        source=f"smartdocumentor.{kind}",
        received_at=RECEIVED,
        content_type="application/json",
        body=body,
    )


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def normalize_one(kind: str, body: bytes) -> Event:
    events = source_for(kind).normalize(delivery(body, kind=kind))
    assert len(events) == 1
    return events[0]


def signatures(url: str) -> list[str]:
    """The ``sig`` value as it appears in the URL and decoded, so neither form can leak."""
    raw = [p.split("=", 1)[1] for p in urlsplit(url).query.split("&") if p.startswith("sig=")]
    return raw + parse_qs(urlsplit(url).query).get("sig", [])


# --- the registry and the protocol -------------------------------------------------------------


def test_sources_registry_names_every_kind() -> None:
    registry = SOURCES
    assert registry == {
        "smartdocumentor.text_document": TextDocumentSource,
        "smartdocumentor.transcript": TranscriptSource,
        "smartdocumentor.transcript_file": TranscriptFileSource,
        "smartdocumentor.anonymization_file": AnonymizationFileSource,
    }


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_satisfies_the_protocol(name: str) -> None:
    source = SOURCES[name]()
    assert isinstance(source, Source)
    assert source.vendor == "smartdocumentor"
    assert source.content_types == ("application/json",)
    assert name == f"smartdocumentor.{source.kind}"


# --- the fixtures themselves -------------------------------------------------------------------


def test_every_case_has_an_expectation_and_every_expectation_a_case() -> None:
    assert {(kind, variant) for kind, variant, _ in CASES} == set(EXPECTED)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "variant", ["baseline", "original_null", "optional_missing", "extra_fields", "non_ascii"]
)
def test_every_kind_has_the_common_variants(kind: str, variant: str) -> None:
    assert (kind, variant) in EXPECTED


def test_fixture_files_are_named_kind__variant() -> None:
    for path in PAYLOAD_DIR.iterdir():
        kind, sep, _ = path.stem.partition("__")
        assert path.suffix == ".json", path.name
        assert sep, path.name
        assert kind in KINDS, path.name


def test_load_reads_files_and_generated_cases() -> None:
    assert (
        load("anonymization_file", "baseline")
        == (PAYLOAD_DIR / "anonymization_file__baseline.json").read_bytes()
    )
    assert load("text_document", "large_ocr") == large_text_document()


def test_large_text_document_is_exact_deterministic_and_under_one_mib() -> None:
    body = large_text_document()
    assert len(body) == 1_000_000 < 1024 * 1024
    assert body == large_text_document()
    chunks = orjson.loads(body)["chunks"]
    assert sum(len(chunk["entities"]) for chunk in chunks) > 1000
    assert len(large_text_document(1024 * 1024 + 1)) == 1024 * 1024 + 1


def test_large_text_document_refuses_an_impossible_size() -> None:
    with pytest.raises(ValueError, match="too small"):
        large_text_document(100)


# --- from payload to event ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "variant", "body"), CASES, ids=[f"{k}-{v}" for k, v, _ in CASES])
def test_case_admits_and_normalizes_to_expected_fields(
    kind: str, variant: str, body: bytes
) -> None:
    expected = EXPECTED[kind, variant]
    source = source_for(kind)
    raw = delivery(body, route="sd-route", delivery_id="d-42", kind=kind)

    key = source.admit(raw)
    assert key == f"sd-route:{kind}:{expected['task_id']}:{hashlib.sha256(body).hexdigest()}"

    [event] = source.normalize(raw)
    assert (event.event_id, event.delivery_id, event.route) == ("d-42-0", "d-42", "sd-route")
    assert (event.vendor, event.kind, event.received_at) == ("smartdocumentor", kind, RECEIVED)
    assert {
        "task_id": event.task_id,
        "task_number": event.task_number,
        "workspace_id": event.workspace_id,
        "batch_id": event.batch_id,
        "external_id": event.external_id,
        "display_name": event.display_name,
        "file_count": len(event.files),
    } == expected
    assert event.payload == orjson.loads(body)


@pytest.mark.parametrize(("kind", "variant", "body"), CASES, ids=[f"{k}-{v}" for k, v, _ in CASES])
def test_files_follow_the_urls_in_the_body(kind: str, variant: str, body: bytes) -> None:
    parsed = orjson.loads(body)
    event = normalize_one(kind, body)
    expected = []
    if kind in FILE_KINDS:
        expected.append(("exported", parsed["exportedFileUrl"]))
    if parsed.get("originalFileUrl") is not None:
        expected.append(("original", parsed["originalFileUrl"]))
    assert [(f.role, f.url) for f in event.files] == expected
    assert all(f.expires_at is not None for f in event.files)


@pytest.mark.parametrize(("kind", "variant", "body"), CASES, ids=[f"{k}-{v}" for k, v, _ in CASES])
def test_repr_never_shows_a_signature(kind: str, variant: str, body: bytes) -> None:
    event = normalize_one(kind, body)
    secrets = [sig for f in event.files for sig in signatures(f.url)]
    shown = [repr(event), str(event), *(repr(f) for f in event.files)]
    for text in shown:
        for secret in secrets:
            assert secret not in text


def test_file_ref_repr_keeps_the_redacted_url() -> None:
    event = normalize_one("anonymization_file", load("anonymization_file", "baseline"))
    [file] = event.files
    assert SIG not in repr(file)
    assert "secret" not in repr(file)
    assert "sig=REDACTED" in repr(file)
    assert "se=2026-12-01T10:00:00Z" in repr(file)


def test_expires_at_comes_from_the_se_parameter() -> None:
    event = normalize_one("transcript_file", load("transcript_file", "with_original"))
    assert [(f.role, f.expires_at) for f in event.files] == [
        ("exported", datetime(2026, 3, 15, 9, 42, 10, tzinfo=UTC)),
        ("original", datetime(2026, 9, 11, 8, 0, 0, tzinfo=UTC)),
    ]


def test_expires_at_is_none_without_se() -> None:
    url = "https://sdstorage.blob.core.windows.net/exports/a.pdf?sv=2022-11-02&sig=x%3D"
    event = normalize_one("anonymization_file", dumps({"taskId": "t1", "exportedFileUrl": url}))
    assert event.files[0].expires_at is None


def test_split_document_keeps_its_split_fields_in_the_payload() -> None:
    event = normalize_one("text_document", load("text_document", "split_part"))
    assert event.display_name == "scan_2024-03 (part 2 of 3)"
    assert event.payload["splitFromTaskId"] == "f0e1d2c3-b4a5-4968-8776-655443322110"
    assert event.payload["parentTaskId"] == "f0e1d2c3-b4a5-4968-8776-655443322110"


def test_text_kinds_ignore_an_exported_file_url() -> None:
    body = dumps({"taskId": "t1", "exportedFileUrl": "not a url"})
    source = source_for("text_document")
    source.admit(delivery(body))
    assert normalize_one("text_document", body).files == ()


def test_a_utf8_bom_is_tolerated() -> None:
    body = b"\xef\xbb\xbf" + dumps({"taskId": "t1", "displayName": "São João.pdf"})
    source = source_for("transcript")
    assert source.admit(delivery(body)).endswith(hashlib.sha256(body).hexdigest())
    assert normalize_one("transcript", body).display_name == "São João.pdf"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        (0, 0),
        ("0042", 42),
        ("12a", None),
        ("", None),
        ("-3", None),
        ("٣", None),  # an Arabic-Indic digit: isdigit() says yes, the vendor would not send it
        ("²", None),
        ("9" * 5000, None),  # past Python's int-from-string limit
        (True, None),
        (1.5, None),
        (None, None),
        ([1], None),
    ],
)
def test_task_number_tolerates_wrong_types(value: object, expected: int | None) -> None:
    event = normalize_one("transcript", dumps({"taskId": "t1", "taskNumber": value}))
    assert event.task_number == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ws-1", "ws-1"), (17, "17"), ("", None), (True, None), (1.5, None), ({"id": 1}, None)],
)
def test_ids_and_names_tolerate_wrong_types(value: object, expected: str | None) -> None:
    body = {"taskId": "t1", "workspaceId": value, "batchId": value, "externalId": value}
    event = normalize_one("text_document", dumps(body))
    assert (event.workspace_id, event.batch_id, event.external_id) == (expected,) * 3


@pytest.mark.parametrize(("value", "expected"), [("a.pdf", "a.pdf"), (12, None), ("", None)])
def test_display_name_is_text_or_nothing(value: object, expected: str | None) -> None:
    event = normalize_one("text_document", dumps({"taskId": "t1", "displayName": value}))
    assert event.display_name == expected


@pytest.mark.parametrize("task_id", [884213, 0, -1, "TASK-1"])
def test_task_id_as_number_or_text(task_id: int | str) -> None:
    body = dumps({"taskId": task_id})
    assert (
        source_for("text_document")
        .admit(delivery(body))
        .startswith(f"sd-invoices:text_document:{task_id}:")
    )
    assert normalize_one("text_document", body).task_id == str(task_id)


# --- dedupe keys -------------------------------------------------------------------------------


def test_the_same_body_resent_has_the_same_key() -> None:
    body = load("anonymization_file", "baseline")
    source = source_for("anonymization_file")
    first = source.admit(delivery(body, delivery_id="d-1"))
    assert source.admit(delivery(body, delivery_id="d-2")) == first
    assert AnonymizationFileSource().admit(delivery(body, delivery_id="d-3")) == first


def test_a_re_export_of_the_same_task_has_a_new_key() -> None:
    body = orjson.loads(load("anonymization_file", "baseline"))
    again = {**body, "exportedFileUrl": SAS.replace("abc.pdf", "abc-v2.pdf")}
    source = source_for("anonymization_file")
    assert source.admit(delivery(dumps(body))) != source.admit(delivery(dumps(again)))


def test_the_key_hashes_the_exact_bytes() -> None:
    body = load("transcript", "baseline")
    source = source_for("transcript")
    assert source.admit(delivery(body)) != source.admit(delivery(body + b"\n"))


def test_another_route_has_another_key() -> None:
    body = load("text_document", "baseline")
    source = source_for("text_document")
    assert source.admit(delivery(body, route="a")) != source.admit(delivery(body, route="b"))


def test_another_kind_has_another_key() -> None:
    # The same body on routes of two kinds that both take it (it shows neither kind).
    text = dumps({"taskId": "t1"})
    keys = {source_for(kind).admit(delivery(text)) for kind in ("text_document", "transcript")}
    file = dumps({"taskId": "t1", "exportedFileUrl": NEUTRAL_SAS})
    keys |= {source_for(kind).admit(delivery(file)) for kind in FILE_KINDS}
    assert len(keys) == len(KINDS)


# --- rejections --------------------------------------------------------------------------------

ALL = KINDS
TEXT = ("text_document", "transcript")
REJECTIONS: list[tuple[str, tuple[str, ...], bytes, str, int]] = [
    ("not json", ALL, b"taskId=1", "body is not JSON", 400),
    ("empty", ALL, b"", "body is not JSON", 400),
    ("truncated", ALL, b'{"taskId": "t1"', "body is not JSON", 400),
    ("latin-1", ALL, '{"taskId": "São"}'.encode("latin-1"), "body is not JSON", 400),
    ("nan", ALL, b'{"taskId": NaN}', "body is not JSON", 400),
    ("array", ALL, b'[{"taskId": "t1"}]', "body is not a JSON object", 422),
    ("string", ALL, b'"t1"', "body is not a JSON object", 422),
    ("null", ALL, b"null", "body is not a JSON object", 422),
    ("no taskId", ALL, dumps({"exportedFileUrl": NEUTRAL_SAS}), "taskId missing", 422),
    *(
        (f"{name} taskId", ALL, dumps({"taskId": v, "exportedFileUrl": NEUTRAL_SAS}), m, 422)
        for name, v, m in (
            ("null", None, "taskId missing"),
            ("empty", "", "taskId missing"),
            ("blank", "  ", "taskId missing"),
        )
    ),
    *(
        (
            f"taskId {value!r}",
            ALL,
            dumps({"taskId": value, "exportedFileUrl": NEUTRAL_SAS}),
            "taskId is not a string or number",
            422,
        )
        for value in (True, False, 1.5, 1e30, [1], {"id": 1})
    ),
    (
        "taskId beyond 64 bits",
        ALL,
        b'{"taskId": 123456789012345678901234567890}',
        "taskId is not a string or number",
        422,
    ),
    ("no exportedFileUrl", FILE_KINDS, dumps({"taskId": "t1"}), "exportedFileUrl missing", 422),
    (
        "null exportedFileUrl",
        FILE_KINDS,
        dumps({"taskId": "t1", "exportedFileUrl": None}),
        "exportedFileUrl missing",
        422,
    ),
    *(
        (
            f"exportedFileUrl {value!r}",
            FILE_KINDS,
            dumps({"taskId": "t1", "exportedFileUrl": value}),
            "exportedFileUrl is not an http(s) URL",
            422,
        )
        for value in (
            "",
            42,
            ["https://a.example/x"],
            "sdstorage/exports/abc.pdf",
            "ftp://sdstorage.blob.core.windows.net/exports/abc.pdf",
            "file:///etc/passwd",
            "https://",
            "https://[::1/abc.pdf",
            "https://sdstorage.blob.core.windows.net/exports/a\nb.pdf",
            f" {SAS}",
            SAS.replace("https://", "javascript://"),
        )
    ),
    *(
        (
            f"originalFileUrl {value!r}",
            ALL,
            dumps({"taskId": "t1", "exportedFileUrl": NEUTRAL_SAS, "originalFileUrl": value}),
            "originalFileUrl is not an http(s) URL",
            422,
        )
        for value in (
            "",
            0,
            False,
            {"url": SAS},
            "data:application/pdf;base64,AAAA",
            SAS.replace("https://", "http:/"),
        )
    ),
]


def _rejection_params() -> list[Any]:
    return [
        pytest.param(kind, body, message, status, id=f"{kind}-{name}")
        for name, kinds, body, message, status in REJECTIONS
        for kind in kinds
    ]


@pytest.mark.parametrize(("kind", "body", "message", "status"), _rejection_params())
def test_admit_rejects_with_a_plain_message(
    kind: str, body: bytes, message: str, status: int
) -> None:
    with pytest.raises(PayloadRejected) as caught:
        source_for(kind).admit(delivery(body))
    assert (caught.value.message, str(caught.value), caught.value.status) == (
        message,
        message,
        status,
    )
    assert not caught.value.message.startswith("hookdock")


@pytest.mark.parametrize(("kind", "body", "message", "status"), _rejection_params())
def test_normalize_turns_a_rejection_into_a_normalize_error(
    kind: str, body: bytes, message: str, status: int
) -> None:
    with pytest.raises(NormalizeError) as caught:
        source_for(kind).normalize(delivery(body, delivery_id="d-9"))
    text = str(caught.value)
    for part in (message, kind, "d-9"):
        assert part in text
    for secret in ("sdstorage", SIG, "secret"):
        assert secret not in text


@pytest.mark.parametrize("kind", TEXT)
def test_text_kinds_need_no_exported_file_url(kind: str) -> None:
    assert source_for(kind).admit(delivery(dumps({"taskId": "t1"})))


@pytest.mark.parametrize("kind", ALL)
def test_null_or_missing_original_file_url_is_fine(kind: str) -> None:
    for extra in ({}, {"originalFileUrl": None}):
        exported = {"exportedFileUrl": NEUTRAL_SAS} if kind in FILE_KINDS else {}
        body = dumps({"taskId": "t1", **exported, **extra})
        source_for(kind).admit(delivery(body))
        assert [f.role for f in normalize_one(kind, body).files] == (
            ["exported"] if kind in FILE_KINDS else []
        )


def test_rejection_messages_never_echo_the_body() -> None:
    body = dumps({"taskId": "t1", "exportedFileUrl": SAS.replace("https", "gopher")})
    with pytest.raises(PayloadRejected) as caught:
        source_for("transcript_file").admit(delivery(body))
    assert SIG not in caught.value.message
    assert "gopher" not in caught.value.message


@pytest.mark.parametrize(("kind", "variant", "body"), all_cases())
def test_event_json_is_byte_for_byte_pydantics(kind: str, variant: str, body: bytes) -> None:
    event = normalize_one(kind, body)
    assert event.to_json() == event.model_dump_json().encode()
    assert event.to_json(indent=True) == event.model_dump_json(indent=2).encode()


def test_event_json_falls_back_to_pydantic_for_what_orjson_cannot_write() -> None:
    from decimal import Decimal

    from handlers.testing import make_event

    for odd in (Decimal("1.10"), 2**70):
        event = make_event(payload={"amount": odd})
        assert event.to_json() == event.model_dump_json().encode()
        assert event.to_json(indent=True) == event.model_dump_json(indent=2).encode()
