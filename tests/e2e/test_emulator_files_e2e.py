"""The emulator's "URL to file" exports through a real ``hookdock serve``: the file behind a
live SAS-style link is fetched and stored beside its event; one whose link has expired is
dead-lettered as ``link_expired`` (the emulator answers 403, as Azure does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.smartdocumentor.emulator import (
    Emulator,
    EmulatorSettings,
    call_in_loop,
    run_in_thread,
)
from tests.conftest import CREDS, make_config, route, run_cli, run_hookdock, wait_until

pytestmark = pytest.mark.e2e


def test_file_links_are_fetched_while_they_live(tmp_path: Path) -> None:
    emu = Emulator(EmulatorSettings(workspaces={3: "transcript_file"}))
    files_route = route(
        "sd-files",
        {"type": "url-token", "token": CREDS.url_token},
        source="smartdocumentor.transcript_file",
        files={"fetch": ["exported"], "allow_networks": ["127.0.0.1/32"]},
    )
    config = make_config(tmp_path, extra_routes=[files_route])
    exports = tmp_path / "exports"
    with run_in_thread(emu), run_hookdock(tmp_path / "run", config) as server:
        url = f"{server.url}/hooks/sd-files/{CREDS.url_token}"
        emu.settings = emu.settings.model_copy(update={"webhook_urls": {"transcript_file": url}})
        live = emu.add_task(workspace_id=3)
        assert call_in_loop(emu, emu.review_and_post()) == 1
        stored = wait_until(lambda: list(exports.rglob("*.exported.docx")), 20, 0.05)
        assert stored[0].read_bytes() == f"emulated document of task {live}\n".encode()
        event = json.loads(stored[0].with_name(stored[0].name.split(".")[0] + ".json").read_bytes())
        assert event["task_id"] == str(live) and event["files"][0]["size"] > 0

        emu.settings = emu.settings.model_copy(update={"file_link_seconds": -1})
        emu.add_task(workspace_id=3)
        assert call_in_loop(emu, emu.review_and_post()) == 1

        def expired() -> bool:
            done = run_cli("status", config=server.config_path, cwd=server.folder)
            failures: dict[str, int] = json.loads(done.stdout)["failures"]
            return failures.get("link_expired") == 1

        wait_until(expired, 20, 0.2, server.describe)
