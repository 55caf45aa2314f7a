"""SuperOffice batch tasks against the emulator: the three auth schemes and the app token, JSON
and XML answers, terminal states, stalls reported once per stall, unknown ids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from handlers.emulation import serve_in_thread
from handlers.poller import PolledEvent, PollRejected, VendorUnavailable, Watched
from handlers.superoffice.batch_tasks import BatchTasksPoller, BatchTasksSettings, state_number
from handlers.superoffice.client import SuperOfficeApi, SuperOfficeClient, from_xml
from handlers.superoffice.emulator import EmulatorSettings, SuperOfficeEmulator

pytestmark = pytest.mark.anyio

BASIC = {"type": "basic", "username": "emulator", "password": "emulator-password"}
APP = "app-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def superoffice() -> Iterator[tuple[SuperOfficeEmulator, str]]:
    emu = SuperOfficeEmulator(EmulatorSettings(app_token="app-1", step_seconds=0.05))
    with serve_in_thread(emu.app, "superoffice") as url:
        yield emu, url


def api(url: str, auth: dict[str, Any] = BASIC, app_token: str | None = APP) -> SuperOfficeApi:
    return SuperOfficeApi.model_validate(
        {"base_url": url, "auth": auth, "app_token": app_token, "allow_networks": ["127.0.0.1/32"]}
    )


class Context:
    def __init__(self, keys: Collection[str]) -> None:
        self.poller = "so"
        self.keys = list(keys)

    async def seen(self, subjects: Collection[str]) -> set[str]:
        return set()

    async def watches(self) -> list[Watched]:
        now = datetime.now(UTC)
        return [Watched(key=k, added_at=now) for k in self.keys]


@pytest.mark.parametrize(
    "auth",
    [
        BASIC,
        {"type": "bearer", "token": "emulator-token"},
        {"type": "soticket", "ticket": "7T:emulator-ticket"},
    ],
)
async def test_each_auth_scheme(superoffice: tuple[SuperOfficeEmulator, str], auth: Any) -> None:
    _, url = superoffice
    client = SuperOfficeClient(api(url, auth))
    try:
        task_id = await client.create_batch_task({"Name": "Export"})
        info = await client.batch_task(task_id)
    finally:
        await client.aclose()
    assert task_id >= 997 and info["Id"] == task_id and info["Name"] == "Export"


@pytest.mark.parametrize(
    ("auth", "app_token"),
    [({**BASIC, "password": "wrong"}, "app-1"), (BASIC, None), (BASIC, "other-app")],
)
async def test_refused_credentials(
    superoffice: tuple[SuperOfficeEmulator, str], auth: Any, app_token: str | None
) -> None:
    _, url = superoffice
    client = SuperOfficeClient(api(url, auth, app_token))
    try:
        with pytest.raises(PollRejected, match="HTTP 401") as refused:
            await client.create_batch_task({"Name": "x"})
    finally:
        await client.aclose()
    assert "wrong" not in str(refused.value) and "other-app" not in str(refused.value)


def test_xml_for_a_client_that_does_not_ask_for_json(
    superoffice: tuple[SuperOfficeEmulator, str],
) -> None:
    emu, url = superoffice
    headers = {"authorization": "Bearer emulator-token", "so-apptoken": "app-1"}
    # A task that stops at 40 %: what it answers does not depend on how fast the test runs.
    created = httpx.post(f"{url}/api/v1/BatchTask", json={"Name": "stall x"}, headers=headers)
    assert created.headers["content-type"].startswith("application/xml")
    task_id = int(from_xml(created.content, "POST"))
    as_xml = httpx.get(f"{url}/api/v1/BatchTask/{task_id}", headers=headers)
    assert as_xml.text.startswith("<BatchTaskInfo ")
    as_json = httpx.get(
        f"{url}/api/v1/BatchTask/{task_id}", headers={**headers, "accept": "application/json"}
    ).json()
    read = from_xml(as_xml.content, "GET")
    assert read["Id"] == task_id and read["Name"] == "stall x"
    assert state_number(read["State"]) in (1, 3) and state_number(as_json["State"]) in (1, 3)
    assert read["Result"] is None and read["FileName"] is None
    assert isinstance(read["ProgressPercent"], int) and read["ProgressPercent"] <= 40
    assert emu.info(task_id) is not None


def test_xml_with_a_document_type_is_refused() -> None:
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><BatchTaskInfo><Name>&a;</Name></BatchTaskInfo>'
    with pytest.raises(VendorUnavailable, match="document type"):
        from_xml(bomb, "GET")


@pytest.mark.parametrize(
    ("value", "number"),
    [(4, 4), ("5", 5), ("Succeeded", 4), ("succeededmanualcleanup", 6), ("Acquired", 2),
     ("All", None), (9, None), (True, None), (None, None)],
)  # fmt: skip
def test_state_number(value: object, number: int | None) -> None:
    assert state_number(value) == number


async def test_ends_stalls_and_unknown_ids(superoffice: tuple[SuperOfficeEmulator, str]) -> None:
    _, url = superoffice
    now = [1000.0]
    poller = BatchTasksPoller(
        BatchTasksSettings(api=api(url), stalled_seconds=60), clock=lambda: now[0]
    )
    try:
        ids = [
            str(await poller.client.create_batch_task({"Name": name}))
            for name in ("ok", "fail now", "stall here")
        ]
        ctx = Context([*ids, "123456"])
        found: list[PolledEvent] = []
        state: Any = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # a poll interval: the emulator's tasks move in real time
            result = await poller.poll(state, ctx)
            state = result.state
            found += [e for e in result.found if isinstance(e, PolledEvent)]
            ctx.keys = [k for k in ctx.keys if k not in result.closed]
            if ctx.keys == [ids[2]] and state["progress"][ids[2]]["percent"] == 40:
                break
        kinds = {e.task_id: e.kind for e in found}
        assert kinds == {
            ids[0]: "batch_task.succeeded",
            ids[1]: "batch_task.failed",
            "123456": "batch_task.missing",
        }
        # Nothing moves for 59 s: not yet; at 60 s: one stall; later polls: no more.
        now[0] += 59
        assert (await poller.poll(state, ctx)).found == ()
        now[0] += 1
        stalled = await poller.poll(state, ctx)
        (event,) = stalled.found
        assert isinstance(event, PolledEvent) and event.kind == "batch_task.stalled"
        assert event.payload["ProgressPercent"] == 40 and event.payload["quiet_seconds"] == 60
        assert stalled.state["progress"][ids[2]]["stalled"] is True
        now[0] += 600
        assert (await poller.poll(stalled.state, ctx)).found == ()
    finally:
        await poller.aclose()
