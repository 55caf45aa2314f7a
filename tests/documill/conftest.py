"""The Documill emulator on a thread of its own, a client pointed at it, and a poll context."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from handlers.documill.client import DynamoSettings
from handlers.documill.emulator import DocumillEmulator, EmulatorSettings
from handlers.emulation import serve_in_thread
from handlers.poller import Watched


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def dynamo() -> Iterator[tuple[DocumillEmulator, str]]:
    emu = DocumillEmulator(EmulatorSettings(task_seconds=0.01))
    with serve_in_thread(emu.app, "documill") as url:
        emu.settings = emu.settings.model_copy(update={"public_url": url})
        yield emu, url


def settings(url: str, **overrides: Any) -> DynamoSettings:
    options: dict[str, Any] = {
        "base_url": url,
        "tenant_id": "emulator-tenant",
        "api_key": SecretStr("emulator-key"),
        "allow_networks": ("127.0.0.1/32",),
    }
    options.update(overrides)
    return DynamoSettings.model_validate(options)


class WatchContext:
    """A ``PollContext`` whose watches are a dict, closed as a poll result says."""

    def __init__(self, poller: str = "dynamo") -> None:
        self.poller = poller
        self.open: dict[str, dict[str, Any]] = {}

    async def seen(self, subjects: Collection[str]) -> set[str]:
        return set()

    async def watches(self) -> list[Watched]:
        now = datetime.now(UTC)
        return [Watched(key=k, detail=d, added_at=now) for k, d in self.open.items()]

    def close(self, keys: Collection[str]) -> None:
        for key in keys:
            self.open.pop(key, None)
