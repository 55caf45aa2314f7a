"""``smartdocumentor.batches`` against the emulator: progress, then one ``batch.completed``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from handlers.poller import PolledEvent, PollResult
from handlers.smartdocumentor.batches import BatchesPoller, BatchesSettings
from handlers.smartdocumentor.emulator import Emulator
from handlers.sources.smartdocumentor import task_subject
from tests.smartdocumentor.conftest import FakeContext, api_settings

pytestmark = pytest.mark.anyio

Emu = tuple[Emulator, str]


def poller(url: str, **settings: Any) -> BatchesPoller:
    options: dict[str, Any] = {"api": api_settings(url), **settings}
    return BatchesPoller(BatchesSettings.model_validate(options), clock=time.time)


def completed(result: PollResult) -> list[PolledEvent]:
    return [i for i in result.found if isinstance(i, PolledEvent) and i.kind == "batch.completed"]


async def test_a_batch_completes_once_after_its_last_task(emulator: Emu) -> None:
    emu, url = emulator
    batch = emu.add_batch("March", None, 1)
    other = emu.add_batch("April", None, 1)
    tasks = [emu.add_task(batch_id=batch) for _ in range(5)]
    emu.add_task(batch_id=other)
    emu.set_faults(drop_webhooks=set(tasks))  # "exported" at once, as far as the API says
    emu.review(limit=4)
    context = FakeContext()
    p = poller(url)
    try:
        context.subjects |= {task_subject(str(t)) for t in tasks[:3]}
        first = await p.poll(None, context)
        # The fourth is exported at the vendor but not in the journal yet (reported missing).
        context.subjects.add(task_subject(str(tasks[3])) + ":missing")
        second = await p.poll(first.state, context)
        emu.review()
        context.subjects.add(task_subject(str(tasks[4])))
        third = await p.poll(second.state, context)
        fourth = await p.poll(third.state, context)
    finally:
        await p.aclose()
    assert completed(first) == [] and first.state["progress"][str(batch)] == {
        "total": 5,
        "exported": 3,
    }
    assert completed(second) == [] and second.state["progress"][str(batch)]["exported"] == 4
    [event] = completed(third)
    assert event.batch_id == str(batch) and event.dedupe_key.endswith(f":{batch}")
    assert event.payload["task_ids"] == [str(t) for t in tasks]
    assert event.payload["total_tasks"] == 5 and event.payload["seconds_taken"] >= 0
    assert str(batch) not in third.state["progress"] and str(other) in third.state["progress"]
    assert completed(fourth) == [] and batch in fourth.state["completed"]


async def test_only_the_named_batches_are_watched(emulator: Emu) -> None:
    emu, url = emulator
    wanted = emu.add_batch("wanted", None, 1)
    emu.add_batch("other", None, 1)
    p = poller(url, batch_ids=[wanted])
    try:
        result = await p.poll(None, FakeContext())
    finally:
        await p.aclose()
    assert set(result.state["progress"]) == {str(wanted)}
