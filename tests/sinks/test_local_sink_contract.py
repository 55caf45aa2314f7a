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
