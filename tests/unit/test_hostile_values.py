"""What can never be written is refused for good: deep JSON, over-long names, links, data errors.

Each case is a failure that used to be retried for a day; each must be permanent, naming what
to fix, and leave nothing written outside the sink's root.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from handlers.errors import EventNotWritable, PermanentSinkError, RetryableSinkError
from handlers.files import IncomingFile
from handlers.json_depth import DEFAULT_MAX_JSON_DEPTH, json_too_deep
from handlers.sinks.local import LocalSink, LocalSinkConfig
from handlers.sinks.local_fs import LinkRefused
from handlers.sinks.s3 import KEY_MAX_BYTES, S3Sink, S3SinkConfig
from handlers.testing import make_event
from receiver.failures import never_succeeds

pytestmark = pytest.mark.anyio


def nested(depth: int, *, kind: str = "list") -> bytes:
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize(("depth", "too_deep"), [(1, False), (64, False), (65, True), (1023, True)])
def test_json_depth_is_judged_from_the_bytes(kind: str, depth: int, too_deep: bool) -> None:
    assert json_too_deep(nested(depth, kind=kind), DEFAULT_MAX_JSON_DEPTH) is too_deep


def test_brackets_inside_strings_and_wide_documents_do_not_count() -> None:
    text = orjson.dumps({"a": "[" * 500 + '\\"{' * 100, "b": [[1]] * 10_000})
    assert not json_too_deep(text, 3)
    assert json_too_deep(orjson.dumps({"a": [[[[1]]]]}), 4)
    assert not json_too_deep(orjson.dumps({"a": [[[1]]]}), 4)
    # A chain without a run of opening brackets: [1,[1,[1,...
    assert json_too_deep(b"[1," * 65 + b"1" + b"]" * 65, 64)
    assert not json_too_deep(b"[1," * 64 + b"1" + b"]" * 64, 64)
    assert not json_too_deep(b"]]][[[" * 100, 64), "unbalanced: left for the parser"


def deep_payload(depth: int) -> dict[str, object]:
    payload: dict[str, object] = {}
    inner = payload
    for _ in range(depth):
        child: dict[str, object] = {}
        inner["a"] = child
        inner = child
    return payload


def test_an_event_too_deep_to_serialize_is_permanent() -> None:
    event = make_event(payload=deep_payload(300))
    with pytest.raises(EventNotWritable) as caught:
        event.to_json()
    assert caught.value.retryable is False
    assert caught.value.code == "not_serializable"
    assert "Maximum serialization depth exceeded" in str(caught.value)
    assert event.event_id in str(caught.value)


def test_errors_that_never_succeed_are_found_through_wrappers() -> None:
    assert never_succeeds(RecursionError())
    assert never_succeeds(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert not never_succeeds(OSError(errno.ENOSPC, "No space left on device"))
    assert not never_succeeds(RetryableSinkError("timeout"))
    with pytest.raises(RetryableSinkError) as wrapped:
        _wrap_serialization_error()
    assert never_succeeds(wrapped.value)
    with pytest.raises(RetryableSinkError) as suppressed:
        _wrap_suppressed()
    assert not never_succeeds(suppressed.value), "a suppressed context is the raiser's choice"


def _wrap_serialization_error() -> None:
    try:
        orjson.dumps({1j})
    except TypeError as exc:
        raise RetryableSinkError("a plugin that retries everything") from exc


def _wrap_suppressed() -> None:
    try:
        raise OSError(errno.ELOOP, "Too many levels of symbolic links")
    except OSError:
        raise RetryableSinkError("wrapped without from") from None


def local(root: Path, template: str | None = None) -> LocalSink:
    options: dict[str, object] = {"root": root}
    if template:
        options["path_template"] = template
    return LocalSink(LocalSinkConfig.model_validate(options))


async def test_a_field_too_long_for_a_file_name_is_permanent_and_named(tmp_path: Path) -> None:
    sink = local(tmp_path / "out")
    with pytest.raises(PermanentSinkError) as caught:
        await sink.deliver(make_event(task_id="t" * 300))
    message = str(caught.value)
    assert "event field task_id is too long (300 bytes)" in message
    assert "at most 255" in message
    with pytest.raises(PermanentSinkError, match="event field display_name is too long"):
        await local(tmp_path / "out", "{display_name}-{event_id}.json").deliver(
            make_event(display_name="ä" * 100)  # 200 bytes of UTF-8, plus the id: over 200
        )
    assert not any((tmp_path / "out").rglob("*.json"))
    # Just under the caps still works: 255 bytes in a folder name.
    await sink.deliver(make_event(task_id="t" * 255))
    assert len(list((tmp_path / "out").rglob("*.json"))) == 1


async def test_a_name_the_file_system_refuses_as_too_long_is_permanent(tmp_path: Path) -> None:
    # A file system with shorter names than NAME_MAX (eCryptfs: 143) says so only at the write.
    sink = local(tmp_path / "out")
    original = os.open

    def short_names(path: object, *args: object, **kwargs: object) -> int:
        if isinstance(path, str) and len(path) > 40:
            raise OSError(errno.ENAMETOOLONG, "File name too long")
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "open", short_names)
        with pytest.raises(PermanentSinkError, match="too long for the file system"):
            await sink.deliver(make_event())


def s3(template: str) -> S3Sink:
    config = S3SinkConfig.model_validate({"bucket": "bucket", "key_template": template})
    return S3Sink(config)


def test_an_s3_key_over_the_limit_is_permanent_and_names_the_field() -> None:
    sink = s3("{vendor}/{task_id}/{event_id}.json")
    with pytest.raises(PermanentSinkError, match=r"event field task_id is too long \(1000 bytes\)"):
        sink.key_for(make_event(task_id="t" * 1000))
    assert sink.key_for(make_event(task_id="t" * 800))
    assert KEY_MAX_BYTES < 1024


def entries(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(folder.rglob(pattern))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


async def test_a_link_to_a_folder_under_the_root_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "out"
    (root / "smartdocumentor").mkdir(parents=True)
    (root / "smartdocumentor" / "7").symlink_to(outside)
    with pytest.raises(LinkRefused) as caught:
        await local(root).deliver(make_event(workspace_id="7"))
    assert caught.value.retryable is False
    assert f"{root}/smartdocumentor/7 is a symbolic link" in str(caught.value)
    assert entries(outside) == []


async def test_a_link_at_the_first_level_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "smartdocumentor").symlink_to(outside)
    with pytest.raises(LinkRefused, match="smartdocumentor is a symbolic link"):
        await local(root).deliver(make_event())
    assert entries(outside) == []


async def test_a_link_in_place_of_the_file_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "out"
    sink = local(root)
    event = make_event()
    target = sink.path_for(event)
    target.parent.mkdir(parents=True)
    target.symlink_to(outside / "stolen.json")
    with pytest.raises(LinkRefused):
        await sink.deliver(event)
    assert entries(outside) == []


async def test_a_root_that_is_itself_a_link_is_the_operators_choice(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "out"
    root.symlink_to(outside)
    await local(root).deliver(make_event())
    assert len(entries(outside, "*.json")) == 1


async def _chunks() -> AsyncIterator[bytes]:
    yield b"%PDF-1.7 data"


async def test_files_are_not_written_through_links_either(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "out"
    (root / "smartdocumentor").mkdir(parents=True)
    (root / "smartdocumentor" / "7").symlink_to(outside)
    incoming = IncomingFile("exported", _chunks(), filename="a.pdf")
    with pytest.raises(LinkRefused):
        await local(root).deliver_file(make_event(workspace_id="7"), incoming)
    assert entries(outside) == []
