"""The SmartDocumentor client against the emulator: tokens, paging, and what errors mean."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest

from handlers.poller import PollRejected, RateLimited, VendorUnavailable
from handlers.smartdocumentor.client import SmartDocumentorClient
from handlers.smartdocumentor.emulator import Emulator
from tests.smartdocumentor.conftest import api_settings

pytestmark = pytest.mark.anyio

Emu = tuple[Emulator, str]
DAY_AGO = datetime.now(UTC) - timedelta(days=1)


async def all_ids(client: SmartDocumentorClient, **filters: object) -> list[int]:
    ids: list[int] = []
    async for page in client.status_pages(start=DAY_AGO, **filters):  # type: ignore[arg-type]
        ids += [t["taskId"] for t in page]
    return ids


async def test_pages_to_the_end_with_one_cached_token(emulator: Emu) -> None:
    emu, url = emulator
    created = [emu.add_task() for _ in range(25)]
    client = SmartDocumentorClient(api_settings(url))
    try:
        assert await all_ids(client) == created
        assert await all_ids(client) == created
    finally:
        await client.aclose()
    assert emu.calls["/connect/token"] == 1
    assert emu.calls["sdtask/statuslistpaginated"] == 6  # 3 pages, twice


async def test_filters_reach_the_vendor(emulator: Emu) -> None:
    emu, url = emulator
    one = emu.add_task(workspace_id=1)
    emu.add_task(workspace_id=2)
    old = emu.add_task(workspace_id=1, created_on=DAY_AGO - timedelta(hours=1))
    client = SmartDocumentorClient(api_settings(url))
    try:
        assert await all_ids(client, workspace_ids=[1]) == [one]
        assert await all_ids(client, task_status=[6]) == []
        listed = await client.status_list(start=DAY_AGO - timedelta(days=1), workspace_ids=[1])
        assert [t["taskId"] for t in listed] == [old, one]
        assert (await client.status(task_id=one))["taskStatusText"] == "ToReview"
    finally:
        await client.aclose()


async def test_a_token_that_expires_while_paging_is_renewed_once(emulator: Emu) -> None:
    emu, url = emulator
    created = [emu.add_task() for _ in range(45)]
    emu.set_faults(token_calls=2)  # every token dies after two calls: 401 on the third
    client = SmartDocumentorClient(api_settings(url))
    try:
        assert await all_ids(client) == created
    finally:
        await client.aclose()
    assert emu.calls["/connect/token"] == 3  # the first, then one per 401


async def test_page_edges_neither_stop_early_nor_loop(emulator: Emu) -> None:
    emu, url = emulator
    created = [emu.add_task() for _ in range(20)]
    emu.set_faults(empty_last_page=True)
    client = SmartDocumentorClient(api_settings(url))
    try:
        assert await all_ids(client) == created
        emu.set_faults(empty_last_page=False, grow_between_pages=True)
        ids = await all_ids(client)
        # Tasks created while paging are listed too (they sort after those of the window).
        assert ids[:20] == created and len(ids) > 20 and len(ids) == len(set(ids))
    finally:
        await client.aclose()


async def test_what_failures_mean(emulator: Emu) -> None:
    emu, url = emulator
    client = SmartDocumentorClient(api_settings(url))
    try:
        emu.set_faults(rate_limit=1, retry_after=7)
        with pytest.raises(RateLimited) as limited:
            await client.status_list(start=DAY_AGO)
        assert limited.value.retry_after == 7
        emu.set_faults(fail_5xx=1)
        with pytest.raises(VendorUnavailable, match="HTTP 503"):
            await client.status_list(start=DAY_AGO)
        with pytest.raises(PollRejected, match="HTTP 404"):
            await client.status(task_id=999)
        assert await client.status_list(start=DAY_AGO) == []
    finally:
        await client.aclose()


async def test_bad_credentials_are_a_refusal_without_the_secret(emulator: Emu) -> None:
    _, url = emulator
    client = SmartDocumentorClient(api_settings(url, client_secret="wrong-secret-value"))
    try:
        with pytest.raises(PollRejected) as refused:
            await client.status_list(start=DAY_AGO)
    finally:
        await client.aclose()
    assert "wrong-secret-value" not in str(refused.value)
    assert "wrong-secret-value" not in repr(client.settings)


async def test_loopback_needs_an_explicit_opt_in(emulator: Emu) -> None:
    emu, url = emulator
    client = SmartDocumentorClient(api_settings(url, allow_networks=()))
    try:
        with pytest.raises(PollRejected, match="allow_networks"):
            await client.status_list(start=DAY_AGO)
    finally:
        await client.aclose()
    assert emu.calls == {}


async def test_batches_and_tasks(emulator: Emu) -> None:
    _emu, url = emulator
    client = SmartDocumentorClient(api_settings(url))
    try:
        batch = await client.create_batch("March invoices", "from the scanner", 1)
        task = await client.create_task(
            {"displayName": "inv-1", "batchId": batch["batchId"], "externalId": "ext-1"}
        )
        got = await client.get_batch(batch["batchId"])
        pages = [page async for page in client.batch_pages()]
    finally:
        await client.aclose()
    assert (got["displayName"], got["totalTasks"]) == ("March invoices", 1)
    assert (task["batchId"], task["externalId"], task["taskNumber"]) == (
        batch["batchId"],
        "ext-1",
        1,
    )
    assert [b["batchId"] for page in pages for b in page] == [batch["batchId"]]


async def test_a_token_is_replaced_shortly_before_it_expires(emulator: Emu) -> None:
    emu, url = emulator
    emu.settings = emu.settings.model_copy(update={"token_seconds": 100})
    now = [1000.0]
    client = SmartDocumentorClient(api_settings(url, token_margin_seconds=60), clock=lambda: now[0])
    try:
        await client.status_list(start=DAY_AGO)
        now[0] += 39  # 61 s of its 100 left: still good
        await client.status_list(start=DAY_AGO)
        assert emu.calls["/connect/token"] == 1
        now[0] += 2  # under the 60 s margin: a new one before the call
        await client.status_list(start=DAY_AGO)
    finally:
        await client.aclose()
    assert emu.calls["/connect/token"] == 2
    assert "sdtask/statuslist" in emu.calls and emu.calls["sdtask/statuslist"] == 3


async def test_a_slow_vendor_is_a_timeout_and_retryable(emulator: Emu) -> None:
    emu, url = emulator
    client = SmartDocumentorClient(api_settings(url, timeout_seconds=0.2))
    try:
        await client.status_list(start=DAY_AGO)  # the token, while answers are quick
        emu.set_faults(slow_seconds=1.0)
        with pytest.raises(VendorUnavailable, match="timed out"):
            await client.status_list(start=DAY_AGO)
    finally:
        await client.aclose()


async def test_file_links_work_until_they_expire(emulator: Emu) -> None:
    emu, _url = emulator
    task = emu.add_task(workspace_id=3)  # a "URL to file" (transcript) workspace
    emu.review()
    export = emu.tasks[task].export
    assert export is not None
    link = orjson.loads(export)["exportedFileUrl"]
    emu.settings = emu.settings.model_copy(update={"file_link_seconds": -1})
    expired = emu.file_link(task)
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as response:
            assert response.status == 200
            assert await response.read() == f"emulated document of task {task}\n".encode()
        async with session.get(expired) as response:
            assert response.status == 403
        async with session.get(link.replace("sig=", "sig=0")) as response:
            assert response.status == 403
