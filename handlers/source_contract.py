"""``SourceContract``: the tests every source must pass, for a plugin author to subclass.

Provide a ``source`` fixture (the source as a route would build it, settings included) and
``deliveries()``: valid, distinct deliveries of your vendor, made with ``make_delivery``
(recorded bodies, with the headers your source reads).  Optionally ``refusals()``: deliveries
``admit`` must refuse, each with the status it must answer::

    class TestUptimeSource(SourceContract):
        @pytest.fixture
        def source(self) -> UptimeSource:
            return UptimeSource(UptimeSettings())

        def deliveries(self) -> list[RawDelivery]:
            return [make_delivery(body) for body in recorded_bodies()]

        def refusals(self) -> list[tuple[RawDelivery, int]]:
            return [(make_delivery(b'{"status": "sideways"}'), 422)]

What it checks is what hookdock relies on: ``admit`` is cheap, pure and names each delivery
the same way on every attempt (another delivery id, another arrival time) and per route;
``normalize`` is pure, makes events that belong to the delivery, with ids stable across
calls, and that survive the journal's JSON; refusals are one short plain line with a 4xx
status other than 410 (some vendors disable a webhook for good on a 410), never echoing the
body; settings models are strict; kept headers are lower case and never credentials.

It needs pytest (no async: sources are synchronous).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from handlers.errors import NormalizeError, PayloadRejected
from handlers.event import Event, RawDelivery
from handlers.source import Source

__all__ = ["SourceContract", "make_delivery"]

_counter = itertools.count()
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie", "webhook-signature"})
_MAX_MESSAGE = 200


def make_delivery(
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    route: str = "contract",
    source: str = "contract",
    content_type: str = "application/json",
    delivery_id: str | None = None,
    received_at: datetime | None = None,
) -> RawDelivery:
    """A delivery as hookdock journals it: header names lower case, a fresh id by default."""
    return RawDelivery(
        delivery_id=delivery_id or f"contract{next(_counter):018d}",
        route=route,
        source=source,
        received_at=received_at or datetime.now(UTC),
        content_type=content_type,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        body=body,
    )


def _again(delivery: RawDelivery, **changes: Any) -> RawDelivery:
    """The same request arriving again: another id and time (a retry), or ``changes``."""
    update: dict[str, Any] = {
        "delivery_id": f"again{next(_counter):018d}",
        "received_at": delivery.received_at + timedelta(minutes=5),
        **changes,
    }
    return delivery.model_copy(update=update)


class SourceContract:
    """What hookdock relies on from every source; subclass it to run the checks on yours."""

    @pytest.fixture
    def source(self) -> Any:
        raise NotImplementedError("provide a `source` fixture: the source under test")

    def deliveries(self) -> list[RawDelivery]:
        raise NotImplementedError("return valid, distinct deliveries (see make_delivery)")

    def refusals(self) -> list[tuple[RawDelivery, int]]:
        """Deliveries ``admit`` must refuse, with the status each must get."""
        return []

    def _valid(self) -> list[RawDelivery]:
        deliveries = self.deliveries()
        assert deliveries, "deliveries() must give at least one valid delivery"
        return deliveries

    # ------------------------------------------------------------------ shape

    def test_is_a_source(self, source: Any) -> None:
        assert isinstance(source, Source), "vendor, content_types, admit() and normalize()"
        assert isinstance(source.vendor, str) and source.vendor, "a vendor name"
        assert isinstance(source.content_types, tuple) and source.content_types
        for media in source.content_types:
            assert media == media.strip().lower() and ";" not in media, (
                f"content_types holds bare lower-case media types, not {media!r}"
            )
        for method in (source.admit, source.normalize):
            assert not inspect.iscoroutinefunction(method), "sources are synchronous"

    def test_settings_model_is_strict(self, source: Any) -> None:
        model = getattr(type(source), "settings_model", None)
        if model is None:
            pytest.skip("the source takes no settings")
        assert isinstance(model, type) and issubclass(model, BaseModel)
        assert model.model_config.get("extra") == "forbid", "unknown settings must be errors"
        assert model.model_config.get("frozen") is True

    def test_kept_headers_are_lower_case_and_never_credentials(self, source: Any) -> None:
        kept = frozenset(getattr(source, "kept_headers", ()))
        assert all(name == name.lower() for name in kept), "header names in lower case"
        assert not kept & _CREDENTIALS, "credentials are never kept with a delivery"
        default_auth = getattr(source, "default_auth", None)
        if default_auth is not None:
            assert isinstance(default_auth, Mapping) and "type" in default_auth
            assert not {"secret", "secrets", "token", "password"} & set(default_auth), (
                "a default scheme names no secret: the route gives it"
            )

    # ------------------------------------------------------------------ admit

    def test_admit_names_every_attempt_the_same(self, source: Any) -> None:
        for delivery in self._valid():
            key = source.admit(delivery)
            assert isinstance(key, str) and key, "a non-empty dedupe key"
            assert source.admit(_again(delivery)) == key, "a retry must be the same delivery"

    def test_distinct_deliveries_have_distinct_keys(self, source: Any) -> None:
        keys = [source.admit(delivery) for delivery in self._valid()]
        assert len(set(keys)) == len(keys), "deliveries() are distinct, so must their keys be"

    def test_the_same_body_on_another_route_is_another_delivery(self, source: Any) -> None:
        for delivery in self._valid():
            other = _again(delivery, route=f"{delivery.route}-other")
            assert source.admit(other) != source.admit(delivery)

    def test_refusals_are_one_short_plain_line(self, source: Any) -> None:
        for delivery, status in self.refusals():
            with pytest.raises(PayloadRejected) as caught:
                source.admit(delivery)
            refusal = caught.value
            assert refusal.status == status, (refusal.message, refusal.status)
            assert 400 <= refusal.status < 500 and refusal.status != 410
            message = refusal.message
            assert message and "\n" not in message and len(message) <= _MAX_MESSAGE
            if len(delivery.body) >= 16:
                assert delivery.body.decode("utf-8", "replace") not in message, "no echo"

    def test_normalize_raises_only_normalize_error(self, source: Any) -> None:
        # A delivery journaled before a source grew stricter must dead-letter cleanly.
        for delivery, _ in self.refusals():
            with contextlib.suppress(NormalizeError):
                source.normalize(delivery)

    # ------------------------------------------------------------------ normalize

    def test_events_belong_to_their_delivery(self, source: Any) -> None:
        for delivery in self._valid():
            events = list(source.normalize(delivery))
            for event in events:
                assert isinstance(event, Event)
                assert (event.delivery_id, event.route, event.received_at) == (
                    delivery.delivery_id,
                    delivery.route,
                    delivery.received_at,
                )
                assert event.vendor == source.vendor
                assert event.kind, "every event has a kind"
            ids = [event.event_id for event in events]
            assert len(set(ids)) == len(ids), "event ids are unique within a delivery"

    def test_normalize_is_pure_and_its_ids_stable(self, source: Any) -> None:
        for delivery in self._valid():
            first = list(source.normalize(delivery))
            assert list(source.normalize(delivery)) == first
            copy = delivery.model_copy()
            assert [e.event_id for e in source.normalize(copy)] == [e.event_id for e in first]

    def test_events_survive_the_journal(self, source: Any) -> None:
        for delivery in self._valid():
            for event in source.normalize(delivery):
                assert Event.model_validate_json(event.to_json()) == event
