"""The local folder sink against the contract every sink must meet."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.event import Event
from handlers.sinks.local import LocalSink, LocalSinkConfig
from handlers.testing import SinkContract


class TestLocalSinkContract(SinkContract):
    @pytest.fixture
    async def sink(self, tmp_path: Path) -> LocalSink:
        return LocalSink(LocalSinkConfig(root=tmp_path / "out"))

    async def copies(self, sink: LocalSink, event: Event) -> int:
        return sum(1 for _ in sink.root.rglob(f"*{event.event_id}*.json"))

    async def stored_file(self, sink: LocalSink, event: Event, role: str) -> bytes | None:
        found = [p for p in sink.root.rglob(f"*{event.event_id}*.{role}*") if p.is_file()]
        assert len(found) <= 1, found
        return found[0].read_bytes() if found else None

    @pytest.mark.anyio
    async def test_leaves_no_temp_file_behind(self, sink: LocalSink) -> None:
        await self.test_a_download_that_fails_midway_stores_nothing(sink)
        await self.test_stores_a_file_byte_identical(sink)
        names = sorted(p.name for p in sink.root.rglob("*"))
        assert not [n for n in names if n.startswith(".")], names
