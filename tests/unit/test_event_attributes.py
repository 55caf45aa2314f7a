"""Event attributes: what a source names its events by, for routing rules and templates."""

from __future__ import annotations

import orjson
import pytest

from handlers.errors import PermanentSinkError
from handlers.event import Event
from handlers.sources.smartdocumentor import TextDocumentSource
from handlers.templates import EventTemplate, check_template
from handlers.testing import make_delivery, make_event
from receiver.routing import Router, RuleConfig
from tests.sd_payloads import load

CONTACT = make_event(
    vendor="superoffice",
    kind="contact.changed",
    task_id=None,
    workspace_id=None,
    attributes={"entity": "contact", "primary_key": 1234, "tenant": "Cust54321"},
)
SALE = CONTACT.model_copy(
    update={"kind": "sale.deleted", "attributes": {"entity": "sale", "tenant": "Cust1"}}
)


def router(*rules: dict[str, object]) -> Router:
    return Router([RuleConfig.model_validate(r) for r in rules], ["default"])


def test_rules_match_entity_and_event_name() -> None:
    rules = router(
        {"kind": "sale.deleted", "sinks": ["deletes"]},
        {"attributes": {"entity": "contact", "tenant": ["Cust54321", "Cust2"]}, "sinks": ["crm"]},
    )
    assert rules.sinks_for(CONTACT) == ("crm",)
    assert rules.sinks_for(SALE) == ("deletes",)


def test_numbers_and_strings_match_across_types_and_a_missing_attribute_never_matches() -> None:
    assert router({"attributes": {"primary_key": "1234"}, "sinks": ["a"]}).sinks_for(CONTACT) == (
        "a",
    )
    assert router({"attributes": {"nope": "x"}, "sinks": ["a"]}).sinks_for(CONTACT) == ("default",)


def test_templates_render_attributes_and_none_for_a_missing_one() -> None:
    template = EventTemplate(
        "{vendor}/{attributes.tenant}/{attributes.entity}/{attributes.nope}/{event_id}.json",
        sink="t",
    )
    assert template.render(CONTACT) == (
        f"superoffice/Cust54321/contact/none/{CONTACT.event_id}.json"
    )


def test_each_template_field_alone_is_the_one_of_the_whole_set() -> None:
    fields = CONTACT.template_fields()
    assert fields["received_date"] == CONTACT.received_at.strftime("%Y-%m-%d")
    for name, value in fields.items():
        assert CONTACT.template_field(name) == value, name
    assert CONTACT.template_field("attributes.nope") == "none"


def test_templates_still_refuse_unknown_plain_fields() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        check_template("{tenant}/{event_id}")
    with pytest.raises(ValueError, match="unknown field"):
        check_template("{attributes.}/{event_id}")


def test_an_attribute_that_would_leave_the_folder_is_refused() -> None:
    event = CONTACT.model_copy(update={"attributes": {"tenant": "../etc"}})
    with pytest.raises(PermanentSinkError, match=r"attributes\.tenant"):
        EventTemplate("{attributes.tenant}/{event_id}", sink="t").render(event)


def test_smartdocumentor_templates_render_as_before() -> None:
    event = make_event(task_id="T-1", workspace_id="7")
    rendered = EventTemplate("{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json", sink="t")
    assert rendered.render(event) == f"smartdocumentor/7/T-1/text_document-{event.event_id}.json"
    assert (
        EventTemplate("{task_number:>05}-{event_id}", sink="t")
        .render(event)
        .startswith(f"{event.task_number:>05}")
    )


def test_the_event_json_keeps_its_fields_and_adds_attributes_and_alert() -> None:
    event = make_event()
    data = Event.model_validate_json(event.to_json()).model_dump()
    assert {"task_id", "workspace_id", "batch_id", "external_id", "attributes", "alert"} <= set(
        data
    )
    # An event stored before attributes existed still reads.
    old = orjson.loads(event.to_json())
    del old["attributes"], old["alert"]
    assert Event.model_validate_json(orjson.dumps(old)).attributes == {}


def test_a_smartdocumentor_events_json_is_the_old_one_plus_attributes_and_alert() -> None:
    [event] = TextDocumentSource().normalize(make_delivery(load("text_document", "baseline")))
    data = orjson.loads(event.to_json())
    before = {
        "event_id",
        "delivery_id",
        "vendor",
        "kind",
        "route",
        "received_at",
        "task_id",
        "task_number",
        "workspace_id",
        "batch_id",
        "external_id",
        "display_name",
        "files",
        "payload",
    }
    assert set(data) == before | {"attributes", "alert"}
    assert data["alert"] is None
    assert data["attributes"] == {
        name: data[name]
        for name in ("task_id", "task_number", "workspace_id", "batch_id", "external_id")
    }
