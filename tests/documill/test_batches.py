"""``documill.batches`` against the emulator: per-task events, files with their expiry, one
``batch.completed``, ``batch.expired`` when the window runs out, and nothing read twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.documill.batches import BatchesPoller, BatchesSettings
from handlers.documill.emulator import DocumillEmulator
from handlers.poller import PolledEvent, PollResult
from tests.documill.conftest import WatchContext, settings

pytestmark = pytest.mark.anyio


def poller(url: str, **options: Any) -> BatchesPoller:
    return BatchesPoller(BatchesSettings(api=settings(url), **options))


async def post(emu: DocumillEmulator, url: str, ids: list[str]) -> tuple[str, list[str]]:
    p = poller(url)
    try:
        answer = await p.client.post_batch(
            {"template": "t", "tasks": [{"params": {"id": i}} for i in ids]}
        )
    finally:
        await p.aclose()
    return answer["id"], answer["tasks"]


async def run(p: BatchesPoller, ctx: WatchContext, state: Any) -> PollResult:
    result = await p.poll(state, ctx)
    ctx.close(result.closed)
    return result


def events(result: PollResult) -> list[PolledEvent]:
    return [e for e in result.found if isinstance(e, PolledEvent)]


async def test_tasks_then_the_batch(dynamo: tuple[DocumillEmulator, str]) -> None:
    emu, url = dynamo
    emu.set_faults(fail_records={"r2"})
    batch_id, task_ids = await post(emu, url, ["r1", "r2", "r3"])
    ctx = WatchContext()
    ctx.open[batch_id] = {"tasks": dict(zip(task_ids, ["r1", "r2", "r3"], strict=True))}
    p = poller(url, link_seconds=600)
    try:
        state: Any = None
        found: list[PolledEvent] = []
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while batch_id in ctx.open and datetime.now(UTC) < deadline:
            before = datetime.now(UTC)
            result = await run(p, ctx, state)
            state, found = result.state, found + events(result)
        reads = emu.calls["task"]
        again = await run(p, ctx, state)
    finally:
        await p.aclose()
    assert batch_id not in ctx.open and again.found == ()
    assert reads == 3, "each finished task is read once"
    by_kind = {e.kind: e for e in found if e.kind != "task.completed"}
    assert [e.kind for e in found].count("task.completed") == 2
    failed = by_kind["task.failed"]
    assert failed.external_id == "r2" and failed.files == ()
    assert "Template error" in failed.payload["task"]["errors"][0]
    done = next(e for e in found if e.external_id == "r1")
    (ref,) = done.files
    assert ref.role == "exported" and ref.url.startswith(f"{url}/files/{batch_id}/")
    assert ref.expires_at is not None
    assert (
        before + timedelta(seconds=590)
        < ref.expires_at
        < datetime.now(UTC) + timedelta(seconds=600)
    )
    summary = by_kind["batch.completed"].payload
    assert (summary["succeeded"], summary["failed"], summary["failed_tasks"]) == (
        2,
        1,
        [failed.task_id],
    )
    assert len({e.dedupe_key for e in found}) == len(found) == 4


async def test_a_batch_that_never_completes_expires(dynamo: tuple[DocumillEmulator, str]) -> None:
    emu, url = dynamo
    emu.set_faults(never_complete=True)
    batch_id, _ = await post(emu, url, ["a", "b"])
    ctx = WatchContext()
    ctx.open[batch_id] = {}
    p = poller(url, window_seconds=0.3)
    try:
        first = await run(p, ctx, None)
        assert batch_id in ctx.open
        assert first.state["progress"][batch_id]["tasks"] == 2
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        result = first
        while batch_id in ctx.open and datetime.now(UTC) < deadline:
            result = await run(p, ctx, result.state)
    finally:
        await p.aclose()
    (expired,) = [e for e in events(result) if e.kind == "batch.expired"]
    assert expired.payload["reason"] == "its 24-hour window ran out"
    assert len(expired.payload["unfinished_tasks"]) == 1 and batch_id not in ctx.open


async def test_a_batch_dynamo_forgot_is_expired(dynamo: tuple[DocumillEmulator, str]) -> None:
    _, url = dynamo
    ctx = WatchContext()
    ctx.open["unknown"] = {}
    p = poller(url)
    try:
        result = await run(p, ctx, None)
    finally:
        await p.aclose()
    assert [e.kind for e in events(result)] == ["batch.expired"] and not ctx.open
