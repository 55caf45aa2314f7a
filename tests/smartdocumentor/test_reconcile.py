"""``smartdocumentor.reconcile`` against the emulator, with a stand-in for the journal."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from handlers.poller import PolledDelivery, PolledEvent, PollRejected, PollResult
from handlers.smartdocumentor.emulator import Emulator, call_in_loop
from handlers.smartdocumentor.reconcile import ReconcilePoller, ReconcileSettings
from handlers.sources.smartdocumentor import TextDocumentSource, task_subject
from tests.smartdocumentor.conftest import FakeContext, api_settings

pytestmark = pytest.mark.anyio

Emu = tuple[Emulator, str]


def poller(url: str, clock: list[float] | None = None, **settings: Any) -> ReconcilePoller:
    options: dict[str, Any] = {"api": api_settings(url), "grace_seconds": 0, **settings}
    now = clock or [time.time()]
    return ReconcilePoller(ReconcileSettings.model_validate(options), clock=lambda: now[0])


def journaled(context: FakeContext, result: PollResult) -> None:
    """What the host's intake would record: every finding's subject."""
    context.subjects |= {item.subject for item in result.found if item.subject}


def missing(result: PollResult) -> dict[str, PolledEvent]:
    return {
        item.task_id or "": item
        for item in result.found
        if isinstance(item, PolledEvent) and item.kind == "task.missing"
    }


async def test_finds_exactly_the_dropped_webhooks_and_recovers_text(emulator: Emu) -> None:
    emu, url = emulator
    texts = [emu.add_task(workspace_id=1) for _ in range(12)]
    transcripts = [emu.add_task(workspace_id=2) for _ in range(3)]
    emu.add_task(workspace_id=1)  # never reviewed
    dropped = {texts[2], texts[7], transcripts[1]}
    emu.set_faults(drop_webhooks=dropped)
    emu.review(limit=15)
    # The journal holds the webhooks that were "sent" (here: no URL, so none were posted).
    sent = set(texts + transcripts) - dropped
    context = FakeContext(subjects={task_subject(str(t)) for t in sent})
    p = poller(url, route="sd-invoices")
    try:
        result = await p.poll(None, context)
        journaled(context, result)
        again = await p.poll(result.state, context)
    finally:
        await p.aclose()
    assert set(missing(result)) == {str(t) for t in dropped}
    recovered = [item for item in result.found if isinstance(item, PolledDelivery)]
    assert {orjson.loads(d.body)["taskId"] for d in recovered} == {texts[2], texts[7]}
    assert {d.route for d in recovered} == {"sd-invoices"}
    assert missing(result)[str(texts[2])].payload["recovered"] is True
    assert missing(result)[str(transcripts[1])].payload["recovered"] is False
    assert result.state["totals"] == {"missing": 3, "recovered": 2}
    # The next, overlapping window knows them now: nothing is reported twice.
    assert again.found == ()


async def test_a_recovered_export_has_the_webhooks_dedupe_key(emulator: Emu) -> None:
    emu, url = emulator
    task = emu.add_task(workspace_id=1)
    emu.set_faults(drop_webhooks={task})
    emu.review()
    p = poller(url, route="sd-invoices")
    try:
        result = await p.poll(None, FakeContext())
    finally:
        await p.aclose()
    [recovered] = [i for i in result.found if isinstance(i, PolledDelivery)]
    webhook_body = emu.tasks[task].export  # the bytes the webhook would have carried
    assert webhook_body is not None and recovered.body == webhook_body


async def test_a_webhook_gets_its_grace_period(emulator: Emu) -> None:
    emu, url = emulator
    late, lost = emu.add_task(), emu.add_task()
    emu.set_faults(drop_webhooks={late, lost})
    emu.review()
    clock = [time.time()]
    context = FakeContext()
    p = poller(url, clock, grace_seconds=600)
    try:
        first = await p.poll(None, context)
        assert first.found == () and set(first.state["waiting"]) == {str(late), str(lost)}
        context.subjects.add(task_subject(str(late)))  # its webhook came after all
        clock[0] += 601
        second = await p.poll(first.state, context)
    finally:
        await p.aclose()
    assert set(missing(second)) == {str(lost)} and second.state["waiting"] == {}


async def test_reprocessing_only_when_asked(emulator: Emu) -> None:
    emu, url = emulator
    task = emu.add_task(workspace_id=2)
    emu.set_faults(drop_webhooks={task})
    emu.review()
    p = poller(url)
    try:
        await p.poll(None, FakeContext())
    finally:
        await p.aclose()
    assert "sdtask/restartprocessing" not in emu.calls
    loud = poller(url, reprocess_missing=True)
    try:
        # The emulator has no restart endpoint: the attempt shows as a refusal (404).
        with pytest.raises(PollRejected, match="restartprocessing"):
            await loud.poll(None, FakeContext())
    finally:
        await loud.aclose()
    assert emu.calls["sdtask/restartprocessing"] == 1


async def test_a_failed_post_goes_back_to_review_and_subjects_agree(emulator: Emu) -> None:
    emu, _url = emulator
    task = emu.add_task(workspace_id=1)
    call_in_loop(emu, emu.review_and_post())  # no URL configured: the post fails
    assert emu.tasks[task].webhook == "failed"
    assert TextDocumentSource().subject(f"r:text_document:{task}:abc") == task_subject(str(task))
