"""The SmartDocumentor emulator on a thread of its own, and a client pointed at it."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import pytest
from pydantic import SecretStr

from handlers.poller import Watched
from handlers.smartdocumentor.client import ApiSettings
from handlers.smartdocumentor.emulator import Emulator, EmulatorSettings, run_in_thread


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(EmulatorSettings())
    with run_in_thread(emu) as url:
        yield emu, url


def api_settings(url: str, **overrides: object) -> ApiSettings:
    options: dict[str, object] = {
        "base_url": url,
        "client_id": "emulator",
        "client_secret": SecretStr("emulator-secret"),
        "allow_networks": ("127.0.0.1/32",),
        "page_size": 10,
    }
    options.update(overrides)
    return ApiSettings.model_validate(options)


class FakeContext:
    """A ``PollContext`` over a set of subjects the "journal" holds."""

    def __init__(self, poller: str = "reconcile", subjects: Collection[str] = ()) -> None:
        self.poller = poller
        self.subjects = set(subjects)

    async def seen(self, subjects: Collection[str]) -> set[str]:
        return self.subjects & set(subjects)

    async def watches(self) -> list[Watched]:
        return []
