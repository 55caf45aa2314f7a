"""Posting a Dynamo batch: every problem named before sending (task and key), then JSON or
multipart with ``param.<name>`` parts against the emulator; what each answer means."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.documill.client import BatchGone, DynamoClient
from handlers.documill.emulator import DocumillEmulator
from handlers.documill.submit import BatchInvalid, check_batch, submit_batch
from handlers.poller import PollRejected, RateLimited, VendorUnavailable
from tests.documill.conftest import settings

pytestmark = pytest.mark.anyio


def tasks(n: int) -> list[dict[str, Any]]:
    return [{"params": {"id": f"r{i}"}} for i in range(n)]


def test_every_problem_is_named_by_task_and_key() -> None:
    data = {
        "tasks": [
            {"params": {"id": "a"}},
            {"params": {}},
            {"params": {"id": "c"}, "partParams": [{"partName": "nope", "paramName": "x"}]},
            {"params": {"id": "d"}, "partParams": [{"partName": "extra"}]},
            "not a task",
        ],
        "integration": "Salesforce",
    }
    problems = check_batch(data, has_template_file=False, parts={"extra": {}, "unused": {}})
    assert problems == [
        "template: missing (a template id, or a template file to embed)",
        "integration: must be an object (type, sessionID, serverURL)",
        "tasks[1].params.id: missing (the record the document is for)",
        "tasks[2].partParams[0].partName: 'nope' names no part (parts given: extra, unused)",
        "tasks[3].partParams[0].paramName: missing",
        "tasks[4]: must be an object with params",
        "parts: part 'unused' is named by no task's partParams",
    ]


@pytest.mark.parametrize(
    ("data", "file", "problem"),
    [
        ({"template": "t", "tasks": []}, False, "tasks: 0 tasks; a batch has 1 to 1000"),
        (
            {"template": "t", "tasks": tasks(1001)},
            False,
            "tasks: 1001 tasks; a batch has 1 to 1000",
        ),
        ({"template": "t"}, False, "tasks: missing (a list of 1 to 1000 tasks)"),
        ({"template": "t", "tasks": tasks(1)}, True, "template: give a template id or a template"),
        ({"template": "t", "tasks": [{"params": {"id": [1]}}]}, False, "tasks[0].params.id: must"),
    ],
)
def test_batch_shape(data: dict[str, Any], file: bool, problem: str) -> None:
    problems = check_batch(data, has_template_file=file, parts={})
    assert len(problems) == 1 and problems[0].startswith(problem), problems


async def test_nothing_is_sent_for_an_invalid_batch(dynamo: tuple[DocumillEmulator, str]) -> None:
    emu, url = dynamo
    client = DynamoClient(settings(url))
    try:
        with pytest.raises(BatchInvalid, match=r"tasks\[0\]\.params\.id: missing"):
            await submit_batch(client, {"template": "t", "tasks": [{"params": {}}]})
    finally:
        await client.aclose()
    assert emu.calls == {} and client.calls == 0


async def test_json_and_multipart_batches(dynamo: tuple[DocumillEmulator, str]) -> None:
    emu, url = dynamo
    client = DynamoClient(settings(url))
    try:
        plain = await submit_batch(client, {"template": "t", "tasks": tasks(3)})
        assert list(plain.tasks.values()) == ["r0", "r1", "r2"]
        data = {
            "tasks": [
                {
                    "params": {"id": "a"},
                    "partParams": [{"partName": "acct", "paramName": "account"}],
                },
                {"params": {"id": "b"}},
            ],
            "integration": {"type": "Salesforce", "sessionID": "s", "serverURL": "x.example"},
        }
        parts = {"acct": {"name": "Acme", "nested": {"n": 1}}}
        multi = await submit_batch(client, data, template=("t.dap", b"PK\x03\x04"), parts=parts)
    finally:
        await client.aclose()
    posted = emu.batches[multi.batch_id]
    assert posted.multipart and not emu.batches[plain.batch_id].multipart
    assert posted.tasks[0].params == {"id": "a", "account": parts["acct"]}
    assert posted.tasks[1].params == {"id": "b"}
    assert multi.answer["licenseUsage"] == 2


async def test_what_answers_mean(dynamo: tuple[DocumillEmulator, str]) -> None:
    emu, url = dynamo
    wrong = DynamoClient(settings(url, api_key="not-the-key"))
    client = DynamoClient(settings(url))
    try:
        with pytest.raises(PollRejected, match="HTTP 401") as refused:
            await wrong.batch("x")
        assert "not-the-key" not in str(refused.value)
        emu.set_faults(rate_limit=1, retry_after=7)
        with pytest.raises(RateLimited) as limited:
            await client.batch("x")
        assert limited.value.retry_after == 7
        emu.set_faults(fail_5xx=1)
        with pytest.raises(VendorUnavailable, match="HTTP 503"):
            await client.batch("x")
        with pytest.raises(BatchGone, match="24 hours"):
            await client.batch("no-such-batch")
        with pytest.raises(PollRejected, match=r"HTTP 400 .*template missing"):
            await client.post_batch({"tasks": tasks(1)})
    finally:
        await wrong.aclose()
        await client.aclose()


def test_the_api_key_is_never_shown() -> None:
    shown = settings("http://127.0.0.1:1", api_key="super-secret-key")
    assert "super-secret-key" not in repr(shown) and "super-secret-key" not in str(
        shown.model_dump()
    )
