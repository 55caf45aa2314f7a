"""Every built-in source passes ``SourceContract``, the same tests a plugin author subclasses."""

from __future__ import annotations

import orjson
import pytest

from handlers.errors import PayloadRejected
from handlers.event import RawDelivery
from handlers.sources.generic import GenericJsonSource, GenericSettings
from handlers.sources.smartdocumentor import SOURCES, SmartDocumentorSource
from handlers.sources.superoffice import SuperOfficeSettings, SuperOfficeWebhookSource
from handlers.testing import SourceContract, make_delivery
from tests import sd_payloads, so_payloads


class TestSuperOfficeContract(SourceContract):
    @pytest.fixture
    def source(self) -> SuperOfficeWebhookSource:
        return SuperOfficeWebhookSource(SuperOfficeSettings(export_test_events=True))

    def deliveries(self) -> list[RawDelivery]:
        return [make_delivery(body) for _, body in so_payloads.all_cases()]

    def refusals(self) -> list[tuple[RawDelivery, int]]:
        return [
            (make_delivery(b"nope"), 400),
            (make_delivery(orjson.dumps({"EventId": "e-1"})), 422),
            (make_delivery(orjson.dumps({"Event": "contact.changed", "Entity": "x" * 40})), 422),
        ]


class TestGenericContract(SourceContract):
    @pytest.fixture
    def source(self) -> GenericJsonSource:
        return GenericJsonSource(GenericSettings(kind_path="type", subject_path="data.id"))

    def deliveries(self) -> list[RawDelivery]:
        bodies = [{"type": "a.created", "data": {"id": n}} for n in range(3)]
        with_id = make_delivery(orjson.dumps(bodies[0]), headers={"webhook-id": "msg_1"})
        return [with_id, *(make_delivery(orjson.dumps(b)) for b in bodies[1:])]

    def refusals(self) -> list[tuple[RawDelivery, int]]:
        return [
            (make_delivery(b"{"), 400),
            (make_delivery(orjson.dumps({"data": {"id": "no kind here at all"}})), 422),
        ]


@pytest.mark.parametrize("kind", sd_payloads.KINDS)
class TestSmartDocumentorContract(SourceContract):
    @pytest.fixture
    def source(self, kind: str) -> SmartDocumentorSource:
        return SOURCES[f"smartdocumentor.{kind}"]()

    @pytest.fixture(autouse=True)
    def _kind(self, kind: str) -> None:
        self.kind = kind

    def deliveries(self) -> list[RawDelivery]:
        return [
            make_delivery(body)
            for kind, _, body in sd_payloads.all_cases()
            if kind == self.kind and len(body) < 100_000
        ]

    def refusals(self) -> list[tuple[RawDelivery, int]]:
        other = next(b for k, v, b in sd_payloads.all_cases() if k != self.kind)
        return [
            (make_delivery(orjson.dumps({"workspaceId": "7", "note": "no task id"})), 422),
            (make_delivery(other), 422),
        ]


class _KeyPerAttempt(GenericJsonSource):
    """Broken on purpose: a retry would become a second delivery."""

    def admit(self, delivery: RawDelivery) -> str:
        return delivery.delivery_id


class _EchoingRefusal(GenericJsonSource):
    """Broken on purpose: its refusal quotes the body, and answers 410."""

    def admit(self, delivery: RawDelivery) -> str:
        raise PayloadRejected(f"bad: {delivery.body.decode()}", status=410)


def test_the_contract_fails_a_source_whose_retries_are_new_deliveries() -> None:
    with pytest.raises(AssertionError, match="retry must be the same delivery"):
        TestGenericContract().test_admit_names_every_attempt_the_same(_KeyPerAttempt())


def test_the_contract_fails_a_refusal_that_answers_410_or_echoes_the_body() -> None:
    contract = TestGenericContract()
    contract.refusals = lambda: [(make_delivery(b'{"secret": "0123456789abcdef"}'), 410)]  # type: ignore[method-assign]
    with pytest.raises(AssertionError):
        contract.test_refusals_are_one_short_plain_line(_EchoingRefusal())
