"""SuperOffice batch-task watches under SIGKILL: the server dies mid-poll, twice, then runs on.

Five batch tasks are started once with ``hookdock superoffice batch-task submit`` (one of them
fails).  SuperOffice answers slowly, so a poll spans several calls; the server is killed with
SIGKILL after a seeded number of them, twice, then a last server runs until every task ended.
No task is started again, each ending is one event, none is missing.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from handlers.emulation import serve_in_thread
from handlers.superoffice.emulator import EmulatorSettings, SuperOfficeEmulator
from tests.conftest import make_config, run_cli, run_hookdock, wait_until

pytestmark = [pytest.mark.crash, pytest.mark.e2e, pytest.mark.slow]

SEED = 1617
NAMES = [f"export {n}" for n in range(4)] + ["fail 1"]


def killable(emu: SuperOfficeEmulator, target: int, done: Callable[[], bool]) -> bool:
    return sum(emu.calls.values()) >= target or done()


def test_batch_task_watches_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    emu = SuperOfficeEmulator(EmulatorSettings(step_seconds=1.5))
    with serve_in_thread(emu.app, "superoffice") as api_url:
        poller = {
            "name": "so",
            "type": "superoffice.batch_tasks",
            "interval_seconds": 0.2,
            "jitter": 0,
            "max_backoff_seconds": 1,
            "sinks": ["exports"],
            "settings": {
                "api": {
                    "base_url": api_url,
                    "auth": {"type": "bearer", "token": "emulator-token"},
                    "allow_networks": ["127.0.0.1/32"],
                }
            },
        }
        config = make_config(
            tmp_path, pollers=[poller], cluster={"heartbeat_seconds": 0.25, "stale_seconds": 1.0}
        )
        exports = tmp_path / "exports"
        emu.set_faults(slow_seconds=0.05)

        def ended() -> dict[str, dict[str, set[str]]]:
            out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
            for path in exports.rglob("*.json"):
                event: dict[str, Any] = json.loads(path.read_bytes())
                out[event["task_id"]][event["kind"]].add(event["event_id"])
            return out

        def done_all() -> bool:
            kinds = ended()
            return sum(
                1 for k in kinds.values() if "batch_task.succeeded" in k or "batch_task.failed" in k
            ) == len(NAMES)

        for round_ in range(2):
            with run_hookdock(tmp_path / "run", config) as server:
                if round_ == 0:
                    for name in NAMES:
                        done = run_cli(
                            "superoffice", "batch-task", "submit", "--name", name,
                            config=server.config_path,
                        )  # fmt: skip
                        assert done.returncode == 0, done.stderr
                target = sum(emu.calls.values()) + rng.randint(2, 12)
                # The kill comes mid-poll, unless every task ended first.
                wait_until(partial(killable, emu, target, done_all), 30, 0.01, server.describe)
                assert server.proc is not None
                server.proc.kill()
        emu.set_faults(slow_seconds=0)
        with run_hookdock(tmp_path / "run", config) as server:
            wait_until(done_all, 60, 0.2, server.describe)
    assert len(emu.tasks) == len(NAMES)
    results = ended()
    assert set(results) == {str(t) for t in emu.tasks}
    for task_id, kinds in results.items():
        course = emu.tasks[int(task_id)].course
        ending = "batch_task.failed" if course == "fail" else "batch_task.succeeded"
        assert {k: len(v) for k, v in kinds.items()} == {
            "batch_task.submitted": 1,
            ending: 1,
        }, (task_id, kinds)
