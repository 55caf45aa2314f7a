"""The generic JSON source: kind, subject and dedupe from the route's settings."""

from __future__ import annotations

from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import orjson
import pytest

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import RawDelivery
from handlers.sources.generic import GenericJsonSource, GenericSettings

RECEIVED = datetime(2026, 3, 14, 9, 45, tzinfo=UTC)
BODY = orjson.dumps(
    {
        "id": "evt_1",
        "type": "invoice.paid",
        "data": {"object": {"id": "in_42", "customer": {"id": 7}}, "items": [{"sku": "A-1"}]},
    }
)


def source(**settings: Any) -> GenericJsonSource:
    return GenericJsonSource(GenericSettings.model_validate(settings))


def delivery(body: bytes = BODY, headers: dict[str, str] | None = None) -> RawDelivery:
    return RawDelivery(
        delivery_id="d-1",
        route="any",
        source="generic.json",
        received_at=RECEIVED,
        content_type="application/json",
        headers=headers or {},
        body=body,
    )


def test_without_settings_any_object_is_one_event_deduped_by_its_hash() -> None:
    plain = GenericJsonSource()
    assert plain.admit(delivery()) == f"any:generic:sha256:{sha256(BODY).hexdigest()}"
    [event] = plain.normalize(delivery())
    assert (event.vendor, event.kind, event.attributes) == (
        "generic",
        "event",
        {"subject_id": None, "message_id": None},
    )
    assert event.payload == orjson.loads(BODY)


def test_a_standard_webhooks_id_names_the_delivery() -> None:
    plain = GenericJsonSource()
    key = plain.admit(delivery(headers={"webhook-id": "msg_1"}))
    assert key == "any:generic:id:msg_1"
    # The same message sent again, with another timestamp: the same delivery.
    again = plain.admit(delivery(headers={"webhook-id": "msg_1", "webhook-timestamp": "9"}))
    assert again == key


def test_kind_subject_and_attributes_from_paths() -> None:
    configured = source(
        kind_path="type",
        subject_path="data.object.id",
        dedupe_path="id",
        attributes={"customer": "data.object.customer.id", "sku": "data.items.0.sku"},
    )
    assert configured.admit(delivery()) == "any:generic:id:evt_1"
    [event] = configured.normalize(delivery())
    assert event.kind == "invoice.paid"
    assert event.attributes == {
        "customer": 7,
        "sku": "A-1",
        "subject_id": "in_42",
        "message_id": "evt_1",
    }


def test_a_dedupe_header_wins_over_webhook_id() -> None:
    configured = source(dedupe_header="X-GitHub-Delivery")
    headers = {"x-github-delivery": "72d3162e", "webhook-id": "other"}
    assert configured.admit(delivery(headers=headers)) == "any:generic:id:72d3162e"


@pytest.mark.parametrize(
    ("settings", "body", "headers", "message", "status"),
    [
        ({}, b"not json", {}, "body is not JSON", 400),
        ({}, b"[]", {}, "body is not a JSON object", 422),
        ({"kind_path": "type"}, b"{}", {}, "type missing", 422),
        ({"kind_path": "type"}, b'{"type": null}', {}, "type missing", 422),
        (
            {"kind_path": "type"},
            b'{"type": {"a": 1}}',
            {},
            "type is not a short string or number",
            422,
        ),
        ({"dedupe_path": "id"}, b"{}", {}, "id missing", 422),
        ({"dedupe_path": "id"}, b'{"id": 1.5}', {}, "id is not an id", 422),
        ({"dedupe_header": "X-Id"}, b"{}", {}, "header X-Id missing", 422),
        ({"dedupe_header": "X-Id"}, b"{}", {"x-id": "  "}, "header X-Id missing", 422),
    ],
)
def test_refusals(
    settings: dict[str, Any], body: bytes, headers: dict[str, str], message: str, status: int
) -> None:
    with pytest.raises(PayloadRejected) as caught:
        source(**settings).admit(delivery(body, headers))
    assert (caught.value.message, caught.value.status) == (message, status)
    with pytest.raises(NormalizeError, match=message):
        source(**settings).normalize(delivery(body, headers))


def test_a_missing_subject_or_attribute_is_none_not_a_refusal() -> None:
    configured = source(subject_path="data.nothing", attributes={"x": "nope.nope"})
    [event] = configured.normalize(delivery())
    assert event.attributes == {"x": None, "subject_id": None, "message_id": None}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"attributes": {"subject_id": "a"}}, "subject_id is set by the source"),
        ({"attributes": {"1bad": "a"}}, "String should match pattern"),
        ({"kind": ""}, "at least 1 character"),
        ({"dedupe_header": "X Id"}, "String should match pattern"),
    ],
)
def test_bad_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenericSettings.model_validate(settings)
