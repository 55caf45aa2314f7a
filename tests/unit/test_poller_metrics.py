"""Pollers' figures on ``/metrics`` come from the journal, so every replica reports the same."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.journal.memory import MemoryJournal
from receiver.journal.pollers import PollOutcome
from receiver.metrics import Metrics

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("poller", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name.startswith("hookdock_poller")
    }


async def test_poller_runs_failures_and_findings_are_scraped_from_the_journal() -> None:
    journal = MemoryJournal()
    try:
        assert await journal.acquire_lease("poller:reconcile", "me/1/x", 600)
        ok = PollOutcome(
            ok=True, state={"cursor": 1}, found=3, calls=7, error=None, next_in_seconds=60
        )
        failed = PollOutcome(
            ok=False, state=None, found=0, calls=2, error="HTTP 503", next_in_seconds=10
        )
        assert await journal.save_poll("reconcile", "me/1/x", ok)
        assert await journal.save_poll("reconcile", "me/1/x", failed)
        found = samples((await Metrics().scrape(journal, frozenset())).decode())
    finally:
        await journal.close()
    assert found[("hookdock_poller_polls_total", "reconcile")] == 2
    assert found[("hookdock_poller_failures_in_a_row", "reconcile")] == 1
    assert found[("hookdock_poller_found_total", "reconcile")] == 3
    assert found[("hookdock_poller_api_calls_total", "reconcile")] == 9
    assert found[("hookdock_poller_last_success_timestamp_seconds", "reconcile")] > 0
