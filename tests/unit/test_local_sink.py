"""The local folder sink on real files."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from handlers.errors import PermanentSinkError, RetryableSinkError
from handlers.event import Event, FileRef
from handlers.sinks.local import LocalSink, LocalSinkConfig

pytestmark = pytest.mark.anyio

SAS = "https://x.blob.core.windows.net/c/a.pdf?sv=2022&se=2026-12-01T00%3A00%3A00Z&sig=SeCrEt"


def event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "event_id": "01ABC-0",
        "delivery_id": "01ABC",
        "vendor": "smartdocumentor",
        "kind": "text_document",
        "route": "r",
        "received_at": datetime(2026, 11, 22, tzinfo=UTC),
        "task_id": "t1",
        "workspace_id": "7",
        "display_name": "Fatura nº 1.pdf",
        "files": (FileRef(role="original", url=SAS),),
        "payload": {"taskId": "t1", "originalFileUrl": SAS},
    }
    fields.update(overrides)
    return Event.model_validate(fields)


def sink(root: Path, **options: object) -> LocalSink:
    return LocalSink(LocalSinkConfig.model_validate({"root": root, **options}))


async def test_writes_event_json_under_the_default_template(tmp_path: Path) -> None:
    s = sink(tmp_path)
    await s.deliver(event())
    target = tmp_path / "smartdocumentor/7/t1/text_document-01ABC-0.json"
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["event_id"] == "01ABC-0"
    assert data["payload"] == {"taskId": "t1", "originalFileUrl": SAS}
    assert data["display_name"] == "Fatura nº 1.pdf"
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no temp files left"


async def test_delivering_again_is_a_no_op(tmp_path: Path) -> None:
    s = sink(tmp_path)
    await s.deliver(event())
    target = s.path_for(event())
    target.write_text("sentinel")
    await s.deliver(event())
    assert target.read_text() == "sentinel"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", ".."),
        ("task_id", "../../etc"),
        ("workspace_id", "a/b"),
        ("workspace_id", "a\\b"),
        ("task_id", "nul\x00"),
        ("task_id", ""),
    ],
)
async def test_values_that_would_leave_the_root_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    s = sink(tmp_path / "root")
    with pytest.raises(PermanentSinkError, match=field):
        await s.deliver(event(**{field: value}))
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("*.json"))


async def test_missing_values_render_as_none(tmp_path: Path) -> None:
    s = sink(tmp_path, path_template="{batch_id}/{event_id}.json")
    await s.deliver(event())
    assert (tmp_path / "none/01ABC-0.json").is_file()


async def test_unwritable_root_is_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    s = sink(blocker)
    with pytest.raises(RetryableSinkError, match="cannot write"):
        await s.deliver(event())
    assert await s.check() != []


async def test_check_passes_on_a_writable_root(tmp_path: Path) -> None:
    assert await sink(tmp_path / "new").check() == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{task_id}.json", "must contain {event_id}"),
        ("{nope}/{event_id}.json", "unknown field(s) nope"),
        ("/abs/{event_id}.json", "relative path"),
        ("../{event_id}.json", "relative path"),
        ("{event_id", "not a valid template"),
    ],
)
def test_bad_templates_fail_at_load(template: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        LocalSinkConfig.model_validate({"root": "x", "path_template": template})
    assert message in str(info.value)


def test_relative_root_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    config = LocalSinkConfig.model_validate({"root": "exports"}, context={"base_dir": tmp_path})
    assert config.root == tmp_path / "exports"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValidationError, match="rooot"):
        LocalSinkConfig.model_validate({"root": "x", "rooot": "y"})


async def test_a_killed_writers_temp_file_is_taken_over(tmp_path: Path) -> None:
    s = sink(tmp_path)
    target = s.path_for(event())
    target.parent.mkdir(parents=True)
    orphan = target.with_name(f".{target.name}.tmp")
    orphan.write_bytes(b"half a fi")
    await s.deliver(event())
    assert json.loads(target.read_text())["event_id"] == "01ABC-0"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


async def test_events_delivered_at_once_share_their_folder_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _count_fsyncs(monkeypatch)
    s = sink(tmp_path, path_template="{vendor}/{kind}-{event_id}.json")
    events = [event(event_id=f"01ABC-{i}") for i in range(20)]
    await asyncio.gather(*(s.deliver(e) for e in events))
    folder = tmp_path / "smartdocumentor"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"text_document-01ABC-{i}.json" for i in range(20)
    )
    # Each file's data, then its folder once and the root (which got the new folder) once.
    assert len(synced) == 20 + 2


async def test_without_fsync_nothing_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _count_fsyncs(monkeypatch)
    s = sink(tmp_path, fsync=False)
    await asyncio.gather(*(s.deliver(event(event_id=f"01ABC-{i}")) for i in range(5)))
    assert len(list((tmp_path / "smartdocumentor/7/t1").iterdir())) == 5
    assert synced == []


async def test_a_file_that_fails_in_a_batch_fails_alone(tmp_path: Path) -> None:
    s = sink(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "smartdocumentor" / "7").mkdir(parents=True)
    (tmp_path / "smartdocumentor" / "7" / "linked").symlink_to(outside)
    good = [event(event_id=f"01ABC-{i}", task_id=f"t{i}") for i in range(3)]
    bad = event(event_id="01ABC-9", task_id="linked")
    results = await asyncio.gather(*(s.deliver(e) for e in [*good, bad]), return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], PermanentSinkError)
    assert "symbolic link" in str(results[3])
    assert list(outside.iterdir()) == []
    for e in good:
        assert s.path_for(e).is_file()
