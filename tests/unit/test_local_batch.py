"""The folder sink's batch writer on real files: batches that run side by side."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path, PurePosixPath

import pytest

from handlers.sinks import local_batch
from handlers.sinks.local_batch import BatchWriter
from handlers.sinks.local_fs import ParentDir

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


class HeldSync:
    """Holds the folder sync of the batch that writes ``held`` until ``release``; notes the
    batches whose folder sync is over."""

    def __init__(self, writer: BatchWriter, held: str, fail: OSError | None = None) -> None:
        self.release = threading.Event()
        self.reached = threading.Event()
        self.synced: list[list[str]] = []
        self.done = threading.Event()
        real = writer._sync_folders

        def sync(batch: local_batch._Batch) -> OSError | None:
            names = [f.target.name for f in batch.files]
            if held in names:
                self.reached.set()
                assert self.release.wait(DEADLINE)
                if fail is not None:
                    return fail
            result = real(batch)
            self.synced.append(names)
            self.done.set()
            return result

        writer._sync_folders = sync  # type: ignore[method-assign]


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, DEADLINE)


async def test_a_batch_is_answered_only_once_the_batch_beside_it_has_synced(
    tmp_path: Path,
) -> None:
    writer = BatchWriter(tmp_path, fsync=True)
    hold = HeldSync(writer, "first.json")
    try:
        # The first batch makes the folder and is held before it syncs the folder's entry.
        first = asyncio.ensure_future(writer.write(tmp_path / "a" / "first.json", b"1"))
        await wait_for(hold.reached)
        # The second batch finds the folder in place and syncs only what it wrote.
        second = asyncio.ensure_future(writer.write(tmp_path / "a" / "second.json", b"2"))
        await wait_for(hold.done)
        assert hold.synced == [["second.json"]]
        for _ in range(20):
            await asyncio.sleep(0)
        # Its file is written, but the folder it is in is not known to be durable yet.
        assert (tmp_path / "a" / "second.json").read_bytes() == b"2"
        assert not second.done()
        hold.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)
    finally:
        hold.release.set()
        writer.close()


async def test_a_failed_folder_sync_fails_the_batch_beside_it_too(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, fsync=True)
    hold = HeldSync(writer, "first.json", fail=OSError(5, "Input/output error"))
    try:
        first = asyncio.ensure_future(writer.write(tmp_path / "a" / "first.json", b"1"))
        await wait_for(hold.reached)
        second = asyncio.ensure_future(writer.write(tmp_path / "a" / "second.json", b"2"))
        await wait_for(hold.done)
        hold.release.set()
        results = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), DEADLINE
        )
        assert [type(r) for r in results] == [OSError, OSError]
        assert all("Input/output error" in str(r) for r in results)
    finally:
        hold.release.set()
        writer.close()


async def test_batches_run_side_by_side_up_to_the_writers(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, fsync=True)
    hold = HeldSync(writer, "held.json")
    try:
        held = asyncio.ensure_future(writer.write(tmp_path / "h" / "held.json", b"h"))
        await wait_for(hold.reached)
        # While one batch waits on the disk, the others write and sync theirs.
        others = [
            asyncio.ensure_future(writer.write(tmp_path / f"o{i}" / "x.json", b"o"))
            for i in range(3)
        ]
        await wait_for(hold.done)
        assert sorted(n for names in hold.synced for n in names) == ["x.json"] * 3
        hold.release.set()
        await asyncio.wait_for(asyncio.gather(held, *others), DEADLINE)
        assert all((tmp_path / f"o{i}" / "x.json").read_bytes() == b"o" for i in range(3))
    finally:
        hold.release.set()
        writer.close()


def test_a_folder_knows_whether_this_opening_made_it(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with ParentDir(tmp_path, PurePosixPath("old/f")) as old:
        assert not old.created
    made: dict[tuple[str, ...], int] = {}
    with ParentDir(tmp_path, PurePosixPath("new/deeper/f"), made=made) as new:
        assert new.created
        assert (tmp_path / "new" / "deeper").is_dir()
    with ParentDir(tmp_path, PurePosixPath("new/other/f"), made=made):
        pass
    # The root got "new", "new" got "deeper" and "other": each folder to sync once.
    assert sorted(made) == [(), ("new",)]
    for fd in made.values():
        os.close(fd)


def test_a_folder_opened_from_one_above_it_goes_on_from_there(tmp_path: Path) -> None:
    with (
        ParentDir(tmp_path, PurePosixPath("a/-")) as above,
        ParentDir(tmp_path, PurePosixPath("a/b/c/-"), above=above) as folder,
    ):
        assert folder.created
        assert folder.path() == tmp_path / "a/b/c/-"
        assert (tmp_path / "a" / "b" / "c").is_dir()
