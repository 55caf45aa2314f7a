"""The example source passes hookdock's ``SourceContract``, plus a few checks of its own."""

from __future__ import annotations

import json

import pytest
from hookdock_example_source import UptimeSettings, UptimeSource

from handlers.event import RawDelivery
from handlers.testing import SourceContract, make_delivery


def body(event_id: str, status: str = "down") -> bytes:
    return json.dumps(
        {"id": event_id, "status": status, "check": {"id": "chk-7", "name": "api"}}
    ).encode()


class TestUptimeSourceContract(SourceContract):
    @pytest.fixture
    def source(self) -> UptimeSource:
        return UptimeSource(UptimeSettings())

    def deliveries(self) -> list[RawDelivery]:
        return [
            make_delivery(body("evt_1")),
            make_delivery(body("evt_2", "up"), headers={"X-Uptime-Attempt": "2"}),
        ]

    def refusals(self) -> list[tuple[RawDelivery, int]]:
        return [
            (make_delivery(b"down!"), 400),
            (make_delivery(body("evt_3", "sideways")), 422),
            (make_delivery(b'{"status": "down"}'), 422),
        ]


def test_events_carry_the_check_as_attributes() -> None:
    [event] = UptimeSource().normalize(
        make_delivery(body("evt_1"), headers={"X-Uptime-Attempt": "3"})
    )
    assert (event.kind, event.attributes) == (
        "check.down",
        {"check_id": "chk-7", "check_name": "api", "attempt": "3"},
    )


def test_down_only_makes_no_event_of_up() -> None:
    source = UptimeSource(UptimeSettings(down_only=True))
    assert source.normalize(make_delivery(body("evt_1", "up"))) == []


def test_settings_are_strict() -> None:
    with pytest.raises(ValueError, match="down_onyl"):
        UptimeSettings.model_validate({"down_onyl": True})
