"""The JSON-lines sink against hookdock's contract for every sink, plus its own behaviour."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hookdock_example_sink import JsonlSink, JsonlSinkConfig
from pydantic import ValidationError

from handlers import Event
from handlers.testing import SinkContract, make_event


def ids_in(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.append(json.loads(line)["event_id"])
        except ValueError:
            continue
    return ids


class TestJsonlSinkContract(SinkContract):
    @pytest.fixture
    async def sink(self, tmp_path: Path) -> AsyncIterator[JsonlSink]:
        sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out" / "events.jsonl"))
        yield sink
        await sink.aclose()

    async def copies(self, sink: JsonlSink, event: Event) -> int:
        return ids_in(sink.path).count(event.event_id)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="pth"):
        JsonlSinkConfig.model_validate({"path": "x.jsonl", "pth": "y"})


def test_relative_path_starts_at_the_base_dir(tmp_path: Path) -> None:
    config = JsonlSinkConfig.model_validate(
        {"path": "events.jsonl"}, context={"base_dir": tmp_path}
    )
    assert config.path == tmp_path / "events.jsonl"


@pytest.mark.anyio
async def test_a_new_instance_remembers_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = make_event()
    await JsonlSink(JsonlSinkConfig(path=path)).deliver(event)
    await JsonlSink(JsonlSinkConfig(path=path)).deliver(event)
    assert ids_in(path) == [event.event_id]


@pytest.mark.anyio
async def test_a_torn_last_line_is_skipped_and_the_event_written_again(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = make_event()
    whole = event.model_dump_json()
    path.write_text(whole[: len(whole) // 2], encoding="utf-8")  # a crash mid-write
    await JsonlSink(JsonlSinkConfig(path=path)).deliver(event)
    assert ids_in(path) == [event.event_id]
    assert path.read_text(encoding="utf-8").endswith(whole + "\n")


@pytest.mark.anyio
async def test_check_names_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "file" / "events.jsonl"))
    problems = await sink.check()
    assert len(problems) == 1 and "cannot be created" in problems[0]
