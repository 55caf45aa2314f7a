"""The SuperOffice webhook source: recorded payloads to events, dedupe across retries, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Event, RawDelivery
from handlers.source import Source
from handlers.sources.superoffice import SuperOfficeSettings, SuperOfficeWebhookSource
from tests.so_payloads import EXPECTED, all_cases, load

RECEIVED = datetime(2026, 3, 14, 9, 45, tzinfo=UTC)


def delivery(
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    delivery_id: str = "d-0001",
    route: str = "so",
) -> RawDelivery:
    return RawDelivery(
        delivery_id=delivery_id,
        route=route,
        source="superoffice.webhook",
        received_at=RECEIVED,
        content_type="application/json",
        headers=headers or {},
        body=body,
    )


def test_is_a_source_with_its_vendors_scheme_and_headers() -> None:
    source = SuperOfficeWebhookSource()
    assert isinstance(source, Source)
    assert source.default_auth == {
        "type": "hmac",
        "header": "X-SuperOffice-Signature",
        "encoding": "base64",
    }
    assert source.kept_headers == {
        "x-superoffice-event",
        "x-superoffice-eventid",
        "x-superoffice-retry",
        "x-hook-test",
    }


@pytest.mark.parametrize(("stem", "body"), all_cases(), ids=[stem for stem, _ in all_cases()])
def test_recorded_payloads_become_the_expected_events(stem: str, body: bytes) -> None:
    source = SuperOfficeWebhookSource()
    source.admit(delivery(body))
    events = source.normalize(delivery(body))
    expected = EXPECTED[stem]
    if expected is None:
        assert events == []
        return
    [event] = events
    assert (event.vendor, event.kind, event.attributes, bool(event.alert)) == (
        "superoffice",
        expected["kind"],
        expected["attributes"],
        expected["alert"],
    )
    assert event.payload == orjson.loads(body), "the body goes out as sent, unknown fields too"
    assert (event.event_id, event.delivery_id, event.route) == ("d-0001-0", "d-0001", "so")
    assert event.task_id is None and event.workspace_id is None
    assert Event.model_validate_json(event.to_json()) == event


def test_every_recorded_payload_has_an_expectation() -> None:
    assert {stem for stem, _ in all_cases()} == set(EXPECTED)


def test_deletes_carry_their_values() -> None:
    [event] = SuperOfficeWebhookSource().normalize(delivery(load("sale_deleted")))
    assert event.payload["Values"]["heading"] == "Annual licence renewal"


def test_the_errors_event_is_an_alert_naming_the_webhook_and_tenant() -> None:
    [event] = SuperOfficeWebhookSource().normalize(delivery(load("webhook_errors")))
    assert event.alert is not None
    assert "'hookdock export'" in event.alert and "Cust54321" in event.alert


def test_a_retry_is_the_same_delivery() -> None:
    body = load("contact_changed")
    source = SuperOfficeWebhookSource()
    first = source.admit(delivery(body, {"x-superoffice-retry": "0"}))
    # Another attempt: another retry count, another delivery id, another timestamp in the body.
    again = orjson.loads(body)
    again["Timestamp"] = "2026-03-14T09:46:17Z"
    retry = source.admit(
        delivery(orjson.dumps(again), {"x-superoffice-retry": "2"}, delivery_id="d-0002")
    )
    assert first == retry == "so:superoffice:0b3e9a84-5d21-4f6c-8e0a-7c9d1b2e3f45"


def test_the_event_id_header_stands_in_for_the_body_and_case_does_not_matter() -> None:
    body = orjson.loads(load("contact_changed"))
    event_id = body.pop("EventId")
    source = SuperOfficeWebhookSource()
    key = source.admit(delivery(orjson.dumps(body), {"x-superoffice-eventid": event_id.upper()}))
    assert key == source.admit(delivery(load("contact_changed")))


def test_another_route_has_another_key() -> None:
    body = load("contact_changed")
    source = SuperOfficeWebhookSource()
    assert source.admit(delivery(body, route="a")) != source.admit(delivery(body, route="b"))


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (load("test"), {}),
        (orjson.dumps({"Event": "contact.changed"}), {"x-hook-test": "true"}),
        (b"{}", {"x-hook-test": "TRUE"}),
    ],
    ids=["Event test", "X-Hook-Test header", "test header, empty body"],
)
def test_the_test_event_is_accepted_and_makes_no_event(
    body: bytes, headers: dict[str, str]
) -> None:
    source = SuperOfficeWebhookSource()
    assert source.admit(delivery(body, headers)).startswith("so:superoffice:")
    assert source.normalize(delivery(body, headers)) == []


def test_the_test_event_is_exported_when_the_route_asks() -> None:
    source = SuperOfficeWebhookSource(SuperOfficeSettings(export_test_events=True))
    [event] = source.normalize(delivery(load("test"), {"x-hook-test": "true"}))
    assert event.kind == "test"
    assert event.attributes["tenant"] == "Cust54321"


def test_settings_are_strict() -> None:
    with pytest.raises(ValueError, match="export_tests"):
        SuperOfficeSettings.model_validate({"export_tests": True})


REFUSALS = [
    (b"<xml/>", "body is not JSON", 400),
    (b"[1]", "body is not a JSON object", 422),
    (orjson.dumps({"EventId": "x"}), "Event missing", 422),
    (orjson.dumps({"EventId": "x", "Event": ["contact.changed"]}), "Event is not a string", 422),
    (orjson.dumps({"Event": "contact.changed"}), "EventId missing", 422),
    (orjson.dumps({"Event": "contact.changed", "EventId": ""}), "EventId is not a string", 422),
]


@pytest.mark.parametrize(("body", "message", "status"), REFUSALS)
def test_refusals_are_one_plain_line(body: bytes, message: str, status: int) -> None:
    with pytest.raises(PayloadRejected) as caught:
        SuperOfficeWebhookSource().admit(delivery(body))
    assert (caught.value.message, caught.value.status) == (message, status)
    with pytest.raises(NormalizeError, match=message):
        SuperOfficeWebhookSource().normalize(delivery(body))


def test_wrong_types_in_optional_fields_are_left_out_not_refused() -> None:
    body = orjson.loads(load("contact_changed"))
    body.update(PrimaryKey="1234", ChangedByAssociateId=True, ContextIdentifier={"id": 1})
    [event] = SuperOfficeWebhookSource().normalize(delivery(orjson.dumps(body)))
    attributes = event.attributes
    assert (attributes["primary_key"], attributes["associate_id"], attributes["tenant"]) == (
        None,
        None,
        None,
    )


def test_a_bom_is_tolerated() -> None:
    body = b"\xef\xbb\xbf" + load("contact_changed")
    [event] = SuperOfficeWebhookSource().normalize(delivery(body))
    assert event.kind == "contact.changed"
