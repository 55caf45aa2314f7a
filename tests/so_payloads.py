"""SuperOffice webhook bodies for tests, as files in ``payloads/superoffice/``.

Written from SuperOffice's documented fields (``EventId``, ``Timestamp``, ``Event``, ``Entity``,
``PrimaryKey``, ``Changes``, ``FieldValues``, ``ContextIdentifier``, ``ChangedByAssociateId``,
``WebhookName``, ``Values`` on deletes), not captured from a live tenant; the variants add
unknown fields, leave out the optional ones, and use non-ASCII values.  Read as raw bytes, as
a route receives them (the signature is over these exact bytes).

``EXPECTED`` holds, per ``<name>__<variant>``, the event the source must make: its ``kind``,
``attributes`` and whether it carries an ``alert``.  The test event makes none by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["EXPECTED", "PAYLOAD_DIR", "all_cases", "load"]

PAYLOAD_DIR = Path(__file__).parent / "payloads" / "superoffice"


def load(name: str, variant: str = "baseline") -> bytes:
    return (PAYLOAD_DIR / f"{name}__{variant}.json").read_bytes()


def all_cases() -> list[tuple[str, bytes]]:
    """Every ``(stem, body)``, sorted by file name."""
    return [(path.stem, path.read_bytes()) for path in sorted(PAYLOAD_DIR.glob("*__*.json"))]


def _attributes(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "entity": None,
        "primary_key": None,
        "tenant": None,
        "associate_id": None,
        "webhook_name": None,
        "superoffice_event_id": None,
    }
    return {**base, **values}


EXPECTED: dict[str, dict[str, Any] | None] = {
    "test__baseline": None,
    "contact_changed__baseline": {
        "kind": "contact.changed",
        "alert": False,
        "attributes": _attributes(
            entity="contact",
            primary_key=1234,
            tenant="Cust54321",
            associate_id=5,
            webhook_name="hookdock export",
            superoffice_event_id="0b3e9a84-5d21-4f6c-8e0a-7c9d1b2e3f45",
        ),
    },
    "contact_changed__extra_fields": {
        "kind": "contact.changed",
        "alert": False,
        "attributes": _attributes(
            entity="contact",
            primary_key=1235,
            tenant="Cust54321",
            associate_id=7,
            webhook_name="hookdock export",
            superoffice_event_id="1c4f0b95-6e32-4a7d-9f1b-8d0e2c3f4a56",
        ),
    },
    "contact_changed__optional_missing": {
        "kind": "contact.changed",
        "alert": False,
        # Entity comes from the event name when the body leaves it out.
        "attributes": _attributes(
            entity="contact",
            primary_key=1236,
            superoffice_event_id="2d5a1ca6-7f43-4b8e-a02c-9e1f3d4a5b67",
        ),
    },
    "contact_changed__non_ascii": {
        "kind": "contact.changed",
        "alert": False,
        "attributes": _attributes(
            entity="contact",
            primary_key=4711,
            tenant="Cust54321",
            associate_id=12,
            webhook_name="Eksport til arkiv \u2013 Ørsta",
            superoffice_event_id="3e6b2db7-8054-4c9f-b13d-af2a4e5b6c78",
        ),
    },
    "sale_deleted__baseline": {
        "kind": "sale.deleted",
        "alert": False,
        "attributes": _attributes(
            entity="sale",
            primary_key=880,
            tenant="Cust54321",
            associate_id=5,
            webhook_name="hookdock export",
            superoffice_event_id="4f7c3ec8-9165-4da0-82e4-b03b5f6c7d89",
        ),
    },
    "sale_deleted__non_ascii": {
        "kind": "sale.deleted",
        "alert": False,
        "attributes": _attributes(
            entity="sale",
            primary_key=881,
            tenant="Cust54321",
            associate_id=6,
            webhook_name="hookdock export",
            superoffice_event_id="5a8d4fd9-a276-4eb1-93f5-c14c6a7d8e90",
        ),
    },
    "webhook_errors__baseline": {
        "kind": "webhook.errors",
        "alert": True,
        "attributes": _attributes(
            entity="webhook",
            primary_key=42,
            tenant="Cust54321",
            associate_id=0,
            webhook_name="hookdock export",
            superoffice_event_id="6b9e50ea-b387-4fc2-a406-d25d7b8e9fa1",
        ),
    },
}
