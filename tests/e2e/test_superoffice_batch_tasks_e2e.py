"""SuperOffice batch tasks end to end: the emulator as a real server, a real ``hookdock serve``.

Three batch tasks are started with ``hookdock superoffice batch-task submit`` (Basic auth and an
``SO-AppToken``, both from the environment): one succeeds, one fails, one stops moving at 40 %.
A fourth, started by someone else, is watched with ``batch-task watch ID`` and ends in
``SucceededManualCleanup``.  Each ending is one event carrying State, Result, Response,
FileName and the progress; the stalled one is one ``batch_task.stalled`` event, a warning in
the log and ``stalled`` in ``hookdock status``, and it is still watched.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.emulation import serve_in_thread
from handlers.superoffice.emulator import EmulatorSettings, SuperOfficeEmulator
from tests.conftest import make_config, run_cli, run_hookdock, wait_until

pytestmark = pytest.mark.e2e

POLLER = "so-tasks"
PASSWORD = "so-password-e2e-4821"
APP_TOKEN = "app-token-e2e-77"
ENV = {"SO_PASSWORD": PASSWORD, "SO_APP_TOKEN": APP_TOKEN}


@pytest.fixture
def superoffice() -> Iterator[tuple[SuperOfficeEmulator, str]]:
    emu = SuperOfficeEmulator(
        EmulatorSettings(password=PASSWORD, app_token=APP_TOKEN, step_seconds=0.1)
    )
    with serve_in_thread(emu.app, "superoffice") as url:
        yield emu, url


def events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in root.rglob("*.json")]


def by_task(found: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for event in found:
        out.setdefault(event["task_id"], Counter())[event["kind"]] += 1
    return out


def test_batch_tasks_are_watched_to_success_failure_and_stall(
    tmp_path: Path, superoffice: tuple[SuperOfficeEmulator, str]
) -> None:
    emu, api_url = superoffice
    poller = {
        "name": POLLER,
        "type": "superoffice.batch_tasks",
        "interval_seconds": 0.3,
        "jitter": 0,
        "max_backoff_seconds": 1,
        "sinks": ["exports"],
        "settings": {
            "api": {
                "base_url": api_url,
                "auth": {"type": "basic", "username": "emulator", "password": "${SO_PASSWORD}"},
                "app_token": "${SO_APP_TOKEN}",
                "allow_networks": ["127.0.0.1/32"],
            },
            "stalled_seconds": 1.5,
        },
    }
    config = make_config(tmp_path, pollers=[poller])
    exports = tmp_path / "exports"
    with run_hookdock(tmp_path / "run", config, env=ENV) as server:
        ids = {}
        for name in ("Export contacts", "fail: export sales", "stall: export projects"):
            done = run_cli(
                "superoffice", "batch-task", "submit", "--name", name,
                config=server.config_path, env=ENV,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            ids[name] = str(json.loads(done.stdout)["batch_task_id"])
        # Started elsewhere (here: straight at the emulator), then watched.
        basic = base64.b64encode(f"emulator:{PASSWORD}".encode()).decode()
        other = httpx.post(
            f"{api_url}/api/v1/BatchTask",
            json={"Name": "manual cleanup export"},
            headers={"authorization": f"Basic {basic}", "so-apptoken": APP_TOKEN},
        )
        assert other.status_code == 200 and other.headers["content-type"].startswith(
            "application/xml"
        )
        manual = other.text.split(">", 1)[1].split("<", 1)[0]
        done = run_cli(
            "superoffice", "batch-task", "watch", manual, config=server.config_path, env=ENV
        )
        assert done.returncode == 0, done.stderr

        ok, failed, stalled = ids.values()

        def status() -> dict[str, Any]:
            out: dict[str, Any] = json.loads(run_cli("status", config=server.config_path).stdout)
            row: dict[str, Any] = out["pollers"][POLLER]
            return row

        def settled() -> bool:
            seen = by_task(events(exports))
            return (
                seen.get(ok, Counter())["batch_task.succeeded"] == 1
                and seen.get(manual, Counter())["batch_task.succeeded"] == 1
                and seen.get(failed, Counter())["batch_task.failed"] == 1
                and seen.get(stalled, Counter())["batch_task.stalled"] == 1
            )

        wait_until(settled, 30, 0.2, server.describe)
        found = {(e["task_id"], e["kind"]): e["payload"] for e in events(exports)}
        success = found[(ok, "batch_task.succeeded")]
        assert (success["State"], success["Result"], success["ProgressPercent"]) == (4, "OK", 100)
        assert success["FileName"] == f"export-{ok}.xlsx"
        assert found[(manual, "batch_task.succeeded")]["State"] == 6
        failure = found[(failed, "batch_task.failed")]
        assert failure["State"] == 5 and "no longer exists" in failure["Response"]
        stall = found[(stalled, "batch_task.stalled")]
        assert (stall["State"], stall["ProgressPercent"]) == (3, 40)
        assert stall["ProgressDescription"] == "Exporting rows"

        # Still watched, shown as stalled, and reported once, however many polls go by.
        polls = status()["polls"]
        wait_until(lambda: status()["polls"] >= polls + 3, 20, 0.3, server.describe)
        progress = status()["progress"]
        assert list(progress) == [stalled] and progress[stalled]["stalled"] is True
        assert progress[stalled]["percent"] == 40
        (warning,) = status()["warnings"]
        assert warning.startswith(f"batch task {stalled}: no progress since ")
        assert by_task(events(exports))[stalled]["batch_task.stalled"] == 1
        assert f"superoffice batch task {stalled}: stalled" in server.stderr_text()
        assert sum(emu.calls.values()) > 0
        log = server.stderr_text() + server.stdout_text()
        assert PASSWORD not in log and APP_TOKEN not in log
